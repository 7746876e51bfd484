"""Building blocks for searched dense classifiers (the face head, the digits MLP).

A model's ``train`` turns the sampled parameters into layers and an optimizer with these,
and its ``evaluate`` scores a softmax classifier the same way, so every Keras model in
``models/`` reads the same search-space names (``n_layers``, ``units``, ``dropout``,
``activation``, ``optimizer``, ``learning_rate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.sdk.contract import Evaluation, TrainResult, TrialContext
from pipeline.sdk.keras.fastfit import fit_classifier
from pipeline.sdk.keras.grouped_optimizer import GroupedOptimizer

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


def dense_layers(params: dict[str, Any]) -> list[Any]:
    """``n_layers`` x (Dense(units_i, activation), Dropout(dropout)); none for ``n_layers`` 0 (a linear model).

    ``units`` is a list (one width per layer, ``per_layer: n_layers`` in the space) or one
    width for every layer.
    """
    import keras

    count = int(params["n_layers"])
    units = params["units"] if isinstance(params["units"], list) else [params["units"]] * count
    layers: list[Any] = []
    for width in units[:count]:
        layers.append(keras.layers.Dense(int(width), activation=params["activation"]))
        layers.append(keras.layers.Dropout(float(params["dropout"])))
    return layers


def dense_classifier(inputs: list[Any], params: dict[str, Any], n_classes: int, name: str) -> Any:
    """A ``keras.Sequential``: ``inputs`` (an ``Input`` and any scaling), ``dense_layers``, a softmax.

    Args:
        inputs: the first layers: ``keras.Input`` and the model's own preprocessing.
        params: the sampled parameters (``n_layers``, ``units``, ``activation``, ``dropout``).
        n_classes: the width of the softmax.
        name: the model's name.
    """
    import keras

    layers = [*inputs, *dense_layers(params), keras.layers.Dense(n_classes, activation="softmax")]
    return keras.Sequential(layers, name=name)


def make_optimizer(name: str, learning_rate: float) -> Any:
    """A Keras optimizer by name (``adam``, ``adamw``, ``rmsprop``, ``sgd`` with Nesterov momentum).

    Raises:
        ValueError: naming the unknown optimizer and the allowed ones.
    """
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    choices = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "rmsprop": keras.optimizers.RMSprop}
    if name not in choices:
        raise ValueError(f"optimizer {name!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
    return choices[name](learning_rate)


def make_grouped_optimizer(name: str, groups: Sequence[tuple[float, Sequence[Any]]]) -> GroupedOptimizer:
    """One ``make_optimizer(name, learning_rate)`` per ``(learning_rate, variables)`` group.

    For fine-tuning: the pretrained blocks' variables with a small rate, the head's with its own.

    Raises:
        ValueError: an unknown optimizer name, or a variable in two groups.
    """
    return GroupedOptimizer([(make_optimizer(name, float(rate)), variables) for rate, variables in groups])


def train_classifier(
    model: Any,
    params: dict[str, Any],
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    trial: TrialContext,
    patience: int | None,
) -> TrainResult:
    """Fit ``model`` on the ``train`` split with the trial's optimizer, batch size and epochs.

    Validation accuracy on ``val`` drives early stopping, pruning (``trial.report``) and the
    result; the fit resumes from ``trial.checkpoint_dir`` after a crash.
    """
    outcome = fit_classifier(
        model,
        make_optimizer(params["optimizer"], float(params["learning_rate"])),
        (features["train"], labels["train"]),
        (features["val"], labels["val"]),
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        seed=trial.seed,
        checkpoint_dir=trial.checkpoint_dir,
        report=trial.report,
        patience=patience,
        log=trial.log,
        checkpoint_seconds=trial.checkpoint_seconds,
    )
    return TrainResult(outcome.best_value, model, outcome.history, n_val=len(labels["val"]))


def train_new_classifier(
    build: Callable[[], Any],
    params: dict[str, Any],
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    trial: TrialContext,
    patience: int | None,
) -> TrainResult:
    """Seed Keras with the trial's seed, then ``build()`` the model and ``train_classifier`` it.

    The seed comes first so the initial weights, like the batches, follow from the trial's seed.
    """
    import keras

    keras.utils.set_random_seed(trial.seed)
    return train_classifier(build(), params, features, labels, trial, patience)


def evaluate_classifier(model: Any, features: np.ndarray, labels: np.ndarray, names: list[str]) -> Evaluation:
    """Accuracy of a softmax classifier on one split, with what a confusion matrix needs."""
    predicted = model.predict(features, verbose=0).argmax(axis=1)
    return Evaluation(float((predicted == labels).mean()), len(labels), labels, predicted, names)
