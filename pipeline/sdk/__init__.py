"""The model SDK: the one package a model under ``models/`` imports.

A model exposes ``prepare``, ``train`` and ``evaluate`` (``ModelPlugin`` is the contract);
this package gives it what they receive and return, the split, the feature cache and
checkpoint files. Keras helpers (a dense head, a fast fit) are in ``pipeline.sdk.keras``.
"""

from pipeline.errors import MlopsError
from pipeline.sdk.checkpoints import DamagedCheckpoint, frame, load_good, unframe, write_atomic
from pipeline.sdk.contract import (
    Evaluation,
    ExportedModel,
    ModelModule,
    ModelPlugin,
    ReportFn,
    StudyContext,
    TrainResult,
    TrialContext,
    load_plugin,
)
from pipeline.sdk.feature_cache import FeatureCache, file_digest, fingerprint
from pipeline.sdk.splits import example_ids, split_fractions, three_way_split, with_example_ids

__all__ = [
    "DamagedCheckpoint",
    "Evaluation",
    "ExportedModel",
    "FeatureCache",
    "MlopsError",
    "ModelModule",
    "ModelPlugin",
    "ReportFn",
    "StudyContext",
    "TrainResult",
    "TrialContext",
    "example_ids",
    "file_digest",
    "fingerprint",
    "frame",
    "load_good",
    "load_plugin",
    "split_fractions",
    "three_way_split",
    "unframe",
    "with_example_ids",
    "write_atomic",
]
