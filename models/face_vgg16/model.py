"""VGG16 transfer-learning face classifier: a frozen conv base, a searched dense head.

``prepare`` loads the faces, splits them per person and computes the base's pooled features
once (content-addressed cache); every trial then trains only the head on those vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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

from .backbone import extract_features, load_base, weights_identity
from .faces import load_faces, split

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
    images_example: np.ndarray
    weights: str
    size: int
    seed: int
    patience: int | None


def prepare(ctx: StudyContext) -> FaceData:
    """Load, split and featurise the faces (features from the cache when they are there)."""
    options = ctx.data
    size = int(options.get("input_size", 64))
    weights = str(ctx.params.get("weights", "imagenet"))
    faces = load_faces(options)
    parts = split(faces, *split_fractions(options, ctx.manifest.path), ctx.seed)
    data_id = fingerprint(faces.images, faces.labels)
    key = {
        "data": data_id,
        "backbone": "vgg16",
        "weights": weights_identity(weights, ctx.seed),
        "input_size": size,
        "preprocessing": PREPROCESSING,
    }

    def compute() -> dict[str, np.ndarray]:
        started = time.perf_counter()
        base = load_base(weights, size, ctx.seed)
        features = extract_features(base, faces.images)
        ctx.log(f"features: {len(features)} images through VGG16 in {time.perf_counter() - started:.1f}s")
        return {"features": features}

    # One 512-wide vector (VGG16's last block, pooled) per image: an entry that differs is recomputed.
    expect = {"features": (len(faces.labels), 512)}
    arrays, hit = FeatureCache(ctx.cache_dir, log=ctx.log).get_or_compute(key, compute, expect)
    if hit:
        ctx.log(f"features: reused from the cache ({FeatureCache(ctx.cache_dir).path(FeatureCache.key(key))})")
    ctx.facts.update(
        {
            "data_fingerprint": data_id,
            "feature_cache_hit": hit,
            "n_images": len(faces.labels),
            "n_classes": len(faces.names),
            "skipped_images": faces.skipped,
            "duplicate_images": faces.duplicates,
            "n_train": len(parts["train"]),
            "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
        }
    )
    features = arrays["features"]
    return FaceData(
        features={name: features[index] for name, index in parts.items()},
        labels={name: faces.labels[index] for name, index in parts.items()},
        names=faces.names,
        images_example=faces.images[parts["test"][:2]],
        weights=weights,
        size=size,
        seed=ctx.seed,
        patience=ctx.params.get("patience", 10),
    )


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
    """Accuracy of the chosen head on the held-out test split (touched once, at the end)."""
    return evaluate_classifier(result.model, data.features["test"], data.labels["test"], data.names)


def export(data: FaceData, result: TrainResult) -> ExportedModel:
    """VGG16 base + pooling + trained head: one Keras model from preprocessed images to classes."""
    import keras

    base = load_base(data.weights, data.size, data.seed)
    inputs = keras.Input((data.size, data.size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, result.model(pooled), name="face_vgg16")
    example = keras.applications.vgg16.preprocess_input(data.images_example.astype(np.float32))
    return ExportedModel("keras", model, example, ["tensorflow-cpu==2.21.0", "keras==3.15.1"])
