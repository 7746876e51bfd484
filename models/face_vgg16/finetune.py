"""Fine-tuning VGG16's top blocks on cached block outputs (``fine_tune_blocks`` 1 or 2).

A trial that fine-tunes block 5 (``fine_tune_blocks: 1``) trains VGG16's block 5 plus the head on
block 4's pooled output, cached once per data set like the features; ``2`` trains blocks 4 and 5
on block 3's. The frozen blocks never run again: an epoch costs the trainable blocks' forward
and backward pass only. The trainable blocks start from the pretrained weights and learn at
their own rate (``fine_tune_learning_rate``, well below the head's), after the head has been
trained to convergence on the frozen features first (at most ``warmup_epochs``, early stopping at
the trial's patience: Keras' transfer-learning recipe, since a random head's large gradients would
otherwise wreck the pretrained blocks; head epochs on cached features cost hundredths of a
second); the warmed-up head then goes on at the blocks' rate, as in that recipe.

What a frozen prefix allows: augmentations that commute with the frozen blocks, or nearly. A
horizontal flip of the photo is its own cached pass (``data.flip``: every epoch takes each
training face or its mirror image); a shift of the cached feature map by whole cells is a
coarse image shift (``feature_shift``). What it does not allow: augmenting the photo itself
per epoch (random crops, colour, rotation), which would have to run the frozen blocks again.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipeline.sdk import TrainResult, TrialContext
from pipeline.sdk.keras import fit_classifier, make_grouped_optimizer, make_optimizer, random_shift

from .backbone import CUT_LAYERS, load_base

TOP_NAME = "vgg16_top"  # the trainable blocks inside a fine-tuned trial's model
HEAD_NAME = "face_head"


def fine_tune_blocks(params: dict[str, Any]) -> int:
    """The trial's ``fine_tune_blocks`` (0: head only)."""
    return int(params.get("fine_tune_blocks", 0))


@functools.lru_cache(maxsize=2)
def _pretrained(weights: str, size: int, seed: int) -> Any:
    """The frozen VGG16 the trainable blocks are copied from: loaded once per process."""
    return load_base(weights, size, seed)


def top_blocks(base: Any, blocks: int) -> Any:
    """VGG16's layers after ``CUT_LAYERS[blocks]`` as a trainable model, with the pretrained weights."""
    import keras

    cut = base.get_layer(CUT_LAYERS[blocks])
    inputs = keras.Input(tuple(cut.output.shape[1:]))
    x = inputs
    after = base.layers[base.layers.index(cut) + 1 :]
    for layer in after:
        clone = layer.__class__.from_config({**layer.get_config(), "trainable": True})  # the base's are frozen
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=TOP_NAME)


def fine_tuned_model(data: Any, params: dict[str, Any], head: Any) -> tuple[Any, Any]:
    """Cut output -> trainable blocks -> global average pool -> ``head``; and the blocks' model."""
    import keras

    blocks = fine_tune_blocks(params)
    top = top_blocks(_pretrained(data.weights, data.size, data.seed), blocks)
    inputs = keras.Input(top.input.shape[1:])
    pooled = keras.layers.GlobalAveragePooling2D()(top(inputs))
    return keras.Model(inputs, head(pooled), name="face_fine_tuned"), top


def train_head_then_blocks(
    data: Any, params: dict[str, Any], trial: TrialContext, head: Any, patience: int | None
) -> TrainResult:
    """Warm ``head`` up on the frozen features, then fine-tune the top blocks and the head together.

    Both phases checkpoint every epoch (``warmup/`` and ``blocks/`` under the trial's folder),
    so a killed trial resumes in the phase and epoch it was in, with the blocks' weights and
    both optimizers' state. Epochs are reported to the pruner as one sequence.
    """
    import keras

    blocks = fine_tune_blocks(params)
    data.load_cut(blocks)  # extracted (or read from the cache) by the first such trial of this process
    warmup = int(params.get("warmup_epochs", 5))
    batch, seed = int(params["batch_size"]), trial.seed
    warmed = 0  # warm-up epochs run: the blocks' epochs are reported to the pruner after them
    if warmup > 0:
        # Until the head converges (early stopping at the trial's patience, best weights kept):
        # five fixed epochs left a slow head far from it (0.46 validation), and at the blocks'
        # low rate it never caught up, so the pruner cut trials that were not yet fine-tuning.
        outcome = fit_classifier(
            head,
            make_optimizer(params["optimizer"], float(params["learning_rate"])),
            (data.features["train"], data.labels["train"]),
            (data.features["val"], data.labels["val"]),
            epochs=warmup, batch_size=batch, seed=seed, checkpoint_dir=trial.checkpoint_dir / "warmup",
            report=trial.report, patience=patience, log=trial.log, mirrored=data.mirrored.get(0),
            checkpoint_seconds=trial.checkpoint_seconds,
        )  # fmt: skip
        warmed = len(outcome.history["val_accuracy"])
    keras.utils.set_random_seed(seed)
    model, top = fine_tuned_model(data, params, head)
    low = float(params.get("fine_tune_learning_rate", 1e-4))
    # Keras' recipe: a warmed-up head goes on at the blocks' low rate. At its own rate, a fresh
    # optimizer's first steps knocked a converged head back (training loss 0.009 -> 0.20 on LFW-62).
    head_rate = low if warmup > 0 else float(params["learning_rate"])
    optimizer = make_grouped_optimizer(
        params["optimizer"], [(low, top.trainable_variables), (head_rate, head.trainable_variables)]
    )
    shift = int(params.get("feature_shift", 1))
    outcome = fit_classifier(
        model,
        optimizer,
        (data.cuts[blocks]["train"], data.labels["train"]),
        (data.cuts[blocks]["val"], data.labels["val"]),
        epochs=int(params.get("fine_tune_epochs", 20)), batch_size=batch, seed=seed,
        checkpoint_dir=trial.checkpoint_dir / "blocks",
        report=lambda epoch, metrics: trial.report(epoch + warmed, metrics),
        patience=patience, log=trial.log, mirrored=data.mirrored.get(blocks),
        augment=random_shift(shift) if shift > 0 else None, checkpoint_seconds=trial.checkpoint_seconds,
    )  # fmt: skip
    return TrainResult(outcome.best_value, model, outcome.history, n_val=len(data.labels["val"]))


def full_model_weights(base: Any, trained: Any) -> Any:
    """``base`` (a full frozen VGG16) with the fine-tuned blocks of ``trained`` copied into it by layer name.

    Returns:
        The head inside ``trained`` (what follows the pooled blocks).
    """
    top = trained.get_layer(TOP_NAME)
    for layer in top.layers:
        if layer.weights:
            base.get_layer(layer.name).set_weights(layer.get_weights())
    return trained.get_layer(HEAD_NAME)


def blocks_of(model: Any) -> int:
    """How many VGG16 blocks a trained model fine-tuned (0: a head on the pooled features)."""
    if not any(layer.name == TOP_NAME for layer in model.layers):
        return 0
    first = next(layer.name for layer in model.get_layer(TOP_NAME).layers if layer.weights)
    return {"block5": 1, "block4": 2}[first.split("_")[0]]


def inputs_for(data: Any, model: Any, split: str) -> np.ndarray:
    """The cached inputs a trained ``model`` takes for ``split``: pooled features, or its cut's block outputs."""
    blocks = blocks_of(model)
    if blocks == 0:
        return np.asarray(data.features[split])
    data.load_cut(blocks)
    return np.asarray(data.cuts[blocks][split])
