"""Heads on frozen features against the staged search that may fine-tune VGG16's top blocks (issue 15).

LFW-62 (scikit-learn's crop) at 96 px with the face weights, goal ``val_accuracy >= --goal``
(0.97 by default: above what heads on frozen features reach), at most 40 trials and
``--budget-seconds`` of search each. Configurations, one ``mlops tune`` each, run one after
another (never in parallel), the load average recorded around each:

| config | what may run |
|---|---|
| heads | ``fine_tune_blocks`` stays 0 (``MLOPS_STAGED`` with a stall no search reaches) |
| staged | the face model as shipped: heads until 8 trials bring nothing better, then block 5, then blocks 4-5 |

The pooled features are extracted once before both (``mlops features``), so both start with the
same warm cache; the block outputs a fine-tuning trial needs are extracted inside the staged run
and counted in its time. Time to 0.95 and to the goal are read from the study (trial completion
times from the search's start).

``--photos raw-whole`` compares on LFW-62's whole 250x250 photos instead (resized, no
alignment): harder faces, where a head on frozen features stalls near 0.82.

Run: ``.venv/bin/python -m bench.finetune_compare --budget-seconds 1500`` (about an hour);
writes ``bench/results/<date>-finetune-compare.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import LFW_RAW, MODEL_DIR, REPO, BenchEnv, default_weights, machine_header

MLOPS = Path(sys.executable).with_name("mlops")
CONFIGS = {"heads": "{param: fine_tune_blocks, stall_trials: 100000}", "staged": None}


def data_sets(args: argparse.Namespace) -> list[str]:
    """``--set data.*`` for the photos compared: scikit-learn's crop, or the whole raw photo."""
    if args.photos == "raw-whole":
        chosen = ["data.source=folder", f"data.path={LFW_RAW}", "data.align=none"]
    else:
        chosen = [f"data.source={args.dataset}"]
    chosen += [f"data.input_size={args.size}"] + (["data.flip=true"] if args.flip else [])
    return [part for item in chosen for part in ("--set", item)]


def command(args: argparse.Namespace, verb: str, cache: Path, work: Path) -> list[str]:
    line = [str(MLOPS), verb, str(MODEL_DIR), "--weights", str(args.weights)]
    line += [*data_sets(args), "--cache-dir", str(cache)]
    if verb == "features":
        return line
    return line + [
        "--goal", f"{args.goal:g}", "--max-trials", str(args.max_trials), "--timeout", f"{args.budget_seconds:g}",
        "--seed", str(args.seed), "--no-register", "--study-name", f"ft-{uuid.uuid4().hex[:8]}",
        "--runs-dir", str(work / "runs"), "--storage", f"sqlite:///{work / 'optuna.db'}",
        "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
    ]  # fmt: skip


def study_marks(work: Path, started: float, marks: list[float]) -> dict[str, Any]:
    """Per trial (number, fine_tune_blocks, value, seconds from the search's start); first time past each mark."""
    import optuna

    storage = f"sqlite:///{work / 'optuna.db'}"
    name = optuna.get_all_study_names(storage)[0]
    trials = [t for t in optuna.load_study(study_name=name, storage=storage).trials if t.value is not None]
    first = min(t.datetime_start.timestamp() for t in trials) if trials else started
    rows = [
        {
            "number": t.number,
            "blocks": t.params.get("fine_tune_blocks", 0),
            "value": t.value,
            "done_s": t.datetime_complete.timestamp() - first,
        }  # fmt: skip
        for t in trials
        if t.datetime_complete
    ]
    reached = {f"{mark:g}": min((r["done_s"] for r in rows if r["value"] >= mark), default=None) for mark in marks}
    return {"trial_rows": rows, "first_reached_s": reached}


def run_config(name: str, args: argparse.Namespace, bench: BenchEnv, cache: Path) -> dict[str, Any]:
    work = bench.scratch(name)
    env = bench.env()
    if CONFIGS[name]:
        env["MLOPS_STAGED"] = str(CONFIGS[name])
    line = command(args, "tune", cache, work)
    record: dict[str, Any] = {"config": name, "command": " ".join(line), "load_before": os.getloadavg()}
    started = time.perf_counter()
    with open(work / "stdout.txt", "w") as out:
        done = subprocess.run(line, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    record.update(wall_s=time.perf_counter() - started, exit_code=done.returncode, load_after=os.getloadavg())
    summary = json.loads((work / "runs" / "face_vgg16" / "summary.json").read_text())
    best = summary.get("best") or {}
    record.update(
        goal_met=summary["goal_met"], trials=summary["trials_total"], best_val=best.get("value"),
        test=best.get("test_value"), best_blocks=(best.get("params") or {}).get("fine_tune_blocks"),
        staged=summary.get("staged"), stage_seconds=summary.get("stage_seconds"),
        log_tail=[row for row in (work / "stdout.txt").read_text().splitlines() if row.startswith("staged:")],
    )  # fmt: skip
    record.update(study_marks(work, started, args.marks))
    if not summary["goal_met"]:
        record["cut_by"] = (
            f"trial budget ({args.max_trials})"
            if summary["trials_total"] >= args.max_trials
            else f"time budget ({args.budget_seconds:g} s)"
        )
    return record


def markdown(header: dict[str, Any], records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def num(value: Any, fmt: str = ".3f") -> str:
        return "–" if value is None else format(value, fmt)

    lines = [
        f"# {photos_name(args)} at {args.size} px: heads on frozen features against the staged fine-tuning search",
        "",
        f"- {header['date']}, {header['cpu_count']} CPUs, command `{header['command']}`",
        f"- goal val_accuracy >= {args.goal:g}, at most {args.max_trials} trials, "
        f"{args.budget_seconds:g} s search budget, "
        f"seed {args.seed}, face weights, {'mirror images cached too (data.flip), ' if args.flip else ''}"
        "warm pooled-feature cache for both, run one after another",
        "",
        "| config | trials | best val | test | best trial's blocks | "
        + " | ".join(f"first >= {mark:g} (s)" for mark in args.marks)
        + " | goal | time by blocks | load before -> after |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(args.marks) + "---|---|---|",
    ]
    for r in records:
        marks = r["first_reached_s"]
        by = r.get("staged") or {}
        time_by = ", ".join(f"{k}: {v:.0f} s ({by['trials'][k]} trials)" for k, v in (by.get("seconds") or {}).items())
        goal = "met" if r["goal_met"] else f"not met, cut by {r.get('cut_by')}"
        lines.append(
            f"| {r['config']} | {r['trials']} | {num(r['best_val'])} | {num(r['test'])} | {num(r['best_blocks'], 'd')} "
            f"| {' | '.join(num(marks[f'{mark:g}'], '.0f') for mark in args.marks)} | {goal} "
            f"| {time_by or '–'} | {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |"
        )
    lines += ["", "Stage lines each run printed:", ""]
    for r in records:
        lines += [f"- {r['config']}: " + ("; ".join(x for x in r["log_tail"] if x.startswith("staged:")) or "none")]
    return "\n".join(lines) + "\n"


def photos_name(args: argparse.Namespace) -> str:
    return "LFW-62 whole raw photos" if args.photos == "raw-whole" else args.dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--dataset", choices=["lfw", "olivetti"], default="lfw", help="olivetti: a smoke run")
    parser.add_argument("--goal", type=float, default=0.97)
    parser.add_argument("--budget-seconds", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--configs", default="heads,staged")
    parser.add_argument("--photos", choices=["crop", "raw-whole"], default="crop", help="raw-whole: LFW-62 uncropped")
    parser.add_argument("--flip", action="store_true", help="data.flip=true for every config")
    parser.add_argument("--max-trials", type=int, default=40, help="trial cap of every config")
    parser.add_argument("--marks", default="0.95,0.96,0.97", help="validation accuracies whose first time is reported")
    parser.add_argument("--weights", type=Path, default=default_weights())
    args = parser.parse_args()
    args.marks = [float(mark) for mark in args.marks.split(",")]
    bench = BenchEnv()
    header = machine_header(sys.argv, args.weights)
    cache = bench.scratch("cache")
    subprocess.run(command(args, "features", cache, cache), env=bench.env(), check=True, capture_output=True)
    records = []
    for name in args.configs.split(","):
        records.append(run_config(name, args, bench, cache))
        print(json.dumps({k: v for k, v in records[-1].items() if k not in ("trial_rows", "log_tail")}), flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    out = REPO / "bench" / "results" / f"{stamp}-finetune-compare{'-raw' if args.photos == 'raw-whole' else ''}"
    out.with_suffix(".json").write_text(json.dumps({"header": header, "runs": records}, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(header, records, args))
    print(out.with_suffix(".md").read_text())
    bench.cleanup()


if __name__ == "__main__":
    main()
