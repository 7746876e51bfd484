from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline.sdk.keras.augment import random_shift


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` (H, W, C) moved down ``dy`` and right ``dx`` cells, zeros coming in."""
    height, width = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def batch(n: int = 16) -> np.ndarray:
    return (np.arange(n * 5 * 6 * 3, dtype=np.float32) + 1).reshape(n, 5, 6, 3)  # every cell distinct, none 0


def test_each_map_moves_by_at_most_one_cell_and_keeps_its_shape() -> None:
    maps = batch()
    out = random_shift(1)(tf.constant(maps), tf.constant([7, 3], tf.int32)).numpy()
    assert out.shape == maps.shape
    moves = []
    for image, result in zip(maps, out, strict=True):
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if np.array_equal(result, shifted(image, dy, dx))]
        assert len(matches) == 1  # exactly one whole-cell shift of its own map, zeros filling in
        moves.append(matches[0])
    assert any(move != (0, 0) for move in moves)
    assert len(set(moves)) > 1  # each map has its own offset


def test_the_same_seed_gives_the_same_shifts_and_another_seed_others() -> None:
    shift, maps = random_shift(1), tf.constant(batch())
    first = shift(maps, tf.constant([1, 2], tf.int32)).numpy()
    np.testing.assert_array_equal(first, shift(maps, tf.constant([1, 2], tf.int32)).numpy())
    assert not np.array_equal(first, shift(maps, tf.constant([1, 3], tf.int32)).numpy())


def test_inside_a_graph_with_an_unknown_batch_size_the_shape_stays_known() -> None:
    signature = [tf.TensorSpec([None, 5, 6, 3]), tf.TensorSpec([2], tf.int32)]
    traced = tf.function(random_shift(2), input_signature=signature)
    out = traced(tf.constant(batch(4)), tf.constant([0, 0], tf.int32))
    assert traced.get_concrete_function().structured_outputs.shape.as_list() == [None, 5, 6, 3]
    assert out.shape == (4, 5, 6, 3)


def test_zero_cells_is_the_identity_and_negative_is_refused() -> None:
    maps = tf.constant(batch(2))
    np.testing.assert_array_equal(random_shift(0)(maps, tf.constant([0, 1], tf.int32)).numpy(), batch(2))
    with pytest.raises(ValueError, match="max_cells is -1; it must be 0 or more"):
        random_shift(-1)
