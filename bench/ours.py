"""Ours: ``mlops tune models/face_vgg16`` to the goal, from a cold or a warm feature cache.

The timed span is the whole command (``mlops tune ...`` from exec to exit: imports, data,
features or cache read, trials, test score, plots, MLflow logging and registration); the
tuner's own ``wall_seconds`` from ``summary.json`` is reported beside it. A cold run gets an
empty cache and a fresh work folder (Optuna and MLflow databases created on first use); a
warm run reuses the cache and the databases, but always under a new study name, so no
trial is ever shared. ``--profile`` runs the command under cProfile and adds the time spent
in every MLflow call (``pipeline/tracking/tracker.py``, not only the per-trial logging it prints).

Run: ``python -m bench.ours --dataset lfw --cache-dir /tmp/c --work-dir /tmp/w --result r.json``
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.data import DATASETS, ResultFile, contender_parser
from bench.env import MODEL_DIR

MLOPS = Path(sys.executable).with_name("mlops")


def command(args: Any, size: int, work: Path) -> list[str]:
    """The ``mlops tune`` command line for this run (everything under ``work`` but the cache)."""
    line = [
        str(MLOPS),
        "tune",
        str(MODEL_DIR),
        "--weights",
        str(args.weights),
        "--set",
        f"data.source={args.dataset}",
        "--set",
        f"data.input_size={size}",
        "--goal",
        f"{args.goal:g}",
        "--max-trials",
        str(args.max_trials),
        "--timeout",
        f"{args.budget_seconds:g}",
        "--seed",
        str(args.seed),
        "--cache-dir",
        str(args.cache_dir),
        "--runs-dir",
        str(work / "runs"),
        "--storage",
        f"sqlite:///{work / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
    ]
    if args.min_faces is not None:
        line += ["--set", f"data.min_faces_per_person={args.min_faces}"]
    if args.no_warm_start:
        line.append("--no-warm-start")
    return line


def parse_output(text: str) -> dict[str, Any]:
    """Figures ``mlops tune`` prints: feature time, MLflow logging time, per-trial seconds."""
    found: dict[str, Any] = {}
    if match := re.search(r"features: (\d+) images through VGG16 in ([\d.]+)s", text):
        found["feature_s"] = float(match.group(2))
    if match := re.search(r"MLflow logging ([\d.]+)s", text):
        found["mlflow_logging_s"] = float(match.group(1))
    trial_seconds = [float(s) for s in re.findall(r"^trial\s+\d+\s+.*?\s([\d.]+)s\s", text, re.M)]
    found["trial_seconds"] = trial_seconds
    found["trials_s"] = sum(trial_seconds)
    return found


def main(argv: list[str] | None = None) -> None:
    """Run ``mlops tune`` once and record its wall time, summary and printed figures."""
    parser = contender_parser(__doc__ or "")
    parser.add_argument("--cache-dir", type=Path, required=True, help="feature cache (cold if empty)")
    parser.add_argument("--work-dir", type=Path, required=True, help="fresh runs/optuna/mlflow home")
    parser.add_argument("--max-trials", type=int, default=40)
    parser.add_argument("--label", default="ours", help="contender name in the results")
    parser.add_argument("--profile", action="store_true", help="cProfile it; add MLflow's total")
    parser.add_argument(
        "--no-warm-start", action="store_true", help="mlops tune --no-warm-start: no earlier study's best first"
    )
    args = parser.parse_args(argv)
    size = args.size or DATASETS[args.dataset]
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    cold = not any(args.cache_dir.rglob("*.npz")) if args.cache_dir.exists() else True
    line = command(args, size, work) + ["--study-name", f"bench-{uuid.uuid4().hex[:8]}"]
    if args.profile:
        line = [sys.executable, "-m", "cProfile", "-o", str(work / "profile.out"), *line]
    result = ResultFile(
        args.result,
        contender=args.label,
        dataset=args.dataset,
        size=size,
        goal=args.goal,
        cache="cold" if cold else "warm",
        warm_start=not args.no_warm_start,
        command=" ".join(line),
    )
    started = time.perf_counter()
    with open(work / "stdout.txt", "w") as out:
        done = subprocess.run(line, cwd=work, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - started
    text = (work / "stdout.txt").read_text(errors="replace")
    fields: dict[str, Any] = {"command_s": wall, "exit_code": done.returncode, **parse_output(text)}
    summary_path = work / "runs" / "face_vgg16" / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        best = summary.get("best") or {}
        fields.update(
            goal_met=summary["goal_met"],
            trials=summary["trials_total"],
            trials_pruned=summary["trials_pruned"],
            tuner_wall_s=summary["wall_seconds"],
            best_val=best.get("value"),
            test=best.get("test_value"),
            feature_cache_hit=summary.get("feature_cache_hit"),
            stage_s=summary.get("stage_seconds") or {},  # setup, prepare, features, search, finish
        )
    else:
        fields.update(goal_met=False, error=text[-2000:])
    if "mlflow_logging_s" in fields:
        fields["mlflow_share"] = fields["mlflow_logging_s"] / wall
    if args.profile and (work / "profile.out").exists():
        fields.update(profile_breakdown(work / "profile.out"))
    result.update(**fields)


def profile_breakdown(path: Path) -> dict[str, Any]:
    """Seconds in MLflow (every ``pipeline/tracking/tracker.py`` call from outside it) and other stages."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in stats.values())

    def outside_calls(file_part: str, name: str | None = None) -> float:
        seconds = 0.0
        for (file, _, function), (_, _, _, _, callers) in stats.items():
            if file_part in file and (name is None or function == name):
                seconds += sum(edge[3] for caller, edge in callers.items() if file_part not in caller[0])
        return seconds

    mlflow_s = outside_calls("pipeline/tracking/tracker.py")
    return {
        "profile_total_s": total,
        "mlflow_total_s": mlflow_s,
        "mlflow_total_share": mlflow_s / total,
        "prepare_s": outside_calls("pipeline/sdk/contract.py", "prepare"),
        "optimize_s": outside_calls("optuna/study/study.py", "optimize"),
        "finish_s": outside_calls("pipeline/tune/results.py", "finish_study"),
        "export_s": outside_calls("pipeline/sdk/contract.py", "export"),
        "plots_s": outside_calls("pipeline/tracking/plots.py"),
    }


if __name__ == "__main__":
    main()
