from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.sdk.keras import GroupedOptimizer, make_grouped_optimizer, random_shift
from pipeline.sdk.keras.fastfit import fit_classifier


def blobs(n_per_class: int, classes: int = 4, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per_class)
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def small_model(dim: int = 16, classes: int = 4) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((dim,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def test_overfits_one_batch(tmp_path: Path) -> None:
    x, y = blobs(8)
    model = small_model()
    outcome = fit_classifier(
        model,
        keras.optimizers.Adam(1e-2),
        (x, y),
        (x, y),
        epochs=60,
        batch_size=32,
        seed=0,
        checkpoint_dir=tmp_path,
        patience=None,
    )
    assert outcome.history["loss"][-1] < 0.05
    assert outcome.best_value == 1.0
    assert (tmp_path / "best.npz").exists() and (tmp_path / "latest.npz").exists()


def test_resume_continues_at_the_next_epoch(tmp_path: Path) -> None:
    train, val = blobs(20, seed=1), blobs(5, seed=2)
    seen: list[int] = []

    class Killed(Exception):
        pass

    def die_after_three(epoch: int, metrics: dict) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise Killed  # as if the process died right after epoch 2's checkpoint

    with pytest.raises(Killed):
        fit_classifier(
            small_model(),
            keras.optimizers.Adam(1e-3),
            train,
            val,
            epochs=8,
            batch_size=16,
            seed=3,
            checkpoint_dir=tmp_path,
            report=die_after_three,
            patience=None,
        )
    resumed: list[int] = []
    outcome = fit_classifier(
        small_model(),
        keras.optimizers.Adam(1e-3),
        train,
        val,
        epochs=8,
        batch_size=16,
        seed=3,
        checkpoint_dir=tmp_path,
        report=lambda e, m: resumed.append(e),
        patience=None,
    )
    assert seen == [0, 1, 2]
    assert resumed == [3, 4, 5, 6, 7]
    assert outcome.resumed_from == 3
    assert len(outcome.history["val_accuracy"]) == 8  # the history before the crash is kept


def _checkpointed_epoch(folder: Path) -> int | None:
    """The epoch ``latest.npz`` holds, or ``None`` when there is none."""
    if not (folder / "latest.npz").exists():
        return None
    with np.load(folder / "latest.npz") as npz:
        return int(json.loads(str(npz["meta"]))["epoch"])


@pytest.mark.parametrize(("every", "expected"), [(0.0, [0, 1, 2, 3, 4]), (3600.0, [None, None, None, None, 4])])
def test_the_checkpoint_is_written_at_most_every_checkpoint_seconds_and_after_the_last_epoch(
    tmp_path: Path, every: float, expected: list[int | None]
) -> None:
    """A kill loses at most ``checkpoint_seconds`` of epochs; what each epoch's report finds on disk."""
    train, val = blobs(20, seed=1), blobs(5, seed=2)
    found: list[int | None] = []
    fit_classifier(
        small_model(), keras.optimizers.Adam(1e-3), train, val, epochs=5, batch_size=16, seed=3,
        checkpoint_dir=tmp_path, report=lambda e, m: found.append(_checkpointed_epoch(tmp_path)),
        patience=None, checkpoint_seconds=every,
    )  # fmt: skip
    assert found == expected


def test_a_report_that_raises_between_writes_leaves_its_epoch_checkpointed(tmp_path: Path) -> None:
    """Pruned or stopped at epoch 2 with no write due: the retry still goes on at epoch 3."""
    train, val = blobs(20, seed=1), blobs(5, seed=2)

    def stop_at_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt  # as interrupts.Interrupted, or optuna.TrialPruned

    with pytest.raises(KeyboardInterrupt):
        fit_classifier(
            small_model(), keras.optimizers.Adam(1e-3), train, val, epochs=8, batch_size=16, seed=3,
            checkpoint_dir=tmp_path, report=stop_at_two, patience=None, checkpoint_seconds=3600.0,
        )  # fmt: skip
    assert _checkpointed_epoch(tmp_path) == 2


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    x, y = blobs(10)
    rng = np.random.default_rng(5)
    noise_val = (rng.normal(size=(40, 16)).astype(np.float32), rng.integers(0, 4, 40))
    model = small_model()
    outcome = fit_classifier(
        model,
        keras.optimizers.Adam(1e-2),
        (x, y),
        noise_val,
        epochs=200,
        batch_size=16,
        seed=0,
        checkpoint_dir=tmp_path,
        patience=3,
    )
    assert len(outcome.history["val_accuracy"]) <= outcome.best_epoch + 5
    predicted = model.predict(noise_val[0], verbose=0).argmax(axis=1)
    assert (predicted == noise_val[1]).mean() == pytest.approx(outcome.best_value)


def fit_until(tmp_path: Path, stop_after: int | None, lines: list[str], epochs: int = 6) -> tuple[list[int], object]:
    """Fit (killed after epoch ``stop_after`` when given); the epochs reported and the outcome."""
    seen: list[int] = []

    class Killed(Exception):
        pass

    def report(epoch: int, metrics: dict) -> None:
        seen.append(epoch)
        if epoch == stop_after:
            raise Killed

    try:
        outcome = fit_classifier(
            small_model(),
            keras.optimizers.Adam(1e-3),
            blobs(10, seed=1),
            blobs(5, seed=2),
            epochs=epochs,
            batch_size=16,
            seed=3,
            checkpoint_dir=tmp_path,
            report=report,
            patience=None,
            log=lines.append,
            checkpoint_seconds=0.0,  # every epoch: these tests are about which file a resume reads
        )
    except Killed:
        return seen, None
    return seen, outcome


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"PK\x03\x04 garbage" * 50),
    ],
)
def test_a_damaged_latest_checkpoint_resumes_from_the_previous_one(tmp_path: Path, damage) -> None:
    lines: list[str] = []
    fit_until(tmp_path, 2, lines)  # epochs 0, 1, 2 checkpointed: latest = 2, previous = 1
    latest = tmp_path / "latest.npz"
    damage(latest)
    resumed, outcome = fit_until(tmp_path, None, lines)
    assert resumed == [2, 3, 4, 5]  # from epoch 1's checkpoint: epoch 2 is redone, nothing else
    assert len(lines) == 1 and lines[0].startswith(f"checkpoint {latest}: damaged (")
    assert lines[0].endswith("); restarting the trial from its previous checkpoint")
    assert outcome.resumed_from == 2 and len(outcome.history["val_accuracy"]) == 6
    assert (tmp_path / "latest.npz.damaged").exists()


def test_a_checkpoint_of_another_model_is_not_restored(tmp_path: Path) -> None:
    lines: list[str] = []
    other = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, activation="softmax")])
    fit_classifier(
        other, keras.optimizers.Adam(1e-3), blobs(10), blobs(5), epochs=1, batch_size=16, seed=0,
        checkpoint_dir=tmp_path, patience=None,
    )  # fmt: skip
    (tmp_path / "latest.previous.npz").unlink(missing_ok=True)
    resumed, outcome = fit_until(tmp_path, None, lines, epochs=3)
    assert resumed == [0, 1, 2] and outcome.resumed_from is None  # from scratch
    assert len(lines) == 1 and "do not fit the model's" in lines[0] and lines[0].endswith("from scratch")


def test_a_kill_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path: Path) -> None:
    lines: list[str] = []
    fit_until(tmp_path, 2, lines)
    (tmp_path / "latest.npz").unlink()  # latest was moved to previous, the new one not yet in place
    resumed, _ = fit_until(tmp_path, None, lines)
    assert resumed == [2, 3, 4, 5] and lines == []


def test_the_defaults_give_the_numbers_they_gave_before_mirrors_and_augmentation(tmp_path: Path) -> None:
    model = small_model()
    outcome = fit_classifier(
        model, keras.optimizers.Adam(1e-2), blobs(20, seed=1), blobs(5, seed=2), epochs=4, batch_size=16, seed=3,
        checkpoint_dir=tmp_path, patience=None,
    )  # fmt: skip
    # Recorded with fastfit as it was before `mirrored`/`augment`/`epoch_seconds` (this machine's CPU);
    # rel 1e-6 leaves room for another CPU's float rounding, not for a different shuffle or batch.
    before = {
        "loss": [1.6928660869598389, 0.16597668826580048, 0.027638137340545654, 0.0034707332961261272],
        "accuracy": [0.4124999940395355, 0.9750000238418579, 1.0, 1.0],
        "val_loss": [1.415176510810852, 1.0682036876678467, 1.0445713996887207, 1.2231889963150024],
        "val_accuracy": [0.3499999940395355, 0.6000000238418579, 0.6000000238418579, 0.6500000357627869],
    }
    assert list(outcome.history) == list(before)
    for name, values in before.items():
        assert outcome.history[name] == pytest.approx(values, rel=1e-6), name
    assert float(np.sum(model.get_weights()[0])) == pytest.approx(-6.053595542907715, rel=1e-6)


def test_mirrors_equal_to_the_inputs_change_nothing(tmp_path: Path) -> None:
    """The mirror choice has its own generator: the shuffle, hence every batch, stays the plain fit's."""
    train, val = blobs(20, seed=1), blobs(5, seed=2)
    fits = []
    for name, mirrored in (("plain", None), ("mirrored", train[0].copy())):
        model = small_model()
        outcome = fit_classifier(
            model, keras.optimizers.Adam(1e-2), train, val, epochs=3, batch_size=16, seed=3,
            checkpoint_dir=tmp_path / name, patience=None, mirrored=mirrored,
        )  # fmt: skip
        fits.append((outcome.history, model.get_weights()))
    assert fits[0][0] == fits[1][0]
    for plain, mirrored in zip(fits[0][1], fits[1][1], strict=True):
        np.testing.assert_array_equal(plain, mirrored)


def recorder(batches: list[np.ndarray], seeds: list[list[int]]) -> object:
    """An ``augment`` that records every training batch and its seed, and changes nothing."""

    def record(batch: tf.Tensor, seed: tf.Tensor) -> np.int32:
        batches.append(batch.numpy().copy())
        seeds.append(seed.numpy().tolist())
        return np.int32(0)

    def augment(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        done = tf.py_function(record, [batch, seed], tf.int32)
        with tf.control_dependencies([done]):
            return tf.identity(batch)

    return augment


def test_each_example_comes_from_its_mirror_half_the_time_and_batches_get_seeded(tmp_path: Path) -> None:
    x, y = blobs(10)  # 40 examples: batches of 16, 16, 8
    marker = np.full_like(x, 99.0)
    batches: list[np.ndarray] = []
    seeds: list[list[int]] = []
    fit_classifier(
        small_model(), keras.optimizers.Adam(1e-3), (x, y), blobs(5, seed=2), epochs=2, batch_size=16, seed=3,
        checkpoint_dir=tmp_path, patience=None, mirrored=marker, augment=recorder(batches, seeds),
    )  # fmt: skip
    assert [len(b) for b in batches] == [16, 16, 8, 16, 16, 8]  # training batches only, never validation
    for epoch in range(2):
        seen = np.concatenate(batches[3 * epoch : 3 * epoch + 3])
        order = np.random.default_rng([3, epoch]).permutation(40)  # the shuffle of a fit without mirrors
        flip = np.random.default_rng([3, epoch, 1]).integers(0, 2, 40).astype(bool)
        np.testing.assert_array_equal(seen, np.where(flip[order][:, None], 99.0, x[order]))
        assert 12 <= flip.sum() <= 28  # about half the examples mirrored
        assert [s[1] for s in seeds[3 * epoch : 3 * epoch + 3]] == [0, 1, 2]  # the batch's index
    assert seeds[0][0] == seeds[1][0] == seeds[2][0] != seeds[3][0]  # the epoch's part


def test_mirrors_of_another_shape_are_refused(tmp_path: Path) -> None:
    x, y = blobs(4)
    with pytest.raises(ValueError, match=r"mirrored must have the training inputs' shape: mirrored \(15, 16\)"):
        fit_classifier(
            small_model(), keras.optimizers.Adam(1e-3), (x, y), (x, y), epochs=1, batch_size=8, seed=0,
            checkpoint_dir=tmp_path, mirrored=x[:15],
        )  # fmt: skip


def feature_maps(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached "block outputs": (n, 4, 4, 8) maps, one pattern per class plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(4, 4, 4, 8)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    return patterns[labels] + rng.normal(size=(n, 4, 4, 8)).astype(np.float32), labels


def fine_tune(tmp_path: Path, epochs: int) -> tuple[object, keras.Model, GroupedOptimizer]:
    """A trainable conv "block" and a dense head with dropout, fit with mirrors, shifts, two learning rates."""
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.Input((4, 4, 8)), keras.layers.Conv2D(8, 3, padding="same", activation="relu")])
    head = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(block(inputs))))
    optimizer = make_grouped_optimizer("adam", [(1e-3, block.trainable_variables), (1e-2, head.trainable_variables)])
    train = feature_maps(48, seed=1)
    outcome = fit_classifier(
        model, optimizer, train, feature_maps(16, seed=2), epochs=epochs, batch_size=16, seed=5,
        checkpoint_dir=tmp_path, patience=None, mirrored=train[0][:, :, ::-1, :].copy(), augment=random_shift(1),
    )  # fmt: skip
    return outcome, model, optimizer


def test_a_resumed_fine_tune_ends_exactly_where_an_unbroken_one_does(tmp_path: Path) -> None:
    whole, whole_model, whole_optimizer = fine_tune(tmp_path / "whole", epochs=6)
    fine_tune(tmp_path / "split", epochs=3)
    resumed, resumed_model, resumed_optimizer = fine_tune(tmp_path / "split", epochs=6)  # new model and optimizers
    assert resumed.resumed_from == 3 and whole.resumed_from is None
    # Exact, not close: same ops on the same inputs in the same order on one CPU give the same bits.
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    for a, b in zip(whole_model.get_weights(), resumed_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole_optimizer.variables, resumed_optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # both optimizers' moments and step counts
    assert [int(o.iterations.numpy()) for o in resumed_optimizer.optimizers] == [18, 18]  # 6 epochs x 3 batches


def test_epoch_seconds_are_reported_and_kept_apart_from_the_history(tmp_path: Path) -> None:
    reported: list[dict] = []

    def fit(epochs: int) -> object:
        return fit_classifier(
            small_model(), keras.optimizers.Adam(1e-3), blobs(10, seed=1), blobs(5, seed=2), epochs=epochs,
            batch_size=16, seed=3, checkpoint_dir=tmp_path, patience=None, report=lambda e, m: reported.append(dict(m)),
        )  # fmt: skip

    first = fit(2)
    outcome = fit(4)  # resumed at epoch 2: the first two epochs' times come from the checkpoint
    assert list(outcome.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(set(m) == {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"} for m in reported)
    assert len(outcome.epoch_seconds) == 4 and all(s > 0 for s in outcome.epoch_seconds)
    assert outcome.epoch_seconds[:2] == first.epoch_seconds == [m["epoch_seconds"] for m in reported[:2]]
    assert outcome.epoch_seconds[2:] == [m["epoch_seconds"] for m in reported[2:]]
