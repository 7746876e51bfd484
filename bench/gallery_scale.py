"""What the face head costs as the gallery grows: seconds per epoch, peak memory, storage.

The search trains a softmax head on cached 512-d VGG16 features, so what grows with the
number of people P (k images each) is the training set (P*k vectors), the softmax layer
(256*P weights) and the cache (P*k*512 float32). This measures the default head (one
256-unit layer, Adam, batch 32, ``pipeline.sdk.keras.fastfit``: the search's own trainer)
for each P, every size in its own process so peak memory is that size's alone.

The vectors are synthetic (class centres plus noise, VGG16's feature shape): they time the
training and size the memory, they say nothing about accuracy. Extraction, the other cost
that grows with the gallery, is measured by the main benchmark (``bench/README.md``).

Run (about 10 minutes on 2 cores)::

    .venv/bin/python -m bench.gallery_scale                     # P = 62 ... 16000, 20 images each
    .venv/bin/python -m bench.gallery_scale --people 62,1000 --epochs 2

Writes ``bench/results/<date>-gallery.{jsonl,md,png}``; docs/scale.md reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
FEATURES = 512  # VGG16's pooled output
UNITS = 256  # the face model's default head


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def measure(people: int, images: int, epochs: int) -> dict[str, Any]:
    """Train the default head on P people x k synthetic vectors (60/20/20); time and memory."""
    import keras

    from pipeline.sdk.keras.fastfit import fit_classifier

    baseline = _peak_mib()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(people, FEATURES)).astype(np.float32) * 2
    train_n, val_n = round(images * 0.6), round(images * 0.2)
    y = np.repeat(np.arange(people), train_n)
    yv = np.repeat(np.arange(people), val_n)
    x = centres[y] + rng.normal(size=(len(y), FEATURES)).astype(np.float32)
    xv = centres[yv] + rng.normal(size=(len(yv), FEATURES)).astype(np.float32)
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(UNITS, activation="relu"), keras.layers.Dropout(0.2)]
        + [keras.layers.Dense(people, activation="softmax")]
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        fit_classifier(
            model,
            keras.optimizers.Adam(1e-3),
            (x, y),
            (xv, yv),
            epochs=epochs,
            batch_size=32,
            seed=0,
            checkpoint_dir=Path(folder),
            patience=None,
        )
    seconds = time.perf_counter() - started
    return {
        "record": "size",
        "people": people,
        "images_per_person": images,
        "train_vectors": int(len(y)),
        "val_vectors": int(len(yv)),
        "epochs": epochs,
        "seconds_per_epoch": seconds / epochs,  # tracing of the first epoch included
        "head_parameters": int(model.count_params()),
        "features_mib": people * images * FEATURES * 4 / 2**20,
        "peak_mib": _peak_mib(),
        "baseline_mib": baseline,
        "load_avg": os.getloadavg(),
    }


def _run_one(people: int, images: int, epochs: int, timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.gallery_scale", "--one", str(people), "--images", str(images)]
    command += ["--epochs", str(epochs)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"record": "size", "people": people, "cut_by_budget": f"{timeout:.0f} s", "load_avg": os.getloadavg()}
    if done.returncode != 0:
        raise RuntimeError(f"P={people} failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_seconds"] = time.perf_counter() - started
    return row


def _markdown(header: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Gallery scale: the face head against the number of people ({header['date']})",
        "",
        f"Command: `{header['command']}`. Machine: {header['machine']}, {header['cpu_count']} cores, "
        f"load average at start {header['load_avg_at_start'][0]:.2f}. Synthetic 512-d vectors "
        "(timing and memory only); default head (1 x 256, Adam, batch 32, fastfit); 60/20/20 split.",
        "",
        "| people | train vectors | head parameters | s / epoch | peak MiB (process) | features MiB | load avg |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "cut_by_budget" in row:
            cut = f"**cut by the {row['cut_by_budget']} budget: not a result**"
            lines.append(f"| {row['people']} | — | — | {cut} | | | |")
            continue
        lines.append(
            f"| {row['people']} | {row['train_vectors']} | {row['head_parameters']:,} | "
            f"{row['seconds_per_epoch']:.2f} | {row['peak_mib']:.0f} | {row['features_mib']:.1f} | "
            f"{row['load_avg'][0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "seconds_per_epoch" in r]
    people = [r["people"] for r in done]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.loglog(people, [r["seconds_per_epoch"] for r in done], "o-")
    left.set(xlabel="people (20 images each)", ylabel="seconds per epoch", title="head training")
    right.loglog(people, [r["peak_mib"] for r in done], "o-", label="peak RSS")
    right.loglog(people, [r["features_mib"] for r in done], "s--", label="cached features")
    right.set(xlabel="people", ylabel="MiB", title="memory and storage")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", default="62,250,1000,4000,16000", help="gallery sizes, comma-separated")
    parser.add_argument("--images", type=int, default=20, help="images per person")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1800, help="seconds per size; a size over it is cut")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.images, args.epochs)))
        return
    from bench.env import machine_header

    header = machine_header(sys.argv, Path("/nonexistent"))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for people in (int(p) for p in args.people.split(",")):
        row = _run_one(people, args.images, args.epochs, args.budget)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = RESULTS / f"{stamp}-gallery"
    base.with_suffix(".jsonl").write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    base.with_suffix(".md").write_text(_markdown(header, rows))
    _plot(rows, base.with_suffix(".png"))
    print(f"wrote {base}.jsonl, .md, .png")


if __name__ == "__main__":
    main()
