"""Face detection and alignment of one photo or a batch: the part training and serving share.

MTCNN (the ``mtcnn`` package, MIT, weights inside the wheel) finds the faces; the largest
face's five landmarks (eyes, nose, mouth corners) are mapped onto ArcFace's 112x112 template
scaled to the crop size by a similarity transform (rotation, uniform scale, shift: Umeyama's
closed form), and the photo is warped into that crop.

Detection runs on a copy whose longest side is at most ``DETECT_SIDE``: MTCNN's cost grows
with the pixel count, and a face filling a tenth of a photo is still found at that size. The
warp reads the photo itself (bounded at ``WARP_SIDE``), so the crop keeps its detail.

This file imports numpy, Pillow and mtcnn only, never ``pipeline``: the registered model
carries it (MLflow ``code_paths``) so that a served photo is aligned by the same code, with
the same constants, as the training photos were (``serving.py``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# ArcFace / InsightFace 112x112 template: left eye, right eye, nose, left and right mouth corner
# (image left/right, as MTCNN names them).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
DETECTOR = "mtcnn==1.0.0"
DETECT_SIDE = 128  # px: 4.7x the speed of LFW's 250 px (batched, 2 busy cores), same faces found
WARP_SIDE = 1024  # px: larger photos are reduced first; a 96 px crop needs no more
BATCH = 32  # photos decoded and reported as done at a time; MTCNN sees one at a time
# Photos detected at once, each alone in its own MTCNN call: its small networks leave the cores
# idle between calls, and a second and third call fill them (LFW, 2 cores: 57 -> 82 img/s with
# 3, crops bit-identical to one at a time).
DETECT_THREADS = min(8, (os.cpu_count() or 1) + 1)


class FaceAligner:
    """MTCNN on batches of photos, then a similarity warp of each photo's largest face.

    Args:
        size: the side of the square crops.
        threads: photos detected at once (each alone in its own MTCNN call).

    Example::

        crops, found = FaceAligner(96).align([rgb_uint8_photo, ...])
    """

    def __init__(self, size: int, threads: int = DETECT_THREADS) -> None:
        from mtcnn import MTCNN

        self.size = size
        self.template = ARCFACE_112 * (size / 112.0)
        self.detector = MTCNN(stages=_compiled_stages(), device="CPU:0")
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mtcnn")

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
        # One photo a call: MTCNN's refine stages put the whole batch's candidate boxes through
        # one network call and one sort, and a photo's landmarks moved with its batch-mates
        # (0.7 px, a crop 30 grey levels off). Alone, a served photo is aligned exactly as it
        # was in training; compiled stages (below) make it 4x the speed of eager single calls.
        detections = self._pool.map(self._detect, [_resized(p, s) for p, s in zip(photos, scales, strict=True)])
        result: list[np.ndarray | None] = []
        for mine, scale in zip(detections, scales, strict=True):
            if not len(mine):
                result.append(None)
                continue
            # Columns: image, x1, y1, x2, y2, confidence, 5 landmark xs, 5 landmark ys.
            best = mine[np.argmax((mine[:, 3] - mine[:, 1]) * (mine[:, 4] - mine[:, 2]))]
            result.append(np.stack([best[6:11], best[11:16]], axis=1) / scale)
        return result

    def _detect(self, photo: np.ndarray) -> np.ndarray:
        """MTCNN's rows for one photo: image, x1, y1, x2, y2, confidence, 5 landmark xs, 5 ys."""
        try:
            rows = self.detector.detect_faces([photo], output_type="numpy", box_format="xyxy")
        except ValueError:  # MTCNN's pyramid fails on some tiny photos: no face found
            return np.empty((0, 16))
        return np.asarray(rows, np.float64).reshape(-1, 16)


def _compiled_stages() -> list[Any]:
    """MTCNN's three networks, each called through one compiled graph instead of eagerly.

    A photo a call means eight network calls a photo (six pyramid scales, refine, output), and
    Keras' eager call overhead was most of the time. Every input dimension but the channels is
    left open, so each graph is traced once whatever the photo sizes and call order: a photo
    goes through the same graph in training and in serving.
    """
    import tensorflow as tf
    from mtcnn.stages import StageONet, StagePNet, StageRNet

    stages = [StagePNet(), StageRNet(), StageONet()]
    for stage, side in zip(stages, (None, 24, 48), strict=True):
        network = stage.model
        spec = tf.TensorSpec([None, side, side, 3], tf.float32)
        stage._model = tf.function(network, input_signature=[spec])  # the stages call self._model(x)
    return stages


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


def decode_photo(source: bytes) -> np.ndarray:
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
