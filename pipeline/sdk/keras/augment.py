"""Augmentations of cached feature maps, for ``fit_classifier(augment=...)``.

A frozen prefix's output is cached once, so image-space augmentation (crops, colour, small
rotations) would need the prefix run again per epoch. What stays cheap is augmenting the
cached block output itself: shifting a (H, W, C) feature map by whole cells approximates
translating the image by the block's stride (16 px for VGG16's block 4 output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def random_shift(max_cells: int = 1) -> Callable[[Any, Any], Any]:
    """An ``augment(batch, seed)`` shifting each feature map by up to ``max_cells`` cells.

    Each map of the batch (N, H, W, C) is padded with ``max_cells`` zero cells on every side
    and cropped back to (H, W) at its own offset, drawn with ``tf.random.stateless_uniform``
    from ``seed``: the same seed gives the same shifts, so a resumed fit is exact.

    Raises:
        ValueError: ``max_cells`` below 0.
    """
    if max_cells < 0:
        raise ValueError(f"random_shift: max_cells is {max_cells}; it must be 0 or more")

    def shift(batch: Any, seed: Any) -> Any:
        import tensorflow as tf

        if max_cells == 0:
            return batch
        height, width = batch.shape[1], batch.shape[2]
        margin = [[0, 0], [max_cells, max_cells], [max_cells, max_cells], [0, 0]]
        padded = tf.pad(batch, margin)
        # Per map, the padded row/column where its crop starts: max_cells means no shift.
        starts = tf.random.stateless_uniform(
            [tf.shape(batch)[0], 2], seed, minval=0, maxval=2 * max_cells + 1, dtype=tf.int32
        )
        rows = starts[:, :1] + tf.range(height)[None, :]  # (N, H)
        cols = starts[:, 1:] + tf.range(width)[None, :]  # (N, W)
        cropped = tf.gather(padded, rows, axis=1, batch_dims=1)  # (N, H, W + 2m, C)
        return tf.gather(cropped, cols, axis=2, batch_dims=1)  # (N, H, W, C)

    return shift
