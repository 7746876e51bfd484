"""Classify: model code in many styles, written into tmp_path and read from its syntax tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.detect.classify import Classification, classify_model, symbol_kind
from pipeline.errors import MlopsError
from tests.cli import MLOPS


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def notebook(*cells: tuple[str, str]) -> str:
    """An nbformat 4 notebook; each cell is (cell_type, source)."""
    return json.dumps(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [
                {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True)}
                for kind, source in cells
            ],
        }
    )


def classify(tmp_path: Path, files: dict[str, str]) -> Classification:
    return classify_model(write(tmp_path / "model", files))


def symbols(result: Classification) -> set[str]:
    return {item.symbol for item in result.evidence}


# One model per style: (files, kind, framework, a symbol the evidence must hold).
STYLES = {
    "keras_sequential_tf_keras": (
        {
            "model.py": """
import tensorflow as tf

def build(num_classes):
    return tf.keras.Sequential([
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(num_classes),
    ])
"""
        },
        "cnn",
        "keras",
        "keras.layers.Conv2D",
    ),
    "keras_functional_aliased_layers": (
        {
            "model.py": """
import keras
from keras import layers as L

inputs = keras.Input((64, 64, 3))
x = L.SeparableConv2D(32, 3)(inputs)
x = L.GlobalAveragePooling2D()(x)
outputs = L.Dense(10, activation="softmax")(x)
model = keras.Model(inputs, outputs)
"""
        },
        "cnn",
        "keras",
        "keras.layers.SeparableConv2D",
    ),
    "keras_subclassed_dense": (
        {
            "model.py": """
from tensorflow import keras

class MLP(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(64, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))
"""
        },
        "ann",
        "keras",
        "keras.layers.Dense",
    ),
    "keras_applications_backbone": (
        {
            "model.py": """
from tensorflow.keras.applications import VGG16
from tensorflow.keras.applications.vgg16 import preprocess_input
from tensorflow.keras import layers, models

base = VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
head = models.Sequential([base, layers.Flatten(), layers.Dense(40)])
"""
        },
        "cnn",
        "keras",
        "keras.applications.VGG16",
    ),
    "keras_star_import_and_assigned_alias": (
        {
            "model.py": """
import tensorflow as tf
from tensorflow.keras.layers import *

L = tf.keras.layers
Conv = L.Conv1D
model = tf.keras.Sequential([Conv(8, 3), GlobalMaxPooling1D(), Dense(1)])
"""
        },
        "cnn",
        "keras",
        "keras.layers.Conv1D",
    ),
    "keras_partial_conv": (
        {
            "model.py": """
from functools import partial
from keras import layers

ConvBlock = partial(layers.Conv2D, padding="same")
"""
        },
        "cnn",
        "keras",
        "keras.layers.Conv2D",
    ),
    "keras_subclassed_conv_layer": (
        {
            "model.py": """
import keras

class WeightStandardizedConv(keras.layers.Conv2D):
    pass
"""
        },
        "cnn",
        "keras",
        "keras.layers.Conv2D",
    ),
    "pytorch_module_import_as": (
        {
            "net.py": """
import torch
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))
"""
        },
        "cnn",
        "pytorch",
        "torch.nn.Conv2d",
    ),
    "pytorch_from_torch_import_nn_mlp": (
        {
            "net.py": """
from torch import nn

def init_weights(module):
    # A common copy-pasted init: a type check is not a construction.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)

model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
model.apply(init_weights)
"""
        },
        "ann",
        "pytorch",
        "torch.nn.Linear",
    ),
    "pytorch_functional_conv": (
        {
            "net.py": """
import torch
import torch.nn.functional as F

def forward(x, weight):
    return F.relu(F.conv2d(x, weight))
"""
        },
        "cnn",
        "pytorch",
        "torch.nn.functional.conv2d",
    ),
    "torchvision_backbone": (
        {
            "net.py": """
import torchvision

backbone = torchvision.models.resnet18(weights=None)
"""
        },
        "cnn",
        "pytorch",
        "torchvision.models.resnet18",
    ),
    "sklearn_pipeline": (
        {
            "model.py": """
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import Ridge

model = Pipeline([("scale", StandardScaler()), ("reg", Ridge(alpha=1.0))])
"""
        },
        "regression",
        "scikit-learn",
        "sklearn.linear_model.Ridge",
    ),
    "sklearn_make_pipeline_svr": (
        {
            "model.py": """
import sklearn.svm as svm
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

model = make_pipeline(StandardScaler(), svm.SVR(C=2.0))
"""
        },
        "regression",
        "scikit-learn",
        "sklearn.svm.SVR",
    ),
    "sklearn_ensemble_regressor": (
        {
            "model.py": """
from sklearn import ensemble

model = ensemble.GradientBoostingRegressor(n_estimators=50)
"""
        },
        "regression",
        "scikit-learn",
        "sklearn.ensemble.GradientBoostingRegressor",
    ),
    "sklearn_mlp_regressor_is_ann": (
        {
            "model.py": """
from sklearn.neural_network import MLPRegressor

model = MLPRegressor(hidden_layer_sizes=(64, 32))
"""
        },
        "ann",
        "scikit-learn",
        "sklearn.neural_network.MLPRegressor",
    ),
    "statsmodels_array_api": (
        {
            "model.py": """
import statsmodels.api as sm

def fit(X, y):
    return sm.OLS(y, sm.add_constant(X)).fit()
"""
        },
        "regression",
        "statsmodels",
        "statsmodels.api.OLS",
    ),
    "statsmodels_formula_api": (
        {
            "model.py": """
import statsmodels.formula.api as smf

def fit(frame):
    return smf.ols("price ~ area + rooms", data=frame).fit()
"""
        },
        "regression",
        "statsmodels",
        "statsmodels.formula.api.ols",
    ),
    "statsmodels_glm_from_import": (
        {
            "model.py": """
from statsmodels.api import GLM, families

def fit(X, y):
    return GLM(y, X, family=families.Poisson()).fit()
"""
        },
        "regression",
        "statsmodels",
        "statsmodels.api.GLM",
    ),
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_model_styles(tmp_path: Path, style: str) -> None:
    files, kind, framework, symbol = STYLES[style]
    result = classify(tmp_path, files)
    assert (result.kind, result.framework, result.source) == (kind, framework, "code")
    assert symbol in symbols(result)
    assert result.evidence[0].kind == kind  # the deciding evidence comes first


def test_comments_strings_docstrings_and_unused_imports_are_not_evidence(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "model.py": '''
"""A CNN? No: we tried Conv2D and nn.Linear and a Dense head; Ridge won."""
import torch.nn
import tensorflow as tf
from keras.layers import Conv2D, Dense
from sklearn.linear_model import Ridge

# model = Conv2D(32, 3)  -- abandoned
LAYERS = ["Conv2D", "Dense"]  # string layer names are not layers
config = {"class_name": "Conv2D", "config": {"filters": 8}}
note = "keras.layers.Conv2D(32, 3)"


def build():
    """Builds a Ridge, not tf.keras.layers.Conv2D."""
    return Ridge(alpha=0.5)
'''
        },
    )
    assert (result.kind, result.framework) == ("regression", "scikit-learn")
    assert symbols(result) == {"sklearn.linear_model.Ridge"}
    assert [(e.file, e.line) for e in result.evidence] == [("model.py", 16)]


def test_string_layer_names_given_to_keras_are_not_evidence(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "model.py": """
import keras

conv = keras.layers.deserialize({"class_name": "Conv2D", "config": {"filters": 8}})
head = keras.layers.Dense(3)
"""
        },
    )
    assert result.kind == "ann"


def test_precedence_cnn_over_ann_over_regression(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "baseline.py": "from sklearn import linear_model\nlinear_model.LinearRegression()\n",
            "model.py": "import keras\nkeras.layers.Dense(10)\n",
        },
    )
    assert (result.kind, result.framework) == ("ann", "keras")
    assert [e.kind for e in result.evidence] == ["ann", "regression"]


def test_framework_is_the_majority_of_the_winning_kind(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "a.py": "from torch import nn\nnn.Conv2d(1, 1, 3)\n",
            "b.py": "from keras import layers\nlayers.Conv2D(1, 3)\nlayers.Conv2D(1, 3)\n",
        },
    )
    assert (result.kind, result.framework) == ("cnn", "keras")


def test_notebook_code_cells_with_magics(tmp_path: Path) -> None:
    nb = notebook(
        ("markdown", "# A dense network\nWe do **not** use Conv2D here, only Dense.\n"),
        ("code", "%matplotlib inline\n!pip install keras\nimport tensorflow as tf\n"),
        ("code", "%%bash\necho this is not python (\n"),
        ("code", "%%time\nfor _ in range(2):\n    %time x = 1\nmodel = tf.keras.Sequential()\n"),
        ("code", "model.add(tf.keras.layers.Dense(32))\nmodel.add(tf.keras.layers.Dense(1))\n"),
    )
    result = classify(tmp_path, {"train.ipynb": nb})
    assert (result.kind, result.framework) == ("ann", "keras")
    assert [(e.file, e.cell, e.line) for e in result.evidence] == [
        ("train.ipynb", 5, 1),
        ("train.ipynb", 5, 2),
    ]
    assert result.evidence[0].where() == "train.ipynb cell 5:1"


def test_code_split_across_files_and_subfolders(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "model.py": "from src.blocks import conv_block\n\nmodel = conv_block()\n",
            "src/__init__.py": "",
            "src/common.py": "from tensorflow import keras as K\n",
            "src/blocks.py": "from .common import K\n\n\ndef conv_block():\n    return K.layers.Conv3D(8, 3)\n",
        },
    )
    assert (result.kind, result.framework) == ("cnn", "keras")
    assert [(e.file, e.line, e.symbol) for e in result.evidence] == [("src/blocks.py", 5, "keras.layers.Conv3D")]


def test_relative_import_in_a_package_init(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "net/__init__.py": "from . import common\nfrom .common import nn\n",
            "net/common.py": "import torch.nn as nn\n",
            "model.py": "import net\nnet.nn.Linear(2, 1)\nnet.common.nn.Conv2d(1, 1, 3)\n",
        },
    )
    assert (result.kind, result.framework) == ("cnn", "pytorch")
    assert [(e.line, e.symbol) for e in result.evidence] == [
        (3, "torch.nn.Conv2d"),
        (2, "torch.nn.Linear"),
    ]


def test_name_imported_from_a_sibling_module(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "helpers.py": "from torch import nn as tnn\n",
            "model.py": "import helpers\nfrom helpers import tnn\na = tnn.Linear(3, 1)\nb = helpers.tnn.Linear(1, 1)\n",
        },
    )
    assert (result.kind, result.framework) == ("ann", "pytorch")
    assert [e.line for e in result.evidence] == [3, 4]


def test_environments_and_hidden_folders_are_skipped(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {
            "model.py": "from sklearn.linear_model import Lasso\nLasso()\n",
            ".venv/lib/keras_app.py": "import keras\nkeras.layers.Conv2D(1, 3)\n",
            "venv/broken.py": "def (:\n",
            ".ipynb_checkpoints/train-checkpoint.ipynb": "not json",
        },
    )
    assert (result.kind, result.framework) == ("regression", "scikit-learn")


def test_model_yaml_kind_overrides_the_code(tmp_path: Path) -> None:
    files = dict(STYLES["keras_sequential_tf_keras"][0])
    result = classify(tmp_path, {**files, "model.yaml": "name: m\nkind: ann\n"})
    assert (result.kind, result.framework, result.source) == ("ann", "keras", "model.yaml")
    assert "keras.layers.Conv2D" in symbols(result)  # the evidence is still shown


def test_model_yaml_kind_and_framework_skip_the_code(tmp_path: Path) -> None:
    result = classify(
        tmp_path,
        {"model.yaml": "kind: regression\nframework: sklearn\n", "odd.py": "print 'py2'\n"},
    )
    assert (result.kind, result.framework, result.source) == (
        "regression",
        "scikit-learn",
        "model.yaml",
    )
    assert result.evidence == ()


def test_model_yaml_framework_alone_keeps_the_code_kind(tmp_path: Path) -> None:
    files = dict(STYLES["pytorch_module_import_as"][0])
    result = classify(tmp_path, {**files, "model.yaml": "framework: torch\n"})
    assert (result.kind, result.framework, result.source) == ("cnn", "pytorch", "code")


def test_model_yaml_kind_without_any_model_code(tmp_path: Path) -> None:
    result = classify(tmp_path, {"model.yaml": "kind: cnn\n", "prepare.py": "import numpy\n"})
    assert (result.kind, result.framework, result.source) == ("cnn", None, "model.yaml")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("kind: transformer\n", r"model.yaml: kind 'transformer' is unknown; use one of cnn"),
        ("kind: cnn\nframework: jax\n", r"model.yaml: framework 'jax' is unknown; use one of"),
        ("kind: [cnn\n", r"model.yaml: line \d+ is not valid YAML"),
        ("- cnn\n", r"model.yaml must be a mapping"),
    ],
)
def test_bad_model_yaml(tmp_path: Path, manifest: str, message: str) -> None:
    with pytest.raises(MlopsError, match=message):
        classify(tmp_path, {"model.yaml": manifest, "model.py": "x = 1\n"})


def test_no_model_found(tmp_path: Path) -> None:
    with pytest.raises(MlopsError, match=r"no model found in .*model: none of its 2 Python files/notebooks") as error:
        classify(
            tmp_path,
            {
                "model.py": "import numpy as np\nimport keras  # unused\nprint(np.mean([1.0]))\n",
                "data.py": "def load():\n    return 'Conv2D Dense Ridge'\n",
            },
        )
    assert error.value.exit_code == 2


def test_empty_folder_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlopsError, match=r"no model found in .*empty: it holds no \.py file"):
        classify_model(tmp_path / "empty")
    with pytest.raises(MlopsError, match="missing: no such model folder"):
        classify_model(tmp_path / "missing")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(MlopsError, match=r"src/bad\.py:3: cannot parse Python"):
        classify(
            tmp_path,
            {"model.py": "import keras\n", "src/bad.py": "import keras\n\ndef build(:\n    pass\n"},
        )


def test_syntax_error_in_a_notebook_names_the_cell(tmp_path: Path) -> None:
    nb = notebook(("code", "import keras\n"), ("code", "x = 1\nmodel = keras.Sequential(\n"))
    with pytest.raises(MlopsError, match=r"nb\.ipynb cell 2:2: cannot parse Python"):
        classify(tmp_path, {"nb.ipynb": nb})


def test_broken_notebook_json(tmp_path: Path) -> None:
    with pytest.raises(MlopsError, match=r"nb\.ipynb: not a Jupyter notebook"):
        classify(tmp_path, {"nb.ipynb": "{not json"})


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("keras.layers.Conv2D", ("cnn", "keras")),
        ("keras.src.layers.convolutional.conv2d.Conv2D", ("cnn", "keras")),
        ("tensorflow.keras.layers.DepthwiseConv2D", ("cnn", "keras")),
        ("tensorflow.keras.layers.Conv2DTranspose", ("cnn", "keras")),
        ("keras.layers.Convolution2D", ("cnn", "keras")),
        ("keras.applications.ResNet50", ("cnn", "keras")),
        ("tensorflow.keras.applications.mobilenet_v2.MobileNetV2", ("cnn", "keras")),
        ("keras.applications.vgg16.preprocess_input", None),
        ("keras.layers.Dense", ("ann", "keras")),
        ("keras.Sequential", None),
        ("keras.layers.Flatten", None),
        ("torch.nn.Conv1d", ("cnn", "pytorch")),
        ("torch.nn.LazyConvTranspose3d", ("cnn", "pytorch")),
        ("torch.nn.Linear", ("ann", "pytorch")),
        ("torch.nn.functional.linear", ("ann", "pytorch")),
        ("torch.nn.Module", None),
        ("torchvision.models.vgg16", ("cnn", "pytorch")),
        ("torchvision.models.vit_b_16", None),
        ("sklearn.linear_model.LinearRegression", ("regression", "scikit-learn")),
        ("sklearn.linear_model.ElasticNetCV", ("regression", "scikit-learn")),
        ("sklearn.ensemble.RandomForestRegressor", ("regression", "scikit-learn")),
        ("sklearn.neural_network.MLPClassifier", ("ann", "scikit-learn")),
        ("sklearn.ensemble.RandomForestClassifier", None),
        ("sklearn.preprocessing.StandardScaler", None),
        ("statsmodels.api.WLS", ("regression", "statsmodels")),
        ("statsmodels.formula.api.glm", ("regression", "statsmodels")),
        ("statsmodels.api.add_constant", None),
        ("numpy.linalg.lstsq", None),
    ],
)
def test_symbol_kind(symbol: str, expected: tuple[str, str] | None) -> None:
    found = symbol_kind(symbol)
    assert (found[:2] if found else None) == expected


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    """Run ``mlops`` in-process through its real entry point; return (code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["mlops", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write(tmp_path / "m", STYLES["sklearn_pipeline"][0])
    code, out, _ = run_cli(monkeypatch, capsys, "classify", str(folder), "--json")
    assert code == 0
    assert json.loads(out) == {
        "kind": "regression",
        "framework": "scikit-learn",
        "source": "code",
        "evidence": [
            {
                "file": "model.py",
                "line": 6,
                "symbol": "sklearn.linear_model.Ridge",
                "kind": "regression",
                "framework": "scikit-learn",
                "cell": None,
            }
        ],
    }


def test_cli_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write(tmp_path / "m", STYLES["keras_functional_aliased_layers"][0])
    code, out, _ = run_cli(monkeypatch, capsys, "classify", str(folder))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "cnn (keras)"
    assert "model.py:6: keras.layers.SeparableConv2D -> cnn" in lines[1]


def test_cli_no_model_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write(tmp_path / "m", {"model.py": "import torch.nn\n"})
    code, out, err = run_cli(monkeypatch, capsys, "classify", str(folder), "--json")
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: no model found in {folder}:") and len(err.splitlines()) == 1


def test_console_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", STYLES["statsmodels_formula_api"][0])
    done = subprocess.run(
        [*MLOPS, "classify", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "regression"
