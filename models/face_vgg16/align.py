"""Face detection and alignment of raw photos (``data.align: mtcnn``), cached per data content.

MTCNN (the ``mtcnn`` package, MIT, weights inside the wheel) finds the faces in batches of
photos; the largest face's five landmarks (eyes, nose, mouth corners) are mapped onto
ArcFace's 112x112 template scaled to ``input_size`` by a similarity transform (rotation,
uniform scale, shift: Umeyama's closed form), and the photo is warped into that crop. A photo
with no face is skipped and counted, or used whole under ``data.align_fallback: whole``.

Detection runs on a copy whose longest side is at most ``DETECT_SIDE``: MTCNN's cost grows
with the pixel count, and a face filling a tenth of a photo is still found at that size. The
warp reads the photo itself (bounded at ``WARP_SIDE``), so the crop keeps its detail.

The crops are a ``FeatureCache`` entry keyed by the files' contents and these settings,
extracted in resumable shards: alignment runs once per data set, not once per run.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.sdk import FeatureCache, MlopsError, StudyContext

from .faces import Faces, prune_small_classes

# ArcFace / InsightFace 112x112 template: left eye, right eye, nose, left and right mouth corner
# (image left/right, as MTCNN names them).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
DETECTOR = "mtcnn==1.0.0"
DETECT_SIDE = 128  # px: 33 img/s on 2 busy cores against 7 img/s at 250 (LFW's size), same faces found
WARP_SIDE = 1024  # px: larger photos are reduced first; a 96 px crop needs no more
BATCH = 32  # photos per detect_faces call
ALIGN_CHOICES = ("mtcnn", "none")
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
        "aligner": f"{DETECTOR}/arcface5/detect{DETECT_SIDE}/warp{WARP_SIDE}",
        "input_size": size,
    }
    aligner: list[FaceAligner] = []  # made on the first shard: a cache hit never loads MTCNN
    progress = _Progress(len(sources))

    def compute_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        if not aligner:
            aligner.append(FaceAligner(size))
        # Decoded a batch at a time: a shard of large photos would not fit in memory at once.
        batches = [
            aligner[0].align([_decode(file) for file in sources[first : min(first + BATCH, stop)]], progress.advance)
            for first in range(start, stop, BATCH)
        ]
        crops, found = np.concatenate([c for c, _ in batches]), np.concatenate([f for _, f in batches])
        ctx.log(f"align: images {start + 1}-{stop} of {len(sources)} done")  # progress where there is no bar
        return {"crops": crops, "found": found}

    started = time.perf_counter()
    expect = {"crops": (len(sources), size, size, 3), "found": (len(sources),)}
    cache = FeatureCache(ctx.cache_dir, log=ctx.log)
    result = cache.get_or_compute_sharded(key, len(sources), compute_shard, expect, ctx.feature_shard_size)
    progress.close()
    seconds = time.perf_counter() - started
    if result.hit:
        ctx.log(f"align: crops reused from the cache ({result.path})")
    elif result.images:
        ctx.log(f"align: {result.images} images in {seconds:.1f}s ({result.images / max(seconds, 1e-9):.1f} images/s)")
        ctx.facts["align_seconds"] = round(seconds, 2)
    return result.arrays["crops"], result.arrays["found"].astype(bool)


class FaceAligner:
    """MTCNN on batches of photos, then a similarity warp of each photo's largest face.

    Args:
        size: the side of the square crops.

    Example::

        crops, found = FaceAligner(96).align([rgb_uint8_photo, ...])
    """

    def __init__(self, size: int) -> None:
        from mtcnn import MTCNN

        self.size = size
        self.template = ARCFACE_112 * (size / 112.0)
        self.detector = MTCNN(device="CPU:0")

    def align(
        self, photos: Sequence[np.ndarray], advance: Callable[[int], None] = lambda n: None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crops (N, size, size, 3) uint8 and whether a face was found (N,) bool; no face: zeros."""
        crops = np.zeros((len(photos), self.size, self.size, 3), np.uint8)
        found = np.zeros(len(photos), bool)
        for start in range(0, len(photos), BATCH):
            batch = list(photos[start : start + BATCH])
            for offset, points in enumerate(self.landmarks(batch)):
                if points is not None:
                    matrix = similarity_transform(points, self.template)
                    crops[start + offset] = warp(batch[offset], matrix, self.size)
                    found[start + offset] = True
            advance(len(batch))
        return crops, found

    def landmarks(self, photos: list[np.ndarray]) -> list[np.ndarray | None]:
        """The largest face's five landmarks (5, 2) in each photo's own pixels, or None."""
        scales = [min(1.0, DETECT_SIDE / max(photo.shape[:2])) for photo in photos]
        small = [_resized(photo, scale) for photo, scale in zip(photos, scales, strict=True)]
        try:
            rows = self._detect(small)
        except ValueError:  # MTCNN's pyramid fails on some tiny photos: try them one by one
            rows = np.concatenate([self._detect_one(photo, i) for i, photo in enumerate(small)] or [np.empty((0, 16))])
        result: list[np.ndarray | None] = []
        for index, scale in enumerate(scales):
            mine = rows[rows[:, 0] == index]
            if not len(mine):
                result.append(None)
                continue
            # Columns: image, x1, y1, x2, y2, confidence, 5 landmark xs, 5 landmark ys.
            best = mine[np.argmax((mine[:, 3] - mine[:, 1]) * (mine[:, 4] - mine[:, 2]))]
            result.append(np.stack([best[6:11], best[11:16]], axis=1) / scale)
        return result

    def _detect(self, photos: list[np.ndarray]) -> np.ndarray:
        rows = self.detector.detect_faces(photos, output_type="numpy", box_format="xyxy")
        return np.asarray(rows, np.float64).reshape(-1, 16)

    def _detect_one(self, photo: np.ndarray, index: int) -> np.ndarray:
        try:
            rows = self._detect([photo])
        except ValueError:
            return np.empty((0, 16))
        rows[:, 0] = index
        return rows


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the rotation, uniform scale and shift taking ``source`` points closest to ``target``.

    Umeyama (1991), least squares over the point pairs, without reflection.
    """
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best fit would mirror the face: forbid it
        signs[1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum() / centred_source.var(axis=0).sum())
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def warp(photo: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``photo`` warped by ``matrix`` (photo pixels -> crop pixels) into a ``size`` x ``size`` crop."""
    from PIL import Image

    # Pillow asks, for each crop pixel, where to read in the photo: the inverse map.
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2].ravel()
    picture = Image.fromarray(photo).transform(
        (size, size), Image.Transform.AFFINE, tuple(inverse), resample=Image.Resampling.BILINEAR
    )
    return np.asarray(picture, np.uint8)


def _decode(source: bytes) -> np.ndarray:
    """A photo file's bytes -> RGB uint8, upright (EXIF orientation applied), longest side <= WARP_SIDE."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(source)) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    picture.thumbnail((WARP_SIDE, WARP_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(picture, np.uint8)


def _resized(photo: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    if scale >= 1.0:
        return photo
    height, width = photo.shape[:2]
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(photo).resize(shape, Image.Resampling.BILINEAR))


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
