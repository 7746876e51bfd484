"""Per-epoch cost of training a dense head on cached features: Keras ``fit`` against ``fastfit``.

Why ``pipeline/fastfit.py`` exists: on a few hundred feature vectors ``model.fit`` spends most
of each epoch in its own machinery. Run: ``.venv/bin/python -m bench.head_epoch`` (about a
minute on 2 cores). Synthetic features of the face model's shape (512-d, 40 classes, 240
train / 80 validation, as Olivetti's split), batch 32, 30 epochs, one 256-unit layer.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 512)) * 2
    y, yv = np.repeat(np.arange(40), 6), np.repeat(np.arange(40), 2)
    x = (centres[y] + rng.normal(size=(len(y), 512))).astype(np.float32)
    xv = (centres[yv] + rng.normal(size=(len(yv), 512))).astype(np.float32)
    return (x, y), (xv, yv)


def _head() -> object:
    import keras

    return keras.Sequential(
        [
            keras.Input((512,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(40, activation="softmax"),
        ]
    )


def main(epochs: int = 30, repeats: int = 3) -> None:
    """Print the median seconds per trial and per epoch of both ways."""
    import keras

    from pipeline.fastfit import fit_classifier

    train, val = _data()
    fit_times, fast_times = [], []
    for _ in range(repeats):
        model = _head()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        started = time.perf_counter()
        model.fit(*train, validation_data=val, epochs=epochs, batch_size=32, verbose=0)
        fit_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            fit_classifier(
                _head(),
                keras.optimizers.Adam(1e-3),
                train,
                val,
                epochs=epochs,
                batch_size=32,
                seed=0,
                checkpoint_dir=Path(folder),
                patience=None,
            )
        fast_times.append(time.perf_counter() - started)
    for name, times in (("keras fit", fit_times), ("fastfit", fast_times)):
        median = float(np.median(times))
        print(
            f"{name:10s} {epochs} epochs: {median:.2f} s per trial, {1000 * median / epochs:.1f} ms per epoch "
            f"(median of {repeats}; includes tracing and, for fastfit, a checkpoint per epoch)"
        )


if __name__ == "__main__":
    main()
