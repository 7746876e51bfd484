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

ORDER = [
    "floor",
    "ours (cold cache)",
    "ours (warm cache)",
    "ours (warm cache, no warm start)",
    "kerastuner-random",
    "kerastuner-hyperband",
    "kerastuner-cached",
    "kerastuner-cached-hyperband",
    "retrain-loop",
]
# Contenders that run VGG16 over every image at least once: none can beat the floor command.
DOES_THE_PASS = set(ORDER) - {"floor", "ours (warm cache)", "ours (warm cache, no warm start)"}


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the run records."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = next((r for r in records if r.get("record") == "header"), {})
    return header, [r for r in records if r.get("record") == "run"]


def label(record: dict[str, Any]) -> str:
    """The contender's row name."""
    if record.get("contender") == "ours":
        alone = ", no warm start" if record.get("warm_start") is False else ""
        return f"ours ({record.get('cache', '?')} cache{alone})"
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
    """Comparison runs grouped by (data set, goal), then by contender row.

    Floors run in every round beside the others; a results file from before that (one floor
    per data set) lends its floor to every goal.
    """
    floors = [r for r in runs if r.get("contender") == "floor" and r.get("fraction", 1.0) == 1.0 and not r.get("role")]
    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for record in runs:
        if record.get("role") or (record.get("contender") == "floor" and record.get("fraction", 1.0) != 1.0):
            continue
        groups.setdefault((record["dataset"], record["goal"]), {}).setdefault(label(record), []).append(record)
    for (dataset, _), group in groups.items():
        if "floor" not in group:
            same = [r for r in floors if r["dataset"] == dataset]
            if same:
                group["floor"] = same[:1]
    return groups


def spread(values: list[float], digits: int = 1) -> str:
    """``median (min-max, n=N)``, or the one value."""
    if not values:
        return "–"
    text = f"{statistics.median(values):.{digits}f}"
    return text + (f" ({min(values):.{digits}f}–{max(values):.{digits}f}, n={len(values)})" if len(values) > 1 else "")


def verdicts(records: list[dict[str, Any]]) -> str:
    """Each run's verdict, counted: ``met 3/3`` or ``met 1/3; goal not reached in budget 2/3``."""
    counts: dict[str, int] = {}
    for record in records:
        counts[verdict(record)] = counts.get(verdict(record), 0) + 1
    return "; ".join(f"{name} {count}/{len(records)}" for name, count in counts.items())


# Cores' worth of CPU that other processes may take during a run before it is flagged: the
# kernel's own threads and the sampler take a few hundredths.
OTHERS_CORES = 0.25


def flags(records: list[dict[str, Any]], cores: int) -> str:
    """What makes a row's time not a clean result: a budget cut, a load above the core count."""
    out = []
    cut = sum(1 for r in records if r.get("killed") or r.get("out_of_budget"))
    if cut:
        out.append(f"**{cut} cut by the budget**")
    busy = [r for r in records if r.get("overloaded")]
    # A run of several processes (mlops tune --workers) raises the load itself; what the machine
    # spent on anything else during the run (others_cores, older results lack it) tells the two apart.
    own = [r for r in busy if r.get("others_cores", OTHERS_CORES) < OTHERS_CORES]
    if busy:
        highest = max(r.get("load_max", 0.0) for r in busy)
        text = f"{len(busy)} run(s) under load > {cores} (max {highest:.1f})"
        out.append(f"{text}, its own processes" if len(own) == len(busy) else f"**{text}**")
    beside = [r["others_cores"] for r in records if r.get("others_cores", 0.0) >= OTHERS_CORES]
    if beside:
        out.append(f"**{len(beside)} run(s) beside other work (up to {max(beside):.2f} cores)**")
    return "; ".join(out)


def floor_check(rows: dict[str, list[dict[str, Any]]]) -> str:
    """The floor must be no slower than any contender that does the same pass; say which are."""
    floors = [r["wall_s"] for r in rows.get("floor", [])]
    if not floors:
        return "- floor check: no floor run"
    floor = statistics.median(floors)
    faster = [
        f"{name} {r['wall_s']:.1f} s"
        for name in sorted(DOES_THE_PASS & rows.keys())
        for r in rows[name]
        if r["wall_s"] < floor and r.get("goal_met") is not None
    ]
    if not faster:
        return f"- floor check: no contender that runs VGG16 over every image finished under the floor ({floor:.1f} s)"
    return f"- **floor check FAILED**: faster than the floor ({floor:.1f} s): {', '.join(faster)}"


def stage_line(records: list[dict[str, Any]]) -> str | None:
    """Median seconds per stage of ``mlops tune`` (setup, prepare, features, search, finish)."""
    stages: dict[str, list[float]] = {}
    for record in records:
        for stage, seconds in (record.get("stage_s") or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    if not stages:
        return None
    order = ["setup", "prepare", "features", "search", "finish"]  # mlops tune's order; JSON sorted them
    ranked = sorted(stages, key=lambda stage: order.index(stage) if stage in order else len(order))
    return ", ".join(f"{stage} {spread(stages[stage])} s" for stage in ranked)


def table(groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]], cores: int) -> list[str]:
    """One Markdown table per (data set, goal): median and range of every contender's runs."""
    lines: list[str] = []
    for (dataset, goal), rows in sorted(groups.items()):
        floor_runs = rows.get("floor", [{}])
        floor = floor_runs[0]
        floor_wall = statistics.median([r.get("wall_s", 0.0) for r in floor_runs]) if "floor" in rows else None
        floor_pass = statistics.median([r["pass_s"] for r in floor_runs if "pass_s" in r] or [0.0]) or None
        ours = [r["wall_s"] for r in rows.get("ours (cold cache)", [])]
        ours_median = statistics.median(ours) if ours else None
        lines += [
            f"### {dataset} at {floor.get('size', '?')} px, goal val_accuracy ≥ {goal:g}",
            "",
            f"Floor: {floor.get('n_images', '?')} images, forward pass "
            f"{spread([r['pass_s'] for r in floor_runs if 'pass_s' in r])} s, "
            "the floor command (imports, data, weights, pass) "
            f"{spread([r['wall_s'] for r in floor_runs if 'wall_s' in r])} s.",
            "",
            "| contender | time (s): median (range, n) | × floor pass | × floor cmd | × ours cold | trials / models "
            "| goal | best val acc | test acc | peak RSS (MB) | load max | flags |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for name in ORDER:
            records = rows.get(name)
            if not records:
                continue
            walls = [r["wall_s"] for r in records]
            median = statistics.median(walls)
            bound = "≥ " if name != "floor" and not all(r.get("goal_met") for r in records) else ""
            ratios = [f"{bound}{median / base:.2f}×" if base else "–" for base in (floor_pass, floor_wall, ours_median)]
            if name == "floor":
                ratios[2] = "–"
            trials = [r.get("trials", 0) or 0 for r in records]
            lines.append(
                f"| {name} | {spread(walls)} | {' | '.join(ratios)} | {spread(trials, 0)} | {verdicts(records)} "
                f"| {spread([r['best_val'] for r in records if isinstance(r.get('best_val'), float)], 3)} "
                f"| {spread([r['test'] for r in records if isinstance(r.get('test'), float)], 3)} "
                f"| {max(r.get('peak_rss_mb', 0) for r in records):.0f} "
                f"| {_fmt(max((r['load_max'] for r in records if 'load_max' in r), default=None), 1)} "
                f"| {flags(records, cores)} |"
            )
        lines += ["", floor_check(rows), *targets(rows, floor_pass, floor_wall, ours_median)]
        for name in ("ours (cold cache)", "ours (warm cache)", "ours (warm cache, no warm start)"):
            stages = stage_line(rows.get(name, []))
            if stages:
                lines.append(f"- where {name}'s time goes (median per stage): {stages}")
        lines.append("")
    return lines


def targets(
    rows: dict[str, list[dict[str, Any]]], floor_pass: float | None, floor_wall: float | None, ours: float | None
) -> list[str]:
    """Issue 13's targets, checked: ours cold ≤ 1.2× the floor, warm ≤ 0.25×; the others' measured ratio."""
    if ours is None or not floor_wall:
        return []

    def mark(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    cold = ours / floor_wall
    out = [f"- ours cold (median) / floor command: {cold:.2f}× (target ≤ 1.2×: {mark(cold <= 1.2)})"]
    for name, what in (("ours (warm cache)", "ours warm"), ("ours (warm cache, no warm start)", "the cache alone")):
        warm = [r["wall_s"] for r in rows.get(name, [])]
        if warm:
            ratio = statistics.median(warm) / floor_wall
            out.append(f"- {what} (median) / floor command: {ratio:.2f}× (target ≤ 0.25×: {mark(ratio <= 0.25)})")
    for name in ORDER[4:]:
        records = rows.get(name, [])
        finished = [r["wall_s"] for r in records if r.get("goal_met")]
        if not records:
            continue
        if len(finished) == len(records):
            ratio = statistics.median(finished) / ours
            out.append(f"- {name} / ours cold: {ratio:.1f}× (measured: every run met the goal)")
        else:
            out.append(
                f"- {name} / ours cold: no measured ratio ({len(records) - len(finished)} of {len(records)} run(s) "
                "did not meet the goal within the trial cap or the budget)"
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


def peak_of(path: Path) -> dict[str, Any]:
    """The best of the runner's ``peak`` records (one a round): the least held down by other work.

    ``{}`` in files from before them; ``measurements`` says how many there were.
    """
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    peaks = [r for r in records if r.get("record") == "peak" and r.get("tf_gflops")]
    if not peaks:
        return {}
    return {**max(peaks, key=lambda r: r["tf_gflops"]), "measurements": len(peaks)}


def physical_limit_lines(header: dict[str, Any], peak: dict[str, Any], floors: list[dict[str, Any]]) -> list[str]:
    """The CPU, its measured float32 GEMM peak and each floor pass's fraction of it (bold below 50%)."""
    from bench.machine_peak import cpu_line

    lines = [f"- CPU: {cpu_line(header['cpu'])}"] if header.get("cpu") else []
    if not peak.get("tf_gflops"):
        return lines
    lines.append(
        f"- measured peak (float32 GEMM {peak['n']}×{peak['n']}, best of {peak.get('measurements', 1)} "
        "measurement(s), one a round): TensorFlow "
        f"{peak['tf_gflops']:.1f} GFLOP/s ({peak['threads']} threads), numpy {peak['numpy_gflops']:.1f} GFLOP/s"
        + (f"; load average {peak['load_avg'][0]:.1f} just after" if peak.get("load_avg") else "")
    )
    for r in floors:
        if not r.get("pass_gflops"):
            continue
        share = r["pass_gflops"] / peak["tf_gflops"]
        where = f"{r.get('dataset')} {r.get('size')} px, {r.get('n_images')} images" + (
            f", {r['role']} {r.get('fraction', 1.0):.0%}" if r.get("role") else ""
        )
        lines.append(
            f"  - floor pass ({where}): {2 * r['macs_per_image'] / 1e9:.2f} GFLOP/image, "
            f"{r['pass_gflops']:.1f} GFLOP/s = {share:.0%} of the peak"
            + (" **below 50%**" if share < 0.5 else "")
            # A pass faster than the GEMM means the peak was measured low (other work on the cores).
            + (" (above the measured peak: that measurement was held down)" if share > 1 else "")
        )
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
        *physical_limit_lines(header, peak_of(path), [r for r in runs if r.get("contender") == "floor"]),
        "",
        *table(groups, int(header.get("cpu_count") or 1)),
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
