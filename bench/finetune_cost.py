"""What fine-tuning VGG16's top blocks costs on cached block outputs (issue 15), against a head and a VGG16 pass.

On LFW-62 at 96 px with the face weights (the face model's own split), it measures:

- one VGG16 pass (pooled features) over the train split: what every epoch would cost if the
  frozen blocks ran each time, forward only;
- the prefix passes whose outputs a fine-tuning search caches once (block 4's pool for
  ``fine_tune_blocks: 1``, block 3's for ``2``), and the memory those outputs take for all faces;
- the seconds per epoch of a head trial (1 x 256 on the pooled features), a block-5 trial and a
  blocks-4-and-5 trial (each with that head, batch 32, Adam, the face model's own builders),
  median of the epochs after the first (the first traces the graph); the three kinds run in
  rotation, ``--rounds`` times, so they share the same load, and the load average is recorded.

Run: ``.venv/bin/python -m bench.finetune_cost`` (about 10 min on 2 cores); writes
``bench/results/<date>-finetune-cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import face_modules, load_split
from bench.env import REPO, BenchEnv, default_weights, machine_header

KINDS = ("head", "block5", "blocks4-5")
BLOCKS = {"head": 0, "block5": 1, "blocks4-5": 2}


def _timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def epoch_seconds(kind: str, inputs: dict[int, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                  base: Any, n_classes: int, epochs: int) -> list[float]:  # fmt: skip
    """Seconds per epoch of one trial of ``kind`` (a fresh model, a fresh checkpoint folder)."""
    import keras

    from pipeline.sdk.keras import dense_classifier, fit_classifier, make_grouped_optimizer, make_optimizer

    finetune = sys.modules[face_modules()[2].__name__.rsplit(".", 1)[0] + ".finetune"]
    blocks = BLOCKS[kind]
    keras.utils.set_random_seed(0)
    params = {"n_layers": 1, "units": [256], "dropout": 0.2, "activation": "relu"}
    head = dense_classifier([keras.Input((512,))], params, n_classes, finetune.HEAD_NAME)
    if blocks == 0:
        model, optimizer = head, make_optimizer("adam", 1e-3)
    else:
        top = finetune.top_blocks(base, blocks)
        x = keras.Input(top.input.shape[1:])
        model = keras.Model(x, head(keras.layers.GlobalAveragePooling2D()(top(x))))
        optimizer = make_grouped_optimizer("adam", [(1e-5, top.trainable_variables), (1e-3, head.trainable_variables)])
    with tempfile.TemporaryDirectory(prefix="finetune-cost-") as folder:
        outcome = fit_classifier(
            model, optimizer, (inputs[blocks]["train"], labels["train"]), (inputs[blocks]["val"], labels["val"]),
            epochs=epochs, batch_size=32, seed=0, checkpoint_dir=Path(folder), patience=None,
        )  # fmt: skip
    return [float(s) for s in outcome.epoch_seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3, help="per trial; the first (tracing) is not counted")
    parser.add_argument("--rounds", type=int, default=2, help="rotations of head, block5, blocks4-5")
    parser.add_argument("--weights", type=Path, default=default_weights())
    args = parser.parse_args()

    bench = BenchEnv()
    os.environ.update(bench.env())
    header = machine_header(sys.argv, args.weights)
    _, _, backbone = face_modules()
    split, load_s = _timed(lambda: load_split("lfw", args.size, 42))
    base = backbone.load_base(str(args.weights), args.size, 0)
    train = split.images["train"]
    n_images = sum(len(v) for v in split.images.values())
    record: dict[str, Any] = {"header": header, "size": args.size, "n_images": n_images, "n_train": len(train),
                              "n_classes": split.n_classes, "load_seconds": load_s}  # fmt: skip

    # One full VGG16 pass over the train split (pooled features), then the prefixes a search caches.
    inputs: dict[int, dict[str, np.ndarray]] = {}
    features = backbone.feature_extractor(base)
    features(train[:32])  # trace once, outside the timing
    _, record["vgg16_pass_train_s"] = _timed(lambda: features(train))
    inputs[0] = {name: features(images) for name, images in split.images.items()}
    memory: dict[str, float] = {}
    for blocks, layer in backbone.CUT_LAYERS.items():
        prefix = backbone.block_extractor(base, layer, mirror=False)
        prefix(train[:32])
        _, record[f"{layer}_pass_train_s"] = _timed(lambda prefix=prefix: prefix(train))
        inputs[blocks] = {name: prefix(images) for name, images in split.images.items()}
        every = sum(array.nbytes for array in inputs[blocks].values())
        memory[layer] = every / 1e6
        record[f"{layer}_shape"] = list(inputs[blocks]["train"].shape[1:])
    record["cached_mb_all_faces"] = memory

    runs: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        for kind in KINDS:
            before = os.getloadavg()[0]
            seconds = epoch_seconds(kind, inputs, split.labels, base, split.n_classes, args.epochs)
            runs.append({"round": round_number, "kind": kind, "epoch_seconds": seconds,
                         "load_before": before, "load_after": os.getloadavg()[0]})  # fmt: skip
            print(f"round {round_number} {kind}: {[round(s, 2) for s in seconds]} s/epoch", flush=True)
    record["runs"] = runs
    record["median_epoch_s"] = {
        kind: statistics.median(s for run in runs if run["kind"] == kind for s in run["epoch_seconds"][1:])
        for kind in KINDS
    }
    bench.cleanup()
    write(record)


def write(record: dict[str, Any]) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    out = REPO / "bench" / "results" / f"{stamp}-finetune-cost"
    out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=float))
    median, vgg = record["median_epoch_s"], record["vgg16_pass_train_s"]
    loads = [run[k] for run in record["runs"] for k in ("load_before", "load_after")]
    lines = [
        f"# Fine-tuning cost on cached block outputs: LFW-62 at {record['size']} px, face weights",
        "",
        f"`{record['header']['command']}` on {record['header']['cpu_count']} cores, "
        f"load average {min(loads):.1f}-{max(loads):.1f} during the epochs. "
        f"{record['n_images']} faces, {record['n_train']} in the train split, {record['n_classes']} people.",
        "",
        "| trial kind | trains | input (cached) | s / epoch (median) | vs head | vs one VGG16 pass over train |",
        "|---|---|---|---|---|---|",
    ]
    shapes = {"head": "pooled features 512", "block5": "block4_pool " + "x".join(map(str, record["block4_pool_shape"])),
              "blocks4-5": "block3_pool " + "x".join(map(str, record["block3_pool_shape"]))}  # fmt: skip
    trains = {"head": "head", "block5": "block 5 + head", "blocks4-5": "blocks 4, 5 + head"}
    for kind in KINDS:
        lines.append(
            f"| {kind} | {trains[kind]} | {shapes[kind]} | {median[kind]:.2f} | {median[kind] / median['head']:.0f}x "
            f"| {median[kind] / vgg:.2f}x |"
        )
    lines += [
        "",
        f"One VGG16 pass over the train split (forward only, pooled): {vgg:.1f} s. Prefix passes cached once: "
        f"block4_pool {record['block4_pool_pass_train_s']:.1f} s, "
        f"block3_pool {record['block3_pool_pass_train_s']:.1f} s (train split; the search extracts every split once).",
        "",
        "Memory of the cached outputs for all faces (float32): "
        + ", ".join(f"{layer} {mb:.0f} MB" for layer, mb in record["cached_mb_all_faces"].items())
        + "; `data.flip` doubles the train split's share.",
        "",
        "Each row: every epoch after the first of every round (the first traces the graph); the kinds ran in "
        f"rotation, {max(run['round'] for run in record['runs']) + 1} rounds. "
        "Raw numbers: the `.json` beside this file.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
