"""A multilayer perceptron on scikit-learn's 8x8 handwritten digits (Keras 3 on TensorFlow).

The data ships inside scikit-learn (``load_digits``: 1797 images, 64 pixel intensities 0..16,
ten classes), so no download is needed. ``prepare`` splits it once per study, stratified per
digit; every trial builds a dense network whose first layer does the scaling, so the exported
model takes raw pixel intensities, and fits it with ``pipeline.fastfit`` (per-epoch report for
pruning, ``latest.npz`` checkpoints for resuming a killed trial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract import Evaluation, ExportedModel, StudyContext, TrainResult, TrialContext
from pipeline.dense_head import dense_layers, evaluate_classifier, make_optimizer
from pipeline.errors import MlopsError
from pipeline.fastfit import fit_classifier
from pipeline.feature_cache import fingerprint

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
    """

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    names: list[str]
    scaling: str
    patience: int | None


def split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of a train / validation / test split, stratified per digit, reproducible by seed."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _fractions(ctx: StudyContext) -> tuple[float, float]:
    """``data.val_fraction`` and ``data.test_fraction``, checked at the edge."""
    where = ctx.manifest.path
    values = []
    for key, default in (("val_fraction", 0.2), ("test_fraction", 0.2)):
        raw = ctx.data.get(key, default)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise MlopsError(f"{where}: data.{key} must be a number between 0 and 1, not {raw!r}") from None
        if not 0.0 < value < 1.0:
            raise MlopsError(f"{where}: data.{key} = {value} must lie strictly between 0 and 1")
        values.append(value)
    if values[0] + values[1] >= 0.9:
        raise MlopsError(
            f"{where}: data.val_fraction + data.test_fraction = {sum(values):g} leaves too little to train on"
        )
    return values[0], values[1]


def prepare(ctx: StudyContext) -> DigitsData:
    """Load the digits and split them, stratified per digit with the study's seed."""
    from sklearn.datasets import load_digits

    scaling = str(ctx.data.get("scaling", "standard"))
    if scaling not in SCALINGS:
        raise MlopsError(f"{ctx.manifest.path}: data.scaling {scaling!r} is unknown; use one of {', '.join(SCALINGS)}")
    val_fraction, test_fraction = _fractions(ctx)
    bunch = load_digits()
    pixels = bunch.data.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    parts = split(labels, val_fraction, test_fraction, ctx.seed)
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
    layers.extend(dense_layers(params))
    layers.append(keras.layers.Dense(len(data.names), activation="softmax"))
    return keras.Sequential(layers, name="digits_mlp")


def train(data: DigitsData, params: dict[str, Any], trial: TrialContext) -> TrainResult:
    """Fit one network; resumes at the epoch after the last one in ``trial.checkpoint_dir``."""
    import keras

    params = {**_DEFAULTS, **params}
    keras.utils.set_random_seed(trial.seed)
    model = build_mlp(data, params)
    outcome = fit_classifier(
        model,
        make_optimizer(params["optimizer"], float(params["learning_rate"])),
        (data.features["train"], data.labels["train"]),
        (data.features["val"], data.labels["val"]),
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        seed=trial.seed,
        checkpoint_dir=trial.checkpoint_dir,
        report=trial.report,
        patience=data.patience,
    )
    return TrainResult(outcome.best_value, model, outcome.history, n_val=len(data.labels["val"]))


def evaluate(data: DigitsData, result: TrainResult) -> Evaluation:
    """Accuracy of the chosen network on the held-out test split (touched once, at the end)."""
    return evaluate_classifier(result.model, data.features["test"], data.labels["test"], data.names)


def export(data: DigitsData, result: TrainResult) -> ExportedModel:
    """The trained network itself: raw pixel intensities (0..16) in, class probabilities out."""
    return ExportedModel("keras", result.model, data.features["test"][:2], ["tensorflow-cpu==2.21.0", "keras==3.15.1"])
