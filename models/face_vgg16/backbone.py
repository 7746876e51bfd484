"""The frozen VGG16 convolutional base: loading its weights and extracting features once.

Weights are ``imagenet`` (Keras' own loader: downloaded once, cached under
``$KERAS_HOME/models``), a path to a weights file, or ``none`` (random, seeded).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk import MlopsError, file_digest

IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def weights_identity(weights: str, seed: int) -> str:
    """What the features depend on in the weights: a file's content, or the name (and seed)."""
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return f"random-seed-{seed}"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MlopsError(f"weights file {path} not found; pass --weights imagenet|none|PATH to a .h5 file")
    return f"sha256:{file_digest(path)}"


def load_base(weights: str, size: int, seed: int) -> Any:
    """Build VGG16 without its top, frozen, on ``size`` x ``size`` RGB input.

    Raises:
        MlopsError: when the ImageNet weights cannot be fetched (no network, no cached file)
            or a weights file does not fit VGG16.
    """
    import keras

    keras.utils.set_random_seed(seed)
    source: str | None = None if weights == "none" else weights
    if source not in (None, "imagenet"):
        source = str(Path(source).expanduser())
    try:
        base = keras.applications.VGG16(weights=source, include_top=False, input_shape=(size, size, 3))
    except Exception as error:  # Keras raises a bare Exception for a failed download
        if weights == "imagenet":
            home = os.environ.get("KERAS_HOME", str(Path.home() / ".keras"))
            raise MlopsError(
                f"VGG16 ImageNet weights unavailable (no network and no {home}/models/{IMAGENET_FILE}); "
                "put that file there, or pass --weights none or --weights PATH to a VGG16 no-top .h5"
            ) from None
        raise MlopsError(f"weights {weights}: not a VGG16 no-top weights file ({error})") from None
    base.trainable = False
    return base


def feature_extractor(base: Any, batch_size: int = 32) -> Callable[..., np.ndarray]:
    """A function from images (uint8 RGB) to the base's global-average-pooled output.

    The input goes through ``keras.applications.vgg16.preprocess_input`` (RGB to BGR, minus
    the ImageNet channel means), the convention of both weight sets used here. Made once and
    called per shard, so the traced graph is reused across shards.
    """
    import keras
    import tensorflow as tf

    preprocess = keras.applications.vgg16.preprocess_input

    @tf.function(reduce_retracing=True)
    def pooled(batch: Any) -> Any:
        return tf.reduce_mean(base(batch, training=False), axis=(1, 2))

    def extract(images: np.ndarray, on_batch: Callable[[int], object] = lambda n: None) -> np.ndarray:
        chunks = []
        for begin in range(0, len(images), batch_size):
            batch = preprocess(images[begin : begin + batch_size].astype(np.float32))
            chunks.append(pooled(tf.constant(batch)).numpy())
            on_batch(len(batch))
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 512), np.float32)

    return extract


def extract_features(base: Any, images: np.ndarray, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Global-average-pooled base output for ``images`` (uint8 RGB), with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(images), desc="VGG16 features", unit="img", disable=not progress, leave=False)
    features = feature_extractor(base, batch_size)(images, bar.update)
    bar.close()
    return features


# Where a fine-tuning trial cuts VGG16 (``fine_tune_blocks`` -> the last frozen layer): its
# output is cached, and only the blocks after it are trained.
CUT_LAYERS = {1: "block4_pool", 2: "block3_pool"}


def block_extractor(base: Any, layer: str | None, mirror: bool, batch_size: int = 32) -> Callable[..., np.ndarray]:
    """A function from images (uint8 RGB) to ``layer``'s output (``None``: the pooled features).

    Only the blocks up to ``layer`` run. ``mirror``: the images are flipped left-right first
    (the one cached pass behind ``data.flip``).
    """
    import keras
    import tensorflow as tf

    preprocess = keras.applications.vgg16.preprocess_input
    prefix = keras.Model(base.input, base.get_layer(layer).output) if layer else base

    @tf.function(reduce_retracing=True)
    def outputs(batch: Any) -> Any:
        out = prefix(batch, training=False)
        return out if layer else tf.reduce_mean(out, axis=(1, 2))

    def extract(images: np.ndarray) -> np.ndarray:
        chunks = []
        for begin in range(0, len(images), batch_size):
            batch = images[begin : begin + batch_size]
            batch = batch[:, :, ::-1] if mirror else batch
            chunks.append(outputs(tf.constant(preprocess(batch.astype(np.float32)))).numpy().astype(np.float32))
        return np.concatenate(chunks)

    return extract
