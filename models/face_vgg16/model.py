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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk import (
    Evaluation,
    ExportedModel,
    FeatureCache,
    MlopsError,
    StudyContext,
    TrainResult,
    TrialContext,
    example_ids,
    fingerprint,
    split_fractions,
    with_example_ids,
)
from pipeline.sdk.keras import (
    dense_classifier,
    evaluate_classifier,
    fit_classifier,
    make_optimizer,
    train_new_classifier,
)

from .align import ALIGNER, align_faces, align_mode, alignment_identity
from .backbone import CUT_LAYERS, block_extractor, feature_extractor, load_base, weights_identity
from .face_aligner import DETECTOR, decode_photo
from .faces import Faces, load_faces, split
from .finetune import TOP_NAME, fine_tune_blocks, full_model_weights, inputs_for, train_head_then_blocks

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
# model.yaml ``params`` that shape a fine-tuning trial; a trial's sampled params override them.
TRIAL_SETTINGS = ("warmup_epochs", "fine_tune_epochs", "feature_shift")


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
    # fine_tune_blocks k >= 1: the cached output of the cut layer (CUT_LAYERS[k]) per split,
    # extracted by ``load_cut(k)`` when the first trial fine-tuning k blocks starts.
    cuts: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    trial_settings: dict[str, Any] = field(default_factory=dict)  # TRIAL_SETTINGS from model.yaml params
    # data.flip: the mirrored photos' cached inputs of the train split, per fine_tune_blocks (0: features).
    mirrored: dict[int, np.ndarray] = field(default_factory=dict)
    load_cut: Callable[[int], None] = field(default=lambda blocks: None, repr=False)
    # Split name -> each photo's identity (``example_ids`` of its file bytes, or of the decoded
    # image for the scikit-learn sets): what the promotion gate keeps a champion from being scored on.
    ids: dict[str, np.ndarray] = field(default_factory=dict)


def prepare(ctx: StudyContext) -> FaceData:
    """Load, split and featurise the faces (features from the cache when they are there)."""
    options = ctx.data
    align_mode(options)  # data.align=mtcnn on cropped data: one line before any photo is read
    max_fine_tune_blocks(ctx)  # a bad fine_tune_blocks range: one line before any photo is read
    faces = align_faces(ctx, load_faces(options, FeatureCache(ctx.cache_dir, ctx.log)))  # -> aligned crops (data.align)
    parts = split(faces, *split_fractions(options, ctx.manifest.path), ctx.seed)
    features = _features(ctx, faces)
    flip = bool(options.get("flip", False))
    # Only the train split's mirror images: validation and test are scored on the faces as they are.
    mirrored = {0: _features(ctx, faces, mirror=True)[parts["train"]]} if flip else {}
    cuts: dict[int, dict[str, np.ndarray]] = {}

    def load_cut(blocks: int) -> None:  # the first trial that fine-tunes ``blocks`` pays for their inputs
        if blocks in cuts:
            return
        outputs = _features(ctx, faces, CUT_LAYERS[blocks])
        cuts[blocks] = {name: outputs[index] for name, index in parts.items()}
        if flip:
            mirrored[blocks] = _features(ctx, faces, CUT_LAYERS[blocks], mirror=True)[parts["train"]]
        held = sum(a.nbytes for a in cuts[blocks].values()) + (mirrored[blocks].nbytes if flip else 0)
        shape = "x".join(map(str, outputs.shape[1:]))
        ctx.log(f"features: {CUT_LAYERS[blocks]} outputs ({shape} per face) for fine_tune_blocks={blocks}: "
                f"{held / 1e6:.0f} MB in memory")  # fmt: skip

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
    ids = example_ids(faces.sources if faces.sources is not None else faces.images)
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
        cuts=cuts,
        trial_settings={name: ctx.params[name] for name in TRIAL_SETTINGS if name in ctx.params},
        mirrored=mirrored,
        load_cut=load_cut,
        ids={name: ids[index] for name, index in parts.items()},
    )


def max_fine_tune_blocks(ctx: StudyContext) -> int:
    """The most VGG16 blocks any trial may fine-tune: the search space's ``fine_tune_blocks`` or the param."""
    most = int(ctx.params.get("fine_tune_blocks") or 0)
    for param in ctx.manifest.search_space.params:
        if param.name == "fine_tune_blocks":
            most = max(most, int(max(param.choices) if param.choices else param.high or 0))
    if most not in (0, *CUT_LAYERS):
        raise MlopsError(f"fine_tune_blocks up to {most}: VGG16's top blocks can be 0, 1 or 2; lower it")
    return most


def prepare_features(ctx: StudyContext) -> None:
    """Fill the feature cache for these data, weights and input size (``mlops features``), no search.

    A new backbone or weights file is a new cache key: the old entry stays untouched, and a
    search run after this one reads the new entry instead of extracting.
    """
    align_mode(ctx.data)  # before any photo is read
    max_fine_tune_blocks(ctx)
    faces = align_faces(ctx, load_faces(ctx.data, FeatureCache(ctx.cache_dir, ctx.log)))
    _features(ctx, faces)
    if ctx.data.get("flip", False):
        _features(ctx, faces, mirror=True)
    # Block outputs for fine-tuning are left to the first trial that fine-tunes: most searches never do.


def _features(ctx: StudyContext, faces: Faces, layer: str | None = None, mirror: bool = False) -> np.ndarray:
    """The base's pooled features of every face, or the output of ``layer``; from the cache or extracted.

    Extracted in resumable shards. ``mirror``: of the left-right mirrored faces.
    """
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
    if layer or mirror:  # the pooled features keep the key they always had; other entries say what they hold
        key.update({"output": layer or "pooled", "mirror": mirror})
    extractor: list[Callable[..., np.ndarray]] = []  # made on the first shard: a cache hit never loads VGG16

    def compute_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        if not extractor:
            base = load_base(weights, size, ctx.seed)
            extractor.append(block_extractor(base, layer, mirror) if layer or mirror else feature_extractor(base))
        return {"features": extractor[0](faces.images[start:stop])}

    started = time.perf_counter()
    # One 512-wide vector per image (VGG16's last block, pooled), or the layer's feature maps:
    # an entry that differs is recomputed.
    count = len(faces.labels)
    expect = {"features": (count, 512) if layer is None else (count, None, None, None)}
    cache = FeatureCache(ctx.cache_dir, log=ctx.log)
    result = cache.get_or_compute_sharded(key, count, compute_shard, expect, ctx.feature_shard_size)
    if layer or mirror:
        what = f"{layer or 'pooled features'}{' of the mirrored faces' if mirror else ''}"
        took = "reused from the cache" if result.hit else f"extracted in {time.perf_counter() - started:.1f}s"
        ctx.log(f"features: {what} {took} ({result.path})")
        return result.arrays["features"]
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
            "features_seconds": round(time.perf_counter() - started, 3),  # `mlops tune`'s stage times split it out
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
    """Fit one head on the cached features, or fine-tune VGG16's top blocks with it (``fine_tune_blocks``).

    Resumes from ``trial.checkpoint_dir``.
    """
    import keras

    params = {**_DEFAULTS, **data.trial_settings, **params}
    if fine_tune_blocks(params) == 0 and 0 not in data.mirrored:
        build = lambda: build_head(data, params)  # noqa: E731  (built after the seed is set)
        return train_new_classifier(build, params, data.features, data.labels, trial, data.patience)
    keras.utils.set_random_seed(trial.seed)
    head = build_head(data, params)
    if fine_tune_blocks(params) > 0:
        return train_head_then_blocks(data, params, trial, head, data.patience)
    outcome = fit_classifier(  # the head alone, each epoch on a random mix of faces and their mirror images
        head,
        make_optimizer(params["optimizer"], float(params["learning_rate"])),
        (data.features["train"], data.labels["train"]),
        (data.features["val"], data.labels["val"]),
        epochs=int(params["epochs"]), batch_size=int(params["batch_size"]), seed=trial.seed,
        checkpoint_dir=trial.checkpoint_dir, report=trial.report, patience=data.patience, log=trial.log,
        mirrored=data.mirrored[0], checkpoint_seconds=trial.checkpoint_seconds,
    )  # fmt: skip
    return TrainResult(outcome.best_value, head, outcome.history, n_val=len(data.labels["val"]))


def evaluate(data: FaceData, result: TrainResult) -> Evaluation:
    """Accuracy on the held-out test split (touched once, at the end), with the photos' identities.

    ``result.model`` is a trained head (it takes the cached features), a registered model
    (``serving.FaceNamer``: it takes raw images) or an older registered Keras model (it takes
    preprocessed images): the promotion gate re-scores the champion on a new test split.

    Raises:
        ValueError: a registered model whose classes are not these data's people (it cannot be scored here).
    """
    scored = _scored(data, result)
    if not data.ids:  # data built by hand, not by prepare
        return scored
    return with_example_ids(scored, data.ids)


def _scored(data: FaceData, result: TrainResult) -> Evaluation:
    """``evaluate``'s accuracy and predictions, for whichever of the three models ``result`` holds."""
    model, labels = result.model, data.labels["test"]
    if hasattr(model, "probabilities"):  # the registered pyfunc model: raw uint8 images in
        if list(model.names) != list(data.names):
            raise ValueError(f"the model names {len(model.names)} people, these data {len(data.names)}")
        predicted = model.probabilities(data.test_photos).argmax(axis=1)
        return Evaluation(float((predicted == labels).mean()), len(labels), labels, predicted, data.names)
    if len(model.input_shape) != 4 or tuple(model.input_shape[1:3]) != (data.size, data.size):
        return evaluate_classifier(model, inputs_for(data, model, "test"), labels, data.names)  # a trained head
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
    tuned = any(layer.name == TOP_NAME for layer in result.model.layers)
    head = full_model_weights(base, result.model) if tuned else result.model  # fine-tuned blocks go into the base
    inputs = keras.Input((data.size, data.size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, head(pooled), name="face_vgg16")
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
