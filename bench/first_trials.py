"""How good is a model's first guess: each ``tune.first_trials`` entry trained over several seeds.

The face model's first trials are linear softmax heads on the cached pooled features
(``n_layers: 0``). This trains each entry of ``model.yaml``'s ``tune.first_trials`` (and
``--entry`` ones) with the model's own ``prepare`` and ``train``, on the split a study with
``--split-seed`` makes, once per trial seed, and prints the validation accuracy of each run,
how many reached ``--goal`` and the median seconds per trial (the first includes TensorFlow's
graph building). For comparison it fits scikit-learn's ``LogisticRegression`` (a convex
linear probe: no seed) and ``RidgeClassifier`` on the same standardised features.

Run (LFW-62 at 96 px; the cache is filled on first use, about a minute of VGG16):
``source scripts/offline-env.sh && .venv/bin/python -m bench.first_trials --cache-dir /tmp/c``
(bench/README.md's figures: ``--split-seed 42 --seeds 10-17``; ``--split-seed 42 43 44``: the
benchmark's three splits, for the convex probe's figures there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.env import MODEL_DIR, default_weights  # noqa: E402
from pipeline.sdk.contract import StudyContext, TrialContext, load_plugin  # noqa: E402


def _seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="lfw", choices=["lfw", "olivetti"])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--split-seed", type=int, nargs="+", default=[42], help="study seeds (each a split)")
    parser.add_argument("--seeds", type=_seeds, default=_seeds("10-17"), help="trial seeds, e.g. 10-17")
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--entry", type=json.loads, action="append", default=[], help="more, e.g. '{\"n_layers\": 0}'")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--weights", default=str(default_weights()))
    args = parser.parse_args()

    plugin = load_plugin(MODEL_DIR)
    manifest = plugin.manifest
    entries = [*(manifest.tune or {}).get("first_trials", []), *args.entry]
    options = {**manifest.data, "source": args.dataset, "input_size": args.size}
    for split_seed in args.split_seed:
        context = StudyContext(manifest, options, {**manifest.params, "weights": args.weights}, split_seed,
                               args.cache_dir, lambda line: None)  # fmt: skip
        data = plugin.prepare(context)
        print(f"split seed {split_seed}: {len(data.labels['train'])} train, {len(data.labels['val'])} val")
        for entry in entries:
            _report(plugin, data, entry, args)
        _probe(data)


def _report(plugin: Any, data: Any, entry: dict[str, Any], args: argparse.Namespace) -> None:
    params = {"units": [], "activation": "relu", "fine_tune_blocks": 0, **entry}
    values, seconds = [], []
    for seed in args.seeds:
        started = time.perf_counter()
        trial = TrialContext(0, seed, lambda epoch, metrics: None, Path(tempfile.mkdtemp()), "val_accuracy",
                             "maximize", lambda line: None)  # fmt: skip
        values.append(plugin.train(data, params, trial).value)
        seconds.append(time.perf_counter() - started)
    met = sum(value >= args.goal for value in values)
    shown = " ".join(f"{value:.3f}" for value in values)
    print(f"  {json.dumps(entry)}: val_accuracy {shown}; >= {args.goal:g}: {met} of {len(values)}; "
          f"median {statistics.median(seconds):.2f}s a trial")  # fmt: skip


def _probe(data: Any) -> None:
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    train = data.features["train"]
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    scaled = {name: (features - mean) / std for name, features in data.features.items()}
    for strength in (0.03, 0.1, 0.3, 1.0):
        probe = LogisticRegression(C=strength, max_iter=500).fit(scaled["train"], data.labels["train"])
        print(f"  LogisticRegression C={strength:g}: val_accuracy {probe.score(scaled['val'], data.labels['val']):.4f}")
    ridge = RidgeClassifier(alpha=10.0).fit(scaled["train"], data.labels["train"])
    print(f"  RidgeClassifier alpha=10: val_accuracy {ridge.score(scaled['val'], data.labels['val']):.4f}")


if __name__ == "__main__":
    main()
