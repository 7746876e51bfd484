"""A multilayer perceptron on scikit-learn's 8x8 handwritten digits (Keras 3 on TensorFlow).

The data ships inside scikit-learn (``load_digits``: 1797 images, 64 pixel intensities 0..16,
ten classes), so no download is needed. ``prepare`` splits it once per study, stratified per
digit; every trial builds a dense network whose first layer does the scaling, so the exported
model takes raw pixel intensities, and fits it with ``pipeline.sdk.keras.fastfit`` (per-epoch report for
pruning, ``latest.npz`` checkpoints for resuming a killed trial).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.sdk import (
    Evaluation,
    ExportedModel,
    MlopsError,
    StudyContext,
    TrainResult,
    TrialContext,
    example_ids,
    fingerprint,
    split_fractions,
    three_way_split,
    with_example_ids,
)
from pipeline.sdk.keras import dense_classifier, evaluate_classifier, train_new_classifier

SCALINGS = ("standard", "minmax", "none")
PIXEL_MAX = 16.0  # load_digits' intensities run 0..16
_DEFAULTS = {
    "n_layers": 2,
    "units": [128, 64],
    "dropout": 0.1,
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 40,
}


@dataclass
class DigitsData:
    """Per-split pixels and labels, and the options every trial shares.

    Attributes:
        features: split name -> raw pixel intensities, ``(n, 64)`` float32 in 0..16.
        labels: split name -> digit labels, ``(n,)`` int.
        names: class names in label order (``"0"`` .. ``"9"``).
        scaling: how the network's first layer scales pixels (one of ``SCALINGS``).
        patience: early-stopping patience in epochs; ``None`` never stops early.
        ids: split name -> each image's identity (``example_ids``; what the promotion gate compares).
    """

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    names: list[str]
    scaling: str
    patience: int | None
    ids: dict[str, np.ndarray] = field(default_factory=dict)


def split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of a train / validation / test split, stratified per digit, reproducible by seed."""
    return three_way_split(len(labels), val_fraction, test_fraction, seed, lambda index: labels[index])


def prepare(ctx: StudyContext) -> DigitsData:
    """Load the digits and split them, stratified per digit with the study's seed."""
    from sklearn.datasets import load_digits

    scaling = str(ctx.data.get("scaling", "standard"))
    if scaling not in SCALINGS:
        raise MlopsError(f"{ctx.manifest.path}: data.scaling {scaling!r} is unknown; use one of {', '.join(SCALINGS)}")
    val_fraction, test_fraction = split_fractions(ctx.data, ctx.manifest.path)
    bunch = load_digits()
    pixels = bunch.data.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    parts = split(labels, val_fraction, test_fraction, ctx.seed)
    ids = example_ids(pixels)
    ctx.facts.update(
        {
            "data_fingerprint": fingerprint(pixels, labels),
            "n_images": len(labels),
            "n_classes": 10,
            "n_train": len(parts["train"]),
            "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
        }
    )
    ctx.log(f"digits: {len(parts['train'])} train, {len(parts['val'])} validation, {len(parts['test'])} test images")
    patience = ctx.params.get("patience", 10)
    return DigitsData(
        features={name: pixels[index] for name, index in parts.items()},
        labels={name: labels[index] for name, index in parts.items()},
        names=[str(int(name)) for name in bunch.target_names],
        scaling=scaling,
        patience=None if patience is None else int(patience),
        ids={name: ids[index] for name, index in parts.items()},
    )


def build_mlp(data: DigitsData, params: dict[str, Any]) -> Any:
    """Scaling, then ``n_layers`` x (Dense, Dropout), then a 10-way softmax."""
    import keras

    train = data.features["train"]
    layers: list[Any] = [keras.Input((train.shape[1],), name="pixels")]
    if data.scaling == "standard":
        layers.append(keras.layers.Normalization(mean=train.mean(axis=0), variance=train.var(axis=0) + 1e-6))
    elif data.scaling == "minmax":
        layers.append(keras.layers.Rescaling(1.0 / PIXEL_MAX))
    return dense_classifier(layers, params, len(data.names), "digits_mlp")


def train(data: DigitsData, params: dict[str, Any], trial: TrialContext) -> TrainResult:
    """Fit one network; resumes at the epoch after the last one in ``trial.checkpoint_dir``."""
    params = {**_DEFAULTS, **params}
    build = lambda: build_mlp(data, params)  # noqa: E731  (built after the seed is set)
    return train_new_classifier(build, params, data.features, data.labels, trial, data.patience)


def evaluate(data: DigitsData, result: TrainResult) -> Evaluation:
    """Accuracy of the chosen network on the held-out test split (touched once, at the end)."""
    scored = evaluate_classifier(result.model, data.features["test"], data.labels["test"], data.names)
    return with_example_ids(scored, data.ids)


def export(data: DigitsData, result: TrainResult) -> ExportedModel:
    """The trained network itself: raw pixel intensities (0..16) in, class probabilities out."""
    return ExportedModel("keras", result.model, data.features["test"][:2], ["tensorflow-cpu==2.21.0", "keras==3.15.1"])
