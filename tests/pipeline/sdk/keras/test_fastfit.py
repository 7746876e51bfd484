from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

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
