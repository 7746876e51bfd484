"""Time to goal and peak memory against the number of real people (LFW subsets), for issue 16.

LFW-62 is the 62 people with at least 20 photos; asking scikit-learn for people with at least
70, 50, 30 or 20 photos gives galleries of 7, 12, 34 and 62 real people (1288 to 3023 images)
from the same photos. For each, ``mlops tune`` (through ``bench.ours``: the face model, the face
weights, 96 px) runs to the goal twice: cold (empty feature cache: extraction included) and
warm (the cache the cold run filled, a new study: the search alone). The runner reads each
run's peak RSS from ``os.wait4`` and samples the load average while it runs, as ``bench.run``
does. Real faces only: accuracy here means something; ``bench.gallery_scale`` goes past 62
people with synthetic vectors, for timing and memory.

Run (about 6 minutes on 2 idle cores)::

    .venv/bin/python -m bench.gallery_people                  # min photos 70,50,30,20, goal 0.90
    .venv/bin/python -m bench.gallery_people --min-faces 70,20 --goal 0.95

Writes ``bench/results/<date>-gallery-people.{jsonl,md,png}``; docs/scale.md reads it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.env import REPO, BenchEnv, default_weights, lfw_people, machine_header, require_lfw_raw
from bench.run import RESULTS, run_child


def gallery(min_faces: int) -> tuple[int, int]:
    """People with at least ``min_faces`` photos, and their photos (what scikit-learn keeps)."""
    people = lfw_people(min_faces)
    return len(people), sum(len(photos) for _, photos in people)


def run_size(env: BenchEnv, options: argparse.Namespace, min_faces: int) -> list[dict[str, Any]]:
    """Ours cold, then warm on the cache the cold run filled: two records."""
    people, images = gallery(min_faces)
    # scikit-learn memoises each min_faces_per_person apart: decode this subset before any timed run
    probe = f"from bench.data import load_split; load_split('lfw', 96, {options.seed}, {min_faces})"
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env.env(), check=True, capture_output=True)
    cache, records = env.scratch("cache"), []
    for cache_state in ("cold", "warm"):
        args = ["--dataset", "lfw", "--min-faces", str(min_faces), "--goal", f"{options.goal:g}"]
        args += ["--seed", str(options.seed), "--budget-seconds", f"{options.budget_seconds:g}"]
        args += ["--weights", str(options.weights), "--cache-dir", str(cache), "--work-dir", str(env.scratch("work"))]
        record = run_child("bench.ours", args, env.env(), options.budget_seconds, env.root)
        record.update(record="run", people=people, images=images, min_faces=min_faces, cache_state=cache_state)
        records.append(record)
        print(_line(record), flush=True)
    return records


def _line(record: dict[str, Any]) -> str:
    best = record.get("best_val")
    return (
        f"{record['people']:4d} people {record['images']:5d} images {record['cache_state']:4s} "
        f"{record['wall_s']:7.1f}s goal_met={record['goal_met']} best_val={best if best is None else round(best, 4)} "
        f"trials={record.get('trials')} rss={record['peak_rss_mb']:.0f}MB load_max={record['load_max']:.1f}"
    )


def markdown(header: dict[str, Any], records: list[dict[str, Any]], goal: float) -> str:
    """The table: one row per gallery, cold and warm side by side."""
    rows = [
        f"# Time to goal against the number of real people (LFW subsets), {header['date']}",
        "",
        f"Command: `{header['command']}`. {header['cpu_count']} CPUs, {header['cpu'].get('model', '?')}. "
        f"Face model, face weights, 96 px, goal val_accuracy >= {goal:g}, at most 40 trials, 60/20/20 split, "
        "one run each (cold: empty feature cache; warm: the cache the cold run filled, a new study).",
        "",
        "| people | images | cold: time to goal (s) | of which features (s) | warm: time to goal (s) "
        "| trials cold / warm | best val (cold) | test (cold) | peak RSS cold / warm (MB) | load max | goal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_size.setdefault(record["people"], {})[record["cache_state"]] = record
    for people in sorted(by_size):
        cold, warm = by_size[people]["cold"], by_size[people]["warm"]
        features = (cold.get("stage_s") or {}).get("features")
        met = "met" if cold["goal_met"] and warm["goal_met"] else "**not met: the time is not a time to goal**"
        if cold.get("killed") or warm.get("killed"):
            met = "**cut by the budget: not a result**"
        rows.append(
            f"| {people} | {cold['images']} | {cold['wall_s']:.1f} | {_num(features)} | {warm['wall_s']:.1f} | "
            f"{cold.get('trials')} / {warm.get('trials')} | {_num(cold.get('best_val'), 3)} | "
            f"{_num(cold.get('test'), 3)} | "
            f"{cold['peak_rss_mb']:.0f} / {warm['peak_rss_mb']:.0f} | {max(cold['load_max'], warm['load_max']):.1f}"
            f"{' (overloaded)' if cold['overloaded'] or warm['overloaded'] else ''} | {met} |"
        )
    return "\n".join(rows) + "\n"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Time to goal (cold, warm) and peak RSS against people."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for state, marker in (("cold", "o-"), ("warm", "s--")):
        mine = sorted((r["people"], r["wall_s"], r["peak_rss_mb"]) for r in records if r["cache_state"] == state)
        left.plot([m[0] for m in mine], [m[1] for m in mine], marker, label=state)
        right.plot([m[0] for m in mine], [m[2] for m in mine], marker, label=state)
    left.set(xlabel="people (LFW subsets)", ylabel="seconds to goal", title="time to goal")
    right.set(xlabel="people (LFW subsets)", ylabel="MB", title="peak RSS of mlops tune")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> Path:
    """Run every gallery size; write the JSONL, the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-faces", default="70,50,30,20", help="LFW min photos per person, comma-separated")
    parser.add_argument("--goal", type=float, default=0.90)
    parser.add_argument("--budget-seconds", type=float, default=1800.0, help="per run")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weights", type=Path, default=default_weights())
    options = parser.parse_args(argv)
    require_lfw_raw()
    base = RESULTS / f"{datetime.now().strftime('%Y-%m-%d-%H%M')}-gallery-people"
    command = [Path(sys.executable).name, "-m", "bench.gallery_people", *(argv if argv is not None else sys.argv[1:])]
    header = {**machine_header(command, options.weights), "goal": options.goal}
    env = BenchEnv(options.seed)
    records: list[dict[str, Any]] = []
    try:
        for min_faces in (int(part) for part in options.min_faces.split(",")):
            records += run_size(env, options, min_faces)
    finally:
        env.cleanup()
    base.with_suffix(".jsonl").write_text("\n".join(json.dumps(r, default=str) for r in [header, *records]) + "\n")
    base.with_suffix(".md").write_text(markdown(header, records, options.goal))
    plot(records, base.with_suffix(".png"))
    print(f"wrote {base}.jsonl, .md, .png")
    return base


if __name__ == "__main__":
    main()
