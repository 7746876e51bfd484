"""Keras helpers for models: a searched dense head and a fit that runs one graph call per epoch."""

from pipeline.sdk.keras.augment import random_shift
from pipeline.sdk.keras.dense_head import (
    dense_classifier,
    dense_layers,
    evaluate_classifier,
    make_grouped_optimizer,
    make_optimizer,
    train_classifier,
    train_new_classifier,
)
from pipeline.sdk.keras.fastfit import FitOutcome, fit_classifier
from pipeline.sdk.keras.grouped_optimizer import GroupedOptimizer

__all__ = [
    "FitOutcome",
    "GroupedOptimizer",
    "dense_classifier",
    "dense_layers",
    "evaluate_classifier",
    "fit_classifier",
    "make_grouped_optimizer",
    "make_optimizer",
    "random_shift",
    "train_classifier",
    "train_new_classifier",
]
