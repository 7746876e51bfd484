from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.sdk.keras import GroupedOptimizer, fit_classifier, make_grouped_optimizer


def two_part_model() -> tuple[keras.Model, keras.Model, keras.Model]:
    """A "block" (pretend pretrained) feeding a head; the whole model and both parts."""
    keras.utils.set_random_seed(0)
    hidden, out = keras.layers.Dense(12, activation="relu", name="hidden"), keras.layers.Dense(4, name="out")
    block = keras.Sequential([keras.Input((16,)), hidden], name="block")
    head = keras.Sequential([keras.Input((12,)), out, keras.layers.Softmax()], name="head")
    inputs = keras.Input((16,))
    return keras.Model(inputs, head(block(inputs))), block, head


def blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 10)
    return (rng.normal(size=(4, 16))[labels] * 3 + rng.normal(size=(40, 16))).astype(np.float32), labels


def test_a_zero_learning_rate_group_stays_put_while_the_other_learns(tmp_path: Path) -> None:
    model, block, head = two_part_model()
    before_block, before_head = block.get_weights(), head.get_weights()
    optimizer = make_grouped_optimizer("adam", [(0.0, block.trainable_variables), (1e-2, head.trainable_variables)])
    fit_classifier(
        model, optimizer, blobs(1), blobs(1), epochs=3, batch_size=16, seed=0, checkpoint_dir=tmp_path, patience=None
    )
    for old, new in zip(before_block, block.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert all(not np.array_equal(old, new) for old, new in zip(before_head, head.get_weights(), strict=True))
    assert [int(o.iterations.numpy()) for o in optimizer.optimizers] == [9, 9]  # 3 epochs x 3 batches each


def test_a_variable_in_no_group_is_named() -> None:
    model, _, head = two_part_model()
    optimizer = GroupedOptimizer([(keras.optimizers.Adam(1e-3), head.trainable_variables)])
    with pytest.raises(ValueError, match=r"variable 'block/hidden/kernel' is in no optimizer group; add it to one"):
        optimizer.build(model.trainable_variables)


def test_a_variable_in_two_groups_is_refused() -> None:
    _, block, head = two_part_model()
    twice = [*block.trainable_variables, *head.trainable_variables]
    with pytest.raises(ValueError, match=r"variable 'head/out/kernel' is in optimizer groups 0 and 1"):
        make_grouped_optimizer("sgd", [(1e-3, twice), (1e-2, head.trainable_variables)])


def test_variables_are_every_optimizers_in_group_order() -> None:
    model, block, head = two_part_model()
    first, second = keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam(1e-3)
    optimizer = GroupedOptimizer([(first, block.trainable_variables), (second, head.trainable_variables)])
    optimizer.build(model.trainable_variables)
    assert [id(v) for v in optimizer.variables] == [id(v) for v in (*first.variables, *second.variables)]
    assert len(second.variables) == 2 + 2 * 2  # iterations, learning rate; two moments per head variable
