"""Every shipped model satisfies the plug-in contract: checked by mypy (``.ci/run``), not run.

A module matches a ``Protocol`` through its functions, so assigning a model's entry module to
a ``ModelModule`` makes mypy compare ``prepare``, ``train`` and ``evaluate`` with the contract.
A new model adds one line here.
"""

from models.diabetes_regression import model as diabetes_regression
from models.digits_mlp import model as digits_mlp
from models.face_vgg16 import model as face_vgg16
from pipeline.sdk import ModelModule

SHIPPED: list[ModelModule] = [diabetes_regression, digits_mlp, face_vgg16]
