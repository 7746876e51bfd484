"""Fit a small Keras classifier on in-memory arrays, one compiled graph call per epoch.

Why not ``model.fit``: on a few hundred cached feature vectors ``fit`` spends ~100 ms per epoch
in its own machinery (iterators, callbacks, a fresh evaluation loop), against a few ms for the
arithmetic. ``python -m bench.head_epoch`` (240 x 512 features, batch 32, 30 epochs, 2 busy
cores): ``fit`` 3.97 s per trial, this 0.80 s, tracing and per-epoch checkpoints included.
Here each epoch (every batch plus the validation pass) is one ``tf.function`` call over
tensors already in memory.

What it keeps from ``fit``: shuffling per epoch, dropout in training mode, early stopping
that restores the best weights, and resumable state: the weights, the optimizer's variables,
the dropout layers' seed states, the best epoch's weights, the history and the epoch times go
to ``<checkpoint_dir>/latest.npz`` (one atomic write, the one before kept as
``latest.previous.npz``) after an epoch once ``checkpoint_seconds`` (1 s) have passed since
the last write, after the last epoch, and before an exception from ``report`` (pruning, a
stop) leaves; a killed process resumes at the epoch after the last write, losing at most a
second of training. Not after every epoch: a head's epoch takes 10-120 ms and its checkpoint
(weights, two Adam moments, best weights; SHA-256, fsync) 2-50 ms, so writing each one cost a
fifth of a head search (``python -m bench.checkpoint_cost``). When the fit ends, the best
epoch's weights go to ``best.npz``. Each file holds a SHA-256 of its arrays: a damaged or
foreign checkpoint is reported in one line and the fit resumes from the previous one, or
from scratch (``pipeline/sdk/checkpoints.py``).

For fine-tuning on cached block outputs it also takes a second, mirrored version of every
training input (each example drawn from it with probability 1/2 per epoch), a stateless
augmentation of each training batch, and any optimizer with ``build``/``apply``/``variables``
(a ``GroupedOptimizer`` for per-block learning rates). The shuffle, the mirror choices and the
augmentation seeds follow from ``(seed, epoch)`` or ``(seed, epoch, batch)``, and dropout's
seed state is checkpointed, so a resumed fit makes the same choices as one that never stopped.
Each epoch's wall time is reported as ``epoch_seconds``.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk.checkpoints import (
    DEFAULT_CHECKPOINT_SECONDS,
    DamagedCheckpoint,
    array_digest,
    load_good,
    write_atomic,
)

ReportFn = Callable[[int, Mapping[str, float]], None]
AugmentFn = Callable[[Any, Any], Any]
"""``augment(batch, seed)``: a training batch and an int32 ``[2]`` seed for stateless random ops."""


@dataclass
class FitOutcome:
    """What a fit produced.

    Attributes:
        best_value: the best epoch's validation accuracy (its weights are in the model).
        best_epoch: that epoch (0-based).
        history: per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
        resumed_from: the epoch a checkpoint let us skip to, or ``None`` for a fresh start.
        epoch_seconds: each epoch's wall time, one per ``history`` entry (epochs before a
            resume come from the checkpoint; the first epoch of a process includes tracing).
    """

    best_value: float
    best_epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    resumed_from: int | None = None
    epoch_seconds: list[float] = field(default_factory=list)


def fit_classifier(
    model: Any,
    optimizer: Any,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    checkpoint_dir: Path,
    report: ReportFn | None = None,
    patience: int | None = 10,
    log: Callable[[str], None] | None = None,
    mirrored: np.ndarray | None = None,
    augment: AugmentFn | None = None,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
) -> FitOutcome:
    """Train ``model`` (softmax output) with sparse categorical cross-entropy.

    Args:
        model: an uncompiled Keras model ending in a softmax.
        optimizer: a Keras optimizer or a ``GroupedOptimizer`` (its state is checkpointed too).
        train: features and integer labels.
        val: validation features and labels; ``val_accuracy`` is what early stopping watches.
        epochs: the most epochs to run.
        batch_size: examples per gradient step.
        seed: shuffling seed; epoch ``e`` always shuffles the same way, so a resume is exact.
        checkpoint_dir: where ``latest.npz`` and ``best.npz`` live.
        report: called after each epoch with its metrics (the ``history`` names plus
            ``epoch_seconds``); may raise to stop (pruning).
        patience: epochs without improvement before stopping; ``None`` never stops early.
        log: gets the one line about a damaged checkpoint (default: standard error).
        mirrored: same shape as ``train[0]``: a second version of each training input (the
            flipped image's features); each epoch every example comes from it with probability
            1/2, drawn from ``default_rng([seed, epoch, 1])``. Validation never uses it.
        augment: applied to each training batch inside the compiled epoch as
            ``augment(batch, seed)``; ``seed`` (int32, shape ``[2]``) depends only on ``seed``,
            the epoch and the batch's index, for stateless random ops (``random_shift``).
        checkpoint_seconds: the least time between two writes of ``latest.npz`` (0: after
            every epoch); the last epoch, and one ``report`` raises after, are always written.

    Returns:
        The outcome; ``model`` holds the best epoch's weights.
    """
    import tensorflow as tf

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    n = len(train[1])
    if mirrored is not None and np.shape(mirrored) != np.shape(train[0]):
        shapes = f"{np.shape(mirrored)}, training inputs {np.shape(train[0])}"
        raise ValueError(f"mirrored must have the training inputs' shape: mirrored {shapes}")
    # One constant holding both versions: example i's mirror is row n + i, so a flip is an index offset.
    x = tf.constant(train[0] if mirrored is None else np.concatenate([train[0], mirrored]), tf.float32)
    y = tf.constant(train[1] if mirrored is None else np.concatenate([train[1], train[1]]), tf.int32)
    xv, yv = tf.constant(val[0], tf.float32), tf.constant(val[1], tf.int32)
    optimizer.build(model.trainable_variables)
    run_epoch = _compile_epoch(model, optimizer, x, y, xv, yv, batch_size, n, augment)

    history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    start, best_value, best_epoch, best_weights = 0, -1.0, -1, model.get_weights()
    seconds: list[float] = []
    state = _load(checkpoint_dir / "latest.npz", model, optimizer, log or _stderr)
    if state is not None:
        _restore(model, optimizer, state["weights"], state["optimizer"], state["random"])
        history, best_value, best_epoch = state["history"], state["best_value"], state["best_epoch"]
        best_weights = state["best"] or best_weights
        start = state["epoch"] + 1
        # A checkpoint from before epoch times were kept: unknown, so that the list still zips with history.
        seconds = state.get("epoch_seconds") or [float("nan")] * start
    resumed_from = start if state is not None else None

    def checkpoint(epoch: int) -> None:
        meta = {"epoch": epoch, "history": history, "best_value": best_value, "best_epoch": best_epoch}
        meta["epoch_seconds"] = seconds
        random = [np.asarray(v) for v in _random_state(model)]
        _save(checkpoint_dir / "latest.npz", model.get_weights(), optimizer, best_weights, meta, random)

    saved, last_write = start - 1, time.perf_counter()
    for epoch in range(start, epochs):
        if patience is not None and best_epoch >= 0 and epoch - best_epoch > patience:
            break
        started = time.perf_counter()
        order = training_order(n, seed, epoch, mirrored=mirrored is not None)
        inputs = [tf.constant(order)]
        if augment is not None:
            inputs.append(tf.constant(augment_key(seed, epoch)))
        values = [float(v) for v in run_epoch(*inputs)]
        metrics = dict(zip(history, values, strict=True))
        for name, value in metrics.items():
            history[name].append(value)
        if metrics["val_accuracy"] > best_value:
            best_value, best_epoch, best_weights = metrics["val_accuracy"], epoch, model.get_weights()
        # Training and validation only: the checkpoint that follows holds these times, so it can't time itself.
        seconds.append(time.perf_counter() - started)
        if epoch == epochs - 1 or time.perf_counter() - last_write >= checkpoint_seconds:
            checkpoint(epoch)
            saved, last_write = epoch, time.perf_counter()
        if report is not None:
            try:
                report(epoch, {**metrics, "epoch_seconds": seconds[-1]})
            except BaseException:
                if saved != epoch:  # pruned or stopped here: a retry goes on from this epoch
                    checkpoint(epoch)
                raise

    if saved != len(history["val_accuracy"]) - 1:  # stopped early between writes
        checkpoint(len(history["val_accuracy"]) - 1)
    model.set_weights(best_weights)
    _save(checkpoint_dir / "best.npz", best_weights, None, None, {"epoch": best_epoch, "best_value": best_value})
    return FitOutcome(best_value, best_epoch, history, resumed_from, seconds)


def training_order(n: int, seed: int, epoch: int, *, mirrored: bool = False) -> np.ndarray:
    """The rows of epoch ``epoch``'s batches, in order: a shuffle of ``0..n-1``.

    With ``mirrored``, each example's row is ``i + n`` (its mirror in the stacked inputs) with
    probability 1/2, drawn from its own generator so the shuffle is the one without mirrors.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)
    if mirrored:
        flip = np.random.default_rng([seed, epoch, 1]).integers(0, 2, n).astype(np.int32)
        order = order + n * flip[order]
    return order


def augment_key(seed: int, epoch: int) -> np.int32:
    """The epoch's half of every batch's augmentation seed (the other half is the batch's index)."""
    return np.int32(np.random.default_rng([seed, epoch, 2]).integers(0, 2**31 - 1))


def _compile_epoch(
    model: Any,
    optimizer: Any,
    x: Any,
    y: Any,
    xv: Any,
    yv: Any,
    batch_size: int,
    n_train: int,
    augment: AugmentFn | None,
) -> Any:
    """One ``tf.function`` running an epoch: ``run_epoch(order)``, or ``run_epoch(order, key)`` with ``augment``.

    ``order`` indexes the rows of ``x`` (which may stack the mirrored inputs under the plain ones).
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    n = tf.constant(n_train)
    count = tf.cast(n, tf.float32)

    def accuracy_sum(labels: Any, probs: Any) -> Any:
        hits = tf.equal(tf.argmax(probs, axis=1, output_type=tf.int32), labels)
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    @tf.function
    def run_epoch(order: Any, key: Any = None) -> Any:
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for begin in tf.range(0, n, batch_size):
            index = order[begin : begin + batch_size]
            xb, yb = tf.gather(x, index), tf.gather(y, index)
            if augment is not None:
                xb = augment(xb, tf.stack([key, begin // batch_size]))
            with tf.GradientTape() as tape:
                probs = model(xb, training=True)
                loss = loss_fn(yb, probs)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            size = tf.cast(tf.shape(index)[0], tf.float32)
            loss_sum += loss * size
            correct += accuracy_sum(yb, probs)
        val_probs = model(xv, training=False)
        val_acc = accuracy_sum(yv, val_probs) / tf.cast(tf.shape(xv)[0], tf.float32)
        return loss_sum / count, correct / count, loss_fn(yv, val_probs), val_acc

    return run_epoch


def _random_state(model: Any) -> list[Any]:
    """The model's variables that are not weights: the seed generators' states (dropout's masks).

    Checkpointed with the weights so that a resumed fit draws the masks an unbroken one would.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _save(
    path: Path,
    weights: list[np.ndarray],
    optimizer: Any,
    best: list[np.ndarray] | None,
    meta: dict[str, Any],
    random: list[np.ndarray] | None = None,
) -> None:
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"r{i}": r for i, r in enumerate(random or [])})
    if optimizer is not None:
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    if best is not None:
        arrays.update({f"b{i}": np.asarray(w) for i, w in enumerate(best)})
    buffer = io.BytesIO()
    meta = {**meta, "sha256": array_digest(arrays)}
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    # A kill mid-write leaves the previous checkpoint intact; latest.npz keeps its predecessor.
    write_atomic(path, buffer.getvalue(), keep_previous=path.name == "latest.npz")


def _load(path: Path, model: Any, optimizer: Any, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The last good checkpoint at ``path`` (or its predecessor) that fits ``model``, else ``None``."""
    shapes = {
        "w": [tuple(np.shape(w)) for w in model.get_weights()],
        "o": [tuple(v.shape) for v in optimizer.variables] if optimizer is not None else None,
        "r": [tuple(v.shape) for v in _random_state(model)],
    }
    return load_good(path, lambda data: _parse(data, shapes), log)


def _parse(data: bytes, shapes: dict[str, list[tuple[int, ...]] | None]) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files if name != "meta"}
        meta = json.loads(str(npz["meta"]))
    if meta.pop("sha256", None) != array_digest(arrays):
        raise DamagedCheckpoint("checksum mismatch")

    def group(prefix: str) -> list[np.ndarray]:
        return [arrays[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in arrays))]

    state = {**meta, "weights": group("w"), "optimizer": group("o"), "best": group("b"), "random": group("r")}
    for key, prefix in (("weights", "w"), ("best", "w"), ("optimizer", "o"), ("random", "r")):
        expected, found = shapes[prefix], [tuple(a.shape) for a in state[key]]
        optional = key != "weights"  # the optimizer's, the best epoch's and the random state may be absent
        if (found or not optional) and expected is not None and found != expected:  # never restore a misfit
            raise DamagedCheckpoint(f"{key} shapes {found} do not fit the model's {expected}")
    return state


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _restore(
    model: Any,
    optimizer: Any,
    weights: list[np.ndarray],
    opt_values: list[np.ndarray] | None,
    random: list[np.ndarray] | None = None,
) -> None:
    model.set_weights(weights)
    for variable, value in zip(_random_state(model), random or [], strict=False):  # absent in older checkpoints
        variable.assign(value)
    if optimizer is not None and opt_values:
        for variable, value in zip(optimizer.variables, opt_values, strict=True):
            variable.assign(value)
