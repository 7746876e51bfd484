"""Per-epoch cost of training a dense head on cached features: Keras ``fit`` against ``fastfit``.

Why ``pipeline/sdk/keras/fastfit.py`` exists: on a few hundred feature vectors ``model.fit`` spends most
of each epoch in its own machinery. Run: ``.venv/bin/python -m bench.head_epoch`` (about a
minute on 2 cores). Synthetic features of the face model's shape (512-d, 40 classes, 240
train / 80 validation, as Olivetti's split), batch 32, 30 epochs, one 256-unit layer.

What a head's size costs (why the face model searches at most 512 units, batches from 32):
``python -m bench.head_epoch --fastfit-only --classes 62 --train 2115 --units 1024,1024,1024,1024,1024 --batch 16``
against ``--units 256 --batch 32`` (LFW-62's shapes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _data(classes: int, train: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, 512)) * 2
    y = np.arange(train) % classes
    yv = np.arange(max(train // 3, classes)) % classes
    x = (centres[y] + rng.normal(size=(len(y), 512))).astype(np.float32)
    xv = (centres[yv] + rng.normal(size=(len(yv), 512))).astype(np.float32)
    return (x, y), (xv, yv)


def _head(units: list[int], classes: int) -> object:
    import keras

    layers: list[object] = [keras.Input((512,))]
    for width in units:
        layers += [keras.layers.Dense(width, activation="relu"), keras.layers.Dropout(0.2)]
    return keras.Sequential([*layers, keras.layers.Dense(classes, activation="softmax")])


def main() -> None:
    """Print the median seconds per trial and per epoch of each way."""
    import keras

    from pipeline.sdk.keras.fastfit import fit_classifier

    parser = argparse.ArgumentParser(description="Keras fit against fastfit on cached feature vectors.")
    parser.add_argument("--units", default="256", help="widths of the dense layers, comma-separated")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--train", type=int, default=240, help="training vectors")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fastfit-only", action="store_true")
    args = parser.parse_args()
    units = [int(u) for u in args.units.split(",")]
    train, val = _data(args.classes, args.train)
    times: dict[str, list[float]] = {"keras fit": [], "fastfit": []}
    for _ in range(args.repeats):
        if not args.fastfit_only:
            model = _head(units, args.classes)
            model.compile(  # type: ignore[attr-defined]
                optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
            started = time.perf_counter()
            model.fit(*train, validation_data=val, epochs=args.epochs, batch_size=args.batch, verbose=0)  # type: ignore[attr-defined]
            times["keras fit"].append(time.perf_counter() - started)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            fit_classifier(
                _head(units, args.classes),
                keras.optimizers.Adam(1e-3),
                train,
                val,
                epochs=args.epochs,
                batch_size=args.batch,
                seed=0,
                checkpoint_dir=Path(folder),
                patience=None,
            )
        times["fastfit"].append(time.perf_counter() - started)
    print(f"head {units} x {args.classes} classes, {len(train[1])} vectors, batch {args.batch}, {args.epochs} epochs:")
    for name, values in times.items():
        if values:
            median = float(np.median(values))
            print(
                f"  {name:10s} {median:.2f} s per trial, {1000 * median / args.epochs:.1f} ms per epoch "
                f"(median of {args.repeats}; tracing included, and for fastfit a checkpoint per epoch)"
            )


if __name__ == "__main__":
    main()
