from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.fastfit import fit_classifier


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
