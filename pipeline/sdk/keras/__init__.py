"""Keras helpers for models: a searched dense head and a fit that runs one graph call per epoch."""

from pipeline.sdk.keras.dense_head import (
    dense_classifier,
    dense_layers,
    evaluate_classifier,
    make_optimizer,
    train_classifier,
    train_new_classifier,
)
from pipeline.sdk.keras.fastfit import FitOutcome, fit_classifier

__all__ = [
    "FitOutcome",
    "dense_classifier",
    "dense_layers",
    "evaluate_classifier",
    "fit_classifier",
    "make_optimizer",
    "train_classifier",
    "train_new_classifier",
]
