"""Face alignment of a data set's raw photos (``data.align: mtcnn``), cached per data content.

``face_aligner.FaceAligner`` detects each photo's largest face with MTCNN and warps it onto
ArcFace's five-point template at ``input_size``. A photo with no face is skipped and counted,
or used whole under ``data.align_fallback: whole``. The crops are a ``FeatureCache`` entry
keyed by the files' contents and the aligner's settings, extracted in resumable shards:
alignment runs once per data set, not once per run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.sdk import FeatureCache, MlopsError, StudyContext

from .face_aligner import BATCH, DETECT_SIDE, DETECTOR, WARP_SIDE, FaceAligner, decode_photo
from .faces import Faces, prune_small_classes

ALIGN_CHOICES = ("mtcnn", "none")
# What the crops depend on; "alone": one photo a detector call (crops made in batches differ).
ALIGNER = f"{DETECTOR}/arcface5/detect{DETECT_SIDE}/alone/warp{WARP_SIDE}"
FALLBACK_CHOICES = ("skip", "whole")


def align_mode(options: dict[str, Any]) -> str:
    """``data.align`` with its default: ``mtcnn`` for a folder of photos, ``none`` for the cropped sets.

    Raises:
        MlopsError: an unknown value, or ``mtcnn`` on Olivetti or sklearn's LFW (they come cropped).
    """
    source = options.get("source", "olivetti")
    mode = options.get("align") or ("mtcnn" if source == "folder" else "none")
    if mode not in ALIGN_CHOICES:
        raise MlopsError(f"data.align={mode!r} is unknown; use mtcnn or none")
    if mode == "mtcnn" and source != "folder":
        raise MlopsError(f"data.align=mtcnn needs data.source=folder ({source} comes cropped); set data.align=none")
    return mode


def alignment_identity(options: dict[str, Any]) -> str:
    """What the images went through before VGG16: a part of the feature-cache key."""
    if align_mode(options) == "none":
        return "none"
    return f"{DETECTOR}/arcface5/detect{DETECT_SIDE}/{options.get('align_fallback') or 'skip'}"


def align_faces(ctx: StudyContext, faces: Faces) -> Faces:
    """``faces`` with every photo replaced by its aligned crop (as ``data.align`` says).

    Photos with no face are dropped (``align_fallback: skip``, the default) or kept whole;
    ``ctx.facts['no_face_images']`` counts them either way, and a person left with too few
    photos is pruned like any other.

    Raises:
        MlopsError: a bad ``data.align`` or ``data.align_fallback``.
    """
    options = ctx.data
    fallback = options.get("align_fallback") or "skip"
    if fallback not in FALLBACK_CHOICES:
        raise MlopsError(f"data.align_fallback={fallback!r} is unknown; use skip or whole")
    if align_mode(options) == "none" or faces.sources is None:
        ctx.facts["alignment"] = "none"
        return faces
    size = faces.images.shape[1]
    crops, found = _cached_crops(ctx, faces.sources, size)
    missing = int((~found).sum())
    ctx.facts.update({"alignment": alignment_identity(options), "no_face_images": missing})
    if missing:
        what = "kept whole (data.align_fallback=whole)" if fallback == "whole" else "skipped"
        ctx.log(f"align: no face found in {missing} of {len(found)} image(s); {what}")
        ctx.notes.append(f"no face found in {missing} of {len(found)} photos: {what}")
    # A photo without a face keeps the whole-photo image the loader made.
    images = np.where(found[:, None, None, None], crops, faces.images)
    aligned = replace(faces, images=images)
    if fallback == "whole" or not missing:
        return aligned
    if not found.any():
        raise MlopsError(
            f"data.path={options.get('path')}: no face found in any of its {len(found)} photos; "
            "check the folder, or set data.align=none to use the photos whole"
        )
    sources = [source for source, keep in zip(faces.sources, found, strict=True) if keep]
    kept = replace(aligned, images=images[found], labels=faces.labels[found], sources=sources)
    return prune_small_classes(kept, int(options.get("min_images_per_class", 5)))


def _cached_crops(ctx: StudyContext, sources: Sequence[bytes], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops and a found-a-face mask for every photo: from the cache or computed in shards."""
    content = hashlib.sha256()
    for source in sources:
        content.update(hashlib.sha256(source).digest())
    key = {
        "kind": "aligned_faces",
        "sources": content.hexdigest(),
        "aligner": ALIGNER,
        "input_size": size,
    }
    aligner: list[FaceAligner] = []  # made on the first shard: a cache hit never loads MTCNN
    progress = _Progress(len(sources))

    def compute_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        if not aligner:
            aligner.append(FaceAligner(size))
        # Decoded a batch at a time: a shard of large photos would not fit in memory at once.
        batches = []
        for first in range(start, stop, BATCH):
            photos = [decode_photo(file) for file in sources[first : min(first + BATCH, stop)]]
            batches.append(aligner[0].align(photos, progress.advance))
        crops, found = np.concatenate([c for c, _ in batches]), np.concatenate([f for _, f in batches])
        ctx.log(f"align: images {start + 1}-{stop} of {len(sources)} done")  # progress where there is no bar
        return {"crops": crops, "found": found}

    started = time.perf_counter()
    expect = {"crops": (len(sources), size, size, 3), "found": (len(sources),)}
    cache = FeatureCache(ctx.cache_dir, log=ctx.log)
    result = cache.get_or_compute_sharded(key, len(sources), compute_shard, expect, ctx.feature_shard_size, "align")
    progress.close()
    seconds = time.perf_counter() - started
    if result.hit:
        ctx.log(f"align: crops reused from the cache ({result.path})")
    elif result.images:
        ctx.log(f"align: {result.images} images in {seconds:.1f}s ({result.images / max(seconds, 1e-9):.1f} images/s)")
        ctx.facts["align_seconds"] = round(seconds, 2)
    return result.arrays["crops"], result.arrays["found"].astype(bool)


class _Progress:
    """A tqdm bar on stderr while photos are aligned (none when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def advance(self, count: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="aligning faces", unit="img", disable=None)
        self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
