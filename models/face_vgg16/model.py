"""VGG16 transfer-learning face classifier: a frozen conv base, a searched dense head.

``prepare`` loads the faces, splits them per person and computes the base's pooled features
once (content-addressed cache, extracted in resumable shards); every trial then trains only
the head on those vectors. ``prepare_features`` does the extraction alone (``mlops features``).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk import (
    Evaluation,
    ExportedModel,
    FeatureCache,
    StudyContext,
    TrainResult,
    TrialContext,
    fingerprint,
    split_fractions,
)
from pipeline.sdk.keras import dense_classifier, evaluate_classifier, train_new_classifier

from .align import ALIGNER, align_faces, align_mode, alignment_identity
from .backbone import feature_extractor, load_base, weights_identity
from .face_aligner import DETECTOR, decode_photo
from .faces import Faces, load_faces, split

TOP_K = 5  # names the registered model answers with, best first
THRESHOLD = 0.5  # below this probability the registered model answers "unknown" (a stranger)
EXAMPLE_BYTES = 256 * 1024  # an input example photo larger than this is logged shrunk (as JPEG)
PREPROCESSING = "keras.applications.vgg16.preprocess_input+global_average_pool"
_DEFAULTS = {
    "n_layers": 1,
    "units": [256],
    "dropout": 0.2,
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 40,
}


@dataclass
class FaceData:
    """Per-split features and labels, and what is needed to rebuild the full model."""

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    names: list[str]
    test_images: np.ndarray  # RGB uint8 model inputs: what a registered Keras model is scored on
    # What a registered pyfunc model is scored on (the promotion gate) and its input example: the
    # photos as a client sends them, the file bytes when they were aligned (the model aligns them).
    test_photos: list[Any]
    weights: str
    size: int
    seed: int
    patience: int | None
    alignment: str = "none"  # data.align: the served model aligns photos the same way
    align_fallback: str = "skip"  # data.align_fallback: what it does with a photo without a face


def prepare(ctx: StudyContext) -> FaceData:
    """Load, split and featurise the faces (features from the cache when they are there)."""
    options = ctx.data
    align_mode(options)  # data.align=mtcnn on cropped data: one line before any photo is read
    faces = align_faces(ctx, load_faces(options))  # raw photos -> aligned crops (data.align)
    parts = split(faces, *split_fractions(options, ctx.manifest.path), ctx.seed)
    features = _features(ctx, faces)
    ctx.facts.update(
        {
            "n_train": len(parts["train"]),
            "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
        }
    )
    weights = str(ctx.params.get("weights", "imagenet"))
    size = int(options.get("input_size", 64))
    alignment = align_mode(options)
    test = parts["test"]
    sources = faces.sources if alignment != "none" else None  # aligned: the served model gets the files
    return FaceData(
        features={name: features[index] for name, index in parts.items()},
        labels={name: faces.labels[index] for name, index in parts.items()},
        names=faces.names,
        test_images=faces.images[test],
        test_photos=[sources[i] for i in test] if sources is not None else list(faces.images[test]),
        weights=weights,
        size=size,
        seed=ctx.seed,
        patience=ctx.params.get("patience", 10),
        alignment=alignment,
        align_fallback=str(options.get("align_fallback") or "skip"),
    )


def prepare_features(ctx: StudyContext) -> None:
    """Fill the feature cache for these data, weights and input size (``mlops features``), no search.

    A new backbone or weights file is a new cache key: the old entry stays untouched, and a
    search run after this one reads the new entry instead of extracting.
    """
    align_mode(ctx.data)  # before any photo is read
    _features(ctx, align_faces(ctx, load_faces(ctx.data)))


def _features(ctx: StudyContext, faces: Faces) -> np.ndarray:
    """The base's pooled features of every face: from the cache, or extracted in resumable shards."""
    size = int(ctx.data.get("input_size", 64))
    weights = str(ctx.params.get("weights", "imagenet"))
    data_id = fingerprint(faces.images, faces.labels)
    key = {
        "data": data_id,
        "backbone": "vgg16",
        "weights": weights_identity(weights, ctx.seed),
        "input_size": size,
        "preprocessing": PREPROCESSING,
        "alignment": alignment_identity(ctx.data),  # the data fingerprint covers the crops; this names them
    }
    extractor: list[Callable[..., np.ndarray]] = []  # made on the first shard: a cache hit never loads VGG16

    def compute_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        if not extractor:
            extractor.append(feature_extractor(load_base(weights, size, ctx.seed)))
        return {"features": extractor[0](faces.images[start:stop])}

    started = time.perf_counter()
    # One 512-wide vector (VGG16's last block, pooled) per image: an entry that differs is recomputed.
    expect = {"features": (len(faces.labels), 512)}
    cache = FeatureCache(ctx.cache_dir, log=ctx.log)
    result = cache.get_or_compute_sharded(key, len(faces.labels), compute_shard, expect, ctx.feature_shard_size)
    if result.hit:
        ctx.log(f"features: reused from the cache ({result.path})")
    elif result.images:
        ctx.log(f"features: {result.images} images through VGG16 in {time.perf_counter() - started:.1f}s")
    else:
        ctx.log(f"features: extracted by other workers ({result.path})")
    if faces.skipped:
        ctx.notes.append(f"{faces.skipped} unreadable image(s) skipped (data.on_bad_image=skip)")
    if faces.duplicates:
        ctx.notes.append(f"{faces.duplicates} image(s) are filed under two people; remove the wrong copy")
    ctx.facts.update(
        {
            "data_fingerprint": data_id,
            "feature_cache_hit": result.hit,
            "n_images": len(faces.labels),
            "n_classes": len(faces.names),
            "skipped_images": faces.skipped,
            "duplicate_images": faces.duplicates,
        }
    )
    return result.arrays["features"]


def build_head(data: FaceData, params: dict[str, Any]) -> Any:
    """The dense head: standardise, then ``n_layers`` x (Dense, Dropout), then softmax."""
    import keras

    train = data.features["train"]
    scaling = keras.layers.Normalization(mean=train.mean(axis=0), variance=train.var(axis=0) + 1e-6)
    return dense_classifier([keras.Input((train.shape[1],)), scaling], params, len(data.names), "face_head")


def train(data: FaceData, params: dict[str, Any], trial: TrialContext) -> TrainResult:
    """Fit one head on the cached features; resumes from ``trial.checkpoint_dir``."""
    params = {**_DEFAULTS, **params}
    build = lambda: build_head(data, params)  # noqa: E731  (built after the seed is set)
    return train_new_classifier(build, params, data.features, data.labels, trial, data.patience)


def evaluate(data: FaceData, result: TrainResult) -> Evaluation:
    """Accuracy on the held-out test split (touched once, at the end).

    ``result.model`` is a trained head (it takes the cached features), a registered model
    (``serving.FaceNamer``: it takes raw images) or an older registered Keras model (it takes
    preprocessed images): the promotion gate re-scores the champion on a new test split.

    Raises:
        ValueError: a registered model whose classes are not these data's people (it cannot be scored here).
    """
    model, features, labels = result.model, data.features["test"], data.labels["test"]
    if hasattr(model, "probabilities"):  # the registered pyfunc model: raw uint8 images in
        if list(model.names) != list(data.names):
            raise ValueError(f"the model names {len(model.names)} people, these data {len(data.names)}")
        predicted = model.probabilities(data.test_photos).argmax(axis=1)
        return Evaluation(float((predicted == labels).mean()), len(labels), labels, predicted, data.names)
    if tuple(model.input_shape[1:]) == features.shape[1:]:
        return evaluate_classifier(model, features, labels, data.names)
    import keras

    if model.output_shape[-1] != len(data.names):
        raise ValueError(f"the model names {model.output_shape[-1]} people, these data {len(data.names)}")
    images = keras.applications.vgg16.preprocess_input(data.test_images.astype(np.float32))
    return evaluate_classifier(model, images, labels, data.names)


def export(data: FaceData, result: TrainResult) -> ExportedModel:
    """A model that names people in raw photos: ``serving.py`` around VGG16 base + pooling + head.

    The Keras model (preprocessed ``size`` x ``size`` x 3 images to class probabilities) is the
    artifact; ``serving.py`` aligns (as training did), resizes, fixes channels and preprocesses
    any RGB or grey photo, and answers names. The config logged with it says what it was
    trained on; ``face_aligner.py`` goes with it, so serving aligns with the training code.
    """
    import keras
    import pandas as pd

    base = load_base(data.weights, data.size, data.seed)
    inputs = keras.Input((data.size, data.size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, result.model(pooled), name="face_vgg16")
    config = {
        "names": list(data.names),
        "input_size": data.size,
        "alignment": data.alignment,  # serving.py refuses what it cannot do rather than name unaligned faces
        "align_fallback": data.align_fallback,
        "aligner": ALIGNER if data.alignment == "mtcnn" else "none",
        "weights": weights_identity(data.weights, data.seed),
        "preprocessing": PREPROCESSING,
        "top_k": min(TOP_K, len(data.names)),
        "threshold": THRESHOLD,
    }
    example = pd.DataFrame({"image": [_example_file(photo) for photo in data.test_photos[:2]]})
    requirements = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "mlflow==3.17.2", "pandas==3.1.1", "pillow==13.0.0"]
    return ExportedModel(
        "pyfunc",
        str(Path(__file__).with_name("serving.py")),
        (example, {"threshold": THRESHOLD}),  # the params example gives the signature a threshold
        requirements + ([DETECTOR] if data.alignment == "mtcnn" else []),
        artifacts={"keras_model": model},
        config=config,
        code_paths=[str(Path(__file__).with_name("face_aligner.py"))],
    )


def _example_file(photo: bytes | np.ndarray) -> str:
    """A photo as a base64 image file, what a client posts to the served model; a large file shrunk."""
    from PIL import Image

    if isinstance(photo, bytes) and len(photo) <= EXAMPLE_BYTES:
        return base64.b64encode(photo).decode("ascii")
    buffer = io.BytesIO()
    Image.fromarray(photo if isinstance(photo, np.ndarray) else decode_photo(photo)).save(buffer, "JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
