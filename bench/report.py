"""Build the Markdown table and the plots from a results file written by ``bench.run``.

Run: ``.venv/bin/python -m bench.report bench/results/<date>-<mode>.jsonl``
(writes ``<same name>.md``, ``<same name>-time.png`` and, when measured, ``-scaling.png``).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

ORDER = ["floor", "ours (cold cache)", "ours (warm cache)", "kerastuner-random", "kerastuner-hyperband", "retrain-loop"]
TARGETS = {"kerastuner-random": 10.0, "kerastuner-hyperband": 10.0, "retrain-loop": 20.0}


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the run records."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = next((r for r in records if r.get("record") == "header"), {})
    return header, [r for r in records if r.get("record") == "run"]


def label(record: dict[str, Any]) -> str:
    """The contender's row name."""
    if record.get("contender") == "ours":
        return f"ours ({record.get('cache', '?')} cache)"
    return str(record.get("contender"))


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def verdict(record: dict[str, Any]) -> str:
    """'met', 'goal not reached in budget' or 'not met (trial budget)'."""
    if record.get("contender") == "floor":
        return "(no training)"
    if record.get("goal_met"):
        return "met"
    if record.get("killed") or record.get("out_of_budget"):
        return "goal not reached in budget"
    if record.get("returncode") in (0, 3):
        return "not met (trial budget)"
    return f"failed (exit {record.get('returncode')})"


def main_rows(runs: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, list[dict[str, Any]]]]:
    """Comparison runs grouped by (data set, goal), then by contender row."""
    floors = {
        r["dataset"]: r
        for r in runs
        if r.get("contender") == "floor" and r.get("fraction", 1.0) == 1.0 and not r.get("role")
    }
    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for record in runs:
        if record.get("role") or record.get("contender") == "floor":
            continue
        group = groups.setdefault((record["dataset"], record["goal"]), {})
        if record["dataset"] in floors:
            group.setdefault("floor", [floors[record["dataset"]]])
        group.setdefault(label(record), []).append(record)
    return groups


def table(groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]]) -> list[str]:
    """One Markdown table per (data set, goal), with ratios to the floor and to ours (cold)."""
    lines: list[str] = []
    for (dataset, goal), rows in sorted(groups.items()):
        floor = rows.get("floor", [{}])[0]
        ours = [r["wall_s"] for r in rows.get("ours (cold cache)", [])]
        ours_median = statistics.median(ours) if ours else None
        lines += [
            f"### {dataset} at {floor.get('size', '?')} px, goal val_accuracy ≥ {goal:g}",
            "",
            f"Floor: {floor.get('n_images', '?')} images, forward pass {_fmt(floor.get('pass_s'), 1)} s "
            f"({_fmt(floor.get('images_per_s'), 0)} img/s); the floor command (imports, data, weights, pass) "
            f"{_fmt(floor.get('wall_s'), 1)} s.",
            "",
            "| contender | time to goal (s) | × floor pass | × floor cmd | × ours | trials / models | goal "
            "| best val acc | test acc | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for name in ORDER:
            records = rows.get(name)
            if not records:
                continue
            walls = [r["wall_s"] for r in records]
            time_text = _fmt(statistics.median(walls), 1)
            if len(walls) > 1:
                time_text += f" (min {min(walls):.1f}, max {max(walls):.1f}, n={len(walls)})"
            median = statistics.median(walls)
            first = records[0]
            bound = "≥ " if not first.get("goal_met") and name != "floor" else ""
            ratios = [
                f"{bound}{median / base:.1f}×" if base else "–"
                for base in (floor.get("pass_s"), floor.get("wall_s"), ours_median)
            ]
            if name == "floor":
                ratios[2] = "–"
            lines.append(
                f"| {name} | {time_text} | {' | '.join(ratios)} | {first.get('trials', 0)} | {verdict(first)} "
                f"| {_fmt(first.get('best_val'))} | {_fmt(first.get('test'))} "
                f"| {max(r['peak_rss_mb'] for r in records):.0f} |"
            )
        lines += ["", *targets(rows, floor, ours_median), ""]
    return lines


def targets(rows: dict[str, list[dict[str, Any]]], floor: dict[str, Any], ours: float | None) -> list[str]:
    """The issue's targets, checked: ≤ 1.5× the floor, ≥ 10× KerasTuner, ≥ 20× the loop."""
    if ours is None:
        return []
    out = []
    if floor.get("pass_s"):
        for base, name in ((floor["pass_s"], "forward pass"), (floor["wall_s"], "floor command")):
            ratio = ours / base
            out.append(
                f"- ours (cold, median) vs the {name}: {ratio:.2f}× (target ≤ 1.5×: "
                f"{'met' if ratio <= 1.5 else 'missed'})"
            )
    for name, target in TARGETS.items():
        if rows.get(name):
            record = rows[name][0]
            ratio = record["wall_s"] / ours
            bound = "" if record.get("goal_met") else " (a lower bound: it did not reach the goal)"
            out.append(
                f"- {name} / ours (cold): {ratio:.1f}×{bound} (target ≥ {target:g}×: "
                f"{'met' if ratio >= target else 'missed'})"
            )
    return out


def mlflow_lines(runs: list[dict[str, Any]]) -> list[str]:
    """MLflow time as a share of ours' command time (printed per-trial figure and profiled total)."""
    lines = [
        "### MLflow time in ours (target: under 5%)",
        "",
        "| run | command (s) | per-trial logging (s, printed) | share | all MLflow calls (s, cProfile) | share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r.get("contender") != "ours" or "mlflow_logging_s" not in r:
            continue
        name = f"{r['dataset']}@{r['goal']:g} {r.get('cache')} {r.get('role') or ''}".strip()
        lines.append(
            f"| {name} | {r['command_s']:.1f} | {r['mlflow_logging_s']:.1f} | {r['mlflow_share']:.1%} "
            f"| {_fmt(r.get('mlflow_total_s'), 1)} | "
            f"{format(r['mlflow_total_share'], '.1%') if 'mlflow_total_share' in r else '–'} |"
        )
    profiled = [r for r in runs if "profile_total_s" in r]
    for r in profiled:
        lines += [
            "",
            f"Profiled {r['dataset']} {r.get('cache')} run ({r['profile_total_s']:.1f} s under cProfile): "
            f"prepare {r['prepare_s']:.1f} s, trials (optimize) {r['optimize_s']:.1f} s, after the search "
            f"(test, plots, export, log_model, register) {r['finish_s']:.1f} s, of which plots "
            f"{r['plots_s']:.1f} s and export {r['export_s']:.1f} s; MLflow in all {r['mlflow_total_s']:.1f} s.",
        ]
    return lines + [""]


def scaling_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Time against images and against trials."""
    images = [r for r in runs if r.get("role") == "scaling-images"]
    trials = [r for r in runs if r.get("role") == "scaling-trials"]
    lines: list[str] = []
    if images:
        lines += [
            "### Cost against images (ours cold, goal 0.90)",
            "",
            "| subset | images | floor pass (s) | floor cmd (s) | ours cold (s) | × floor pass | goal | best val |",
            "|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for fraction in sorted({r["fraction"] for r in images}):
            floor = next((r for r in images if r["fraction"] == fraction and r["contender"] == "floor"), {})
            ours = next((r for r in images if r["fraction"] == fraction and r["contender"] == "ours"), {})
            ratio = ours.get("wall_s", 0) / floor["pass_s"] if floor.get("pass_s") else None
            lines.append(
                f"| {fraction:.0%} | {floor.get('n_images', '?')} | {_fmt(floor.get('pass_s'), 1)} "
                f"| {_fmt(floor.get('wall_s'), 1)} | {_fmt(ours.get('wall_s'), 1)} | {_fmt(ratio, 2)} "
                f"| {verdict(ours)} | {_fmt(ours.get('best_val'))} |"
            )
        lines.append("")
    if trials:
        lines += [
            "### Cost against trials (ours warm, unreachable goal 1.01)",
            "",
            "| max trials | trials run | command (s) | tuner (s) | sum of trial times (s) | s per trial |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(trials, key=lambda r: r.get("trials", 0)):
            per = r["trials_s"] / r["trials"] if r.get("trials") else None
            lines.append(
                f"| {len(r.get('trial_seconds', []))} | {r.get('trials')} | {r['wall_s']:.1f} "
                f"| {_fmt(r.get('tuner_wall_s'), 1)} | {_fmt(r.get('trials_s'), 1)} | {_fmt(per, 2)} |"
            )
        if len(trials) > 1:
            a, b = min(trials, key=lambda r: r["trials"]), max(trials, key=lambda r: r["trials"])
            if b["trials"] > a["trials"]:
                slope = (b["wall_s"] - a["wall_s"]) / (b["trials"] - a["trials"])
                lines.append(f"\nMarginal cost of a trial (command time slope): {slope:.2f} s.")
        lines.append("")
    return lines


def build_report(path: Path) -> Path:
    """Write ``<path>.md`` and the plots; return the Markdown path."""
    from bench.plots import scaling_plot, time_plot

    header, runs = read(path)
    groups = main_rows(runs)
    md = path.with_suffix(".md")
    lines = [
        f"# Time to goal — {header.get('mode', '?')} run",
        "",
        f"- date: {header.get('date')}",
        f"- machine: {header.get('machine')} ({header.get('cpu_count')} CPUs; "
        f"load average at start {', '.join(f'{x:.1f}' for x in header.get('load_avg_at_start', []))})",
        f"- versions: python {header.get('python')}, "
        + ", ".join(f"{k} {v}" for k, v in header.get("versions", {}).items()),
        f"- command: `{header.get('command')}`",
        f"- weights: `{Path(str(header.get('weights'))).name}` "
        f"(sha256 {str(header.get('weights_sha256'))[:16]}…), "
        f"the same file for every contender",
        f"- budget per contender: {header.get('budget_s')} s; seed {header.get('seed')}; "
        "time to goal = wall time of the contender's whole process (imports, data, search, test score)",
        "",
        *table(groups),
        *mlflow_lines(runs),
        *scaling_lines(runs),
    ]
    plots = [time_plot(groups, path.with_name(path.stem + "-time.png"))]
    if any(r.get("role", "").startswith("scaling") for r in runs):
        plots.append(scaling_plot(runs, path.with_name(path.stem + "-scaling.png")))
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    md.write_text("\n".join(lines) + "\n")
    return md


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(build_report(Path(argument)))
