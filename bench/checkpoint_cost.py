"""What writing ``latest.npz`` after every epoch costs a head trial, against at most once a second.

Why ``fit_classifier`` writes its checkpoint at most every ``checkpoint_seconds``: each write
holds the weights, the optimizer's two Adam moments and the best epoch's weights, with a
SHA-256 and an fsync, and a head's epoch on cached features is only 10-120 ms. Synthetic
features of LFW-62's shapes (512-d, 62 classes, 1813 train / 605 validation), batch 128,
30 epochs; three head sizes; both ways interleaved, ``--repeats`` times each; the first fit of
each size warms TensorFlow and is left out.

Run: ``.venv/bin/python -m bench.checkpoint_cost`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.head_epoch import _data  # noqa: E402

HEADS = {"linear": [], "1 x 284": [284], "4 x 500-176": [500, 494, 174, 176]}


def _fit(units: list[int], every: float, data: tuple, epochs: int, batch: int) -> tuple[float, int]:
    """One fit's seconds and how many checkpoints it wrote (``latest.npz`` and its predecessor rotate)."""
    import keras

    from pipeline.sdk.keras import fastfit

    layers: list[object] = [keras.Input((512,))]
    for width in units:
        layers += [keras.layers.Dense(width, activation="elu"), keras.layers.Dropout(0.15)]
    model = keras.Sequential([*layers, keras.layers.Dense(62, activation="softmax")])
    folder = Path(tempfile.mkdtemp(prefix="ckpt-cost-"))
    writes = 0
    save = fastfit._save

    def counted(*args: object, **kwargs: object) -> None:
        nonlocal writes
        writes += 1
        save(*args, **kwargs)  # type: ignore[arg-type]

    fastfit._save = counted  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        fastfit.fit_classifier(model, keras.optimizers.Adam(1e-3), data[0], data[1], epochs=epochs, batch_size=batch,
                               seed=1, checkpoint_dir=folder, patience=None, checkpoint_seconds=every)  # fmt: skip
        return time.perf_counter() - started, writes
    finally:
        fastfit._save = save  # type: ignore[assignment]


def main() -> None:
    """Print, per head, the median seconds per trial each way and the share the checkpoints took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = _data(62, 1813)
    data = (data[0], (data[1][0][:605], data[1][1][:605]))
    print(f"{args.epochs} epochs, batch {args.batch}, 1813 x 512 train, 605 validation, 62 classes")
    for name, units in HEADS.items():
        _fit(units, 0.0, data, 2, args.batch)  # warm-up: TensorFlow's first graph of this shape
        times: dict[float, list[float]] = {0.0: [], 1.0: []}
        writes: dict[float, int] = {}
        for _ in range(args.repeats):
            for every in times:  # interleaved: both ways see the same machine
                seconds, writes[every] = _fit(units, every, data, args.epochs, args.batch)
                times[every].append(seconds)
        each, once = statistics.median(times[0.0]), statistics.median(times[1.0])
        ranges = "/".join(f"{min(values):.2f}-{max(values):.2f}" for values in times.values())
        saved = f"saved {each - once:.2f} s = {(each - once) / each:.0%} (ranges {ranges})"
        print(f"  {name:12s} every epoch {each:.2f} s ({writes[0.0]} writes) | at most 1/s {once:.2f} s "
              f"({writes[1.0]} writes) | {saved}")  # fmt: skip


if __name__ == "__main__":
    main()
