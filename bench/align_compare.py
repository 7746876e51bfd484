"""LFW-62 at 96 px three ways: sklearn's fixed crop, the whole raw photo, the MTCNN-aligned face.

Each configuration is one cold ``mlops tune models/face_vgg16`` (empty feature cache, fresh
Optuna and MLflow databases) with the face weights, goal ``val_accuracy >= 0.95``, at most 20
trials; the three run one after another, never in parallel, and the load average is recorded
around each. Timed from exec to exit; the alignment and the one VGG16 pass are read from
what the command prints.

| config | data |
|---|---|
| lfw-crop | ``data.source=lfw``: sklearn's ``fetch_lfw_people`` slice of the funneled photos |
| raw-whole | ``data.source=folder``, ``data.path=<lfw_funneled>``, ``data.align=none``: the 250x250 photo resized |
| raw-mtcnn | the same folder with ``data.align=mtcnn``: detected, aligned to the 5-point template |

Run: ``.venv/bin/python -m bench.align_compare`` (about 20 min on 2 cores); writes
``bench/results/<date>-align.md`` and ``.json``. ``--configs raw-mtcnn`` runs one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import LFW_RAW, MODEL_DIR, REPO, BenchEnv, default_weights, machine_header

MLOPS = Path(sys.executable).with_name("mlops")
CONFIGS = ("lfw-crop", "raw-whole", "raw-mtcnn")


def config_options(name: str, raw: Path) -> list[str]:
    """The ``--set`` options of configuration ``name``; ``raw`` is the folder of raw photos."""
    if name == "lfw-crop":
        return ["data.source=lfw"]
    return ["data.source=folder", f"data.path={raw}", f"data.align={'none' if name == 'raw-whole' else 'mtcnn'}"]


def tune_command(args: argparse.Namespace, sets: list[str], work: Path) -> list[str]:
    """``mlops tune`` for one configuration, everything (cache included) under ``work``."""
    line = [str(MLOPS), "tune", str(MODEL_DIR), "--weights", str(args.weights)]
    for option in [*sets, f"data.input_size={args.size}"]:
        line += ["--set", option]
    return line + [
        "--goal",
        f"{args.goal:g}",
        "--max-trials",
        str(args.max_trials),
        "--timeout",
        f"{args.budget_seconds:g}",
        "--seed",
        str(args.seed),
        "--no-register",
        "--study-name",
        f"align-{uuid.uuid4().hex[:8]}",
        "--cache-dir",
        str(work / "cache"),
        "--runs-dir",
        str(work / "runs"),
        "--storage",
        f"sqlite:///{work / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
    ]


def printed_figures(text: str) -> dict[str, Any]:
    """The alignment and VGG16-pass figures ``mlops tune`` prints."""
    found: dict[str, Any] = {}
    if match := re.search(r"align: (\d+) images in ([\d.]+)s \(([\d.]+) images/s\)", text):
        found.update(align_images=int(match.group(1)), align_s=float(match.group(2)), align_ips=float(match.group(3)))
    if match := re.search(r"align: no face found in (\d+) of (\d+)", text):
        found["no_face"] = int(match.group(1))
    if match := re.search(r"features: (\d+) images through VGG16 in ([\d.]+)s", text):
        found.update(vgg_images=int(match.group(1)), vgg_s=float(match.group(2)))
        found["vgg_ips"] = found["vgg_images"] / max(found["vgg_s"], 1e-9)
    return found


def run_config(name: str, args: argparse.Namespace, bench: BenchEnv) -> dict[str, Any]:
    """One cold ``mlops tune`` of configuration ``name``: its wall time, peak RSS, figures and summary."""
    work = bench.scratch(name)
    line = tune_command(args, config_options(name, args.raw), work)
    record: dict[str, Any] = {"config": name, "command": " ".join(line), "load_avg_before": os.getloadavg()}
    started = time.perf_counter()
    with open(work / "stdout.txt", "w") as out:
        child = subprocess.Popen(line, cwd=work, env=bench.env(), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak memory, not the largest so far
    record.update(
        command_s=time.perf_counter() - started,
        exit_code=os.waitstatus_to_exitcode(status),
        peak_rss_mb=usage.ru_maxrss / 1024,
        load_avg_after=os.getloadavg(),
    )
    text = (work / "stdout.txt").read_text(errors="replace")
    record.update(printed_figures(text))
    summary_path = work / "runs" / "face_vgg16" / "summary.json"
    if not summary_path.exists():
        record.update(goal_met=False, cut_by="error", error=text[-2000:])
        return record
    summary = json.loads(summary_path.read_text())
    best = summary.get("best") or {}
    trials = summary["trials_total"]
    record.update(
        goal_met=summary["goal_met"],
        trials=trials,
        tuner_wall_s=summary["wall_seconds"],
        stage_seconds=summary.get("stage_seconds", {}),
        best_val=best.get("value"),
        test=best.get("test_value"),
    )
    if not summary["goal_met"]:
        record["cut_by"] = f"trial budget ({trials})" if trials >= args.max_trials else "time budget"
    return record


def markdown(header: dict[str, Any], records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The results as the table the README quotes."""

    def num(value: Any, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    load = ", ".join(f"{x:.1f}" for x in header["load_avg_at_start"])
    lines = [
        "# LFW-62 at 96 px: fixed crop, whole raw photo, MTCNN-aligned",
        "",
        f"- date: {header['date']}",
        f"- machine: {header['machine']}, {header['cpu_model']}",
        f"- {header['cpu_count']} CPUs; load average at start {load}",
        f"- command: `{header['command']}`" + (f" ({header['rerun']})" if header.get("rerun") else ""),
        f"- weights: `{Path(header['weights']).name}` (sha256 {str(header['weights_sha256'])[:16]}…)",
        f"- each row: one cold `mlops tune` (empty cache), goal val_accuracy ≥ {args.goal:g}, at most "
        f"{args.max_trials} trials, {args.budget_seconds:g} s search budget, seed {args.seed}, run one after another",
        "",
        "| config | images | no face | align (s) | align img/s | VGG16 pass (s) | VGG16 img/s | trials "
        "| best val acc | test acc | time to goal (s) | cut by a budget | load avg before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in records:
        to_goal = num(r.get("command_s"), ".0f") if r.get("goal_met") else f"not met ({r.get('command_s', 0):.0f})"
        loads = f"{r['load_avg_before'][0]:.1f} → {r['load_avg_after'][0]:.1f}"
        lines.append(
            f"| {r['config']} | {r.get('vgg_images', '–')} | {r.get('no_face', 0 if 'align_s' in r else '–')} "
            f"| {num(r.get('align_s'), '.0f')} | {num(r.get('align_ips'), '.1f')} | {num(r.get('vgg_s'), '.0f')} "
            f"| {num(r.get('vgg_ips'), '.1f')} | {r.get('trials', '–')} | {num(r.get('best_val'), '.3f')} "
            f"| {num(r.get('test'), '.3f')} | {to_goal} | {r.get('cut_by', 'no')} | {loads} |"
        )
    lines += [
        "",
        "Time to goal is the whole command (imports, data, alignment, features, trials, test score);",
        "`not met (N)` gives the seconds the command ran before a budget ended it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the configurations one after another and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--max-trials", type=int, default=20)
    parser.add_argument("--budget-seconds", type=float, default=900.0, help="search budget per configuration")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weights", type=Path, default=default_weights())
    parser.add_argument("--raw", type=Path, default=LFW_RAW, help="folder per person of raw photos")
    parser.add_argument("--out", type=Path, default=None, help="results stem; default bench/results/<date>-align")
    parser.add_argument("--rerun", action="store_true", help="keep --out's other configurations, redo --configs")
    args = parser.parse_args(argv)
    stem = args.out or REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d-%H%M}-align"
    header = machine_header([sys.executable, "-m", "bench.align_compare", *(argv or sys.argv[1:])], args.weights)
    header["cpu_model"] = _cpu_model()
    bench = BenchEnv(args.seed)
    records: list[dict[str, Any]] = []
    earlier: list[dict[str, Any]] = []
    if args.rerun and stem.with_suffix(".json").exists():  # e.g. one row that failed, run again later
        before = json.loads(stem.with_suffix(".json").read_text())
        earlier = [r for r in before["runs"] if r["config"] not in args.configs]
        header = {
            **before["header"],
            "rerun": f"{', '.join(args.configs)} rerun at {header['date']}: `{header['command']}`",
        }
    try:
        for name in args.configs:
            print(f"{name}: running", flush=True)
            records.append(run_config(name, args, bench))
            print(json.dumps(records[-1], default=float)[:400], flush=True)
            runs = sorted(earlier + records, key=lambda r: CONFIGS.index(r["config"]))
            stem.with_suffix(".json").write_text(json.dumps({"header": header, "runs": runs}, indent=1))
    finally:
        bench.cleanup()
    stem.with_suffix(".md").write_text(
        markdown(header, sorted(earlier + records, key=lambda r: CONFIGS.index(r["config"])), args)
    )
    print(f"wrote {stem}.md and .json")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
