"""The benchmark's two figures: time to goal per contender, and cost against images / trials."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def time_plot(groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]], path: Path) -> Path | None:
    """Bars of time to goal (log scale) per contender, one panel per (data set, goal).

    The floor's forward pass is a solid line, the floor command a dashed one; a hatched bar
    did not reach the goal (its height is the time it ran).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.report import ORDER

    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for axis, ((dataset, goal), rows) in zip(axes[0], sorted(groups.items()), strict=True):
        names = [n for n in ORDER if n in rows and n != "floor"]
        heights = [statistics.median(r["wall_s"] for r in rows[n]) for n in names]
        bars = axis.bar(range(len(names)), heights, color="#4477aa")
        for bar, name in zip(bars, names, strict=True):
            if not rows[name][0].get("goal_met"):
                bar.set_facecolor("#cc6677")
                bar.set_edgecolor("black")
                bar.set_hatch("//")
        floor = rows.get("floor", [{}])[0]
        if floor.get("pass_s"):
            axis.axhline(floor["pass_s"], color="black", label=f"floor: forward pass {floor['pass_s']:.0f}s")
            axis.axhline(floor["wall_s"], color="black", ls="--", label=f"floor command {floor['wall_s']:.0f}s")
        axis.set_yscale("log")
        axis.set_xticks(range(len(names)), [n.replace(" (", "\n(").replace("-", "-\n", 1) for n in names], fontsize=8)
        axis.set_ylabel("wall time to goal (s, log)")
        axis.set_title(f"{dataset} @ {floor.get('size', '?')} px, goal {goal:g}")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling_plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Left: seconds against images (floor pass, floor command, ours cold); right: against trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [r for r in runs if r.get("role") == "scaling-images"]
    trials = sorted((r for r in runs if r.get("role") == "scaling-trials"), key=lambda r: r.get("trials", 0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    floors = sorted((r for r in images if r["contender"] == "floor"), key=lambda r: r["fraction"])
    ours = sorted((r for r in images if r["contender"] == "ours"), key=lambda r: r["fraction"])
    counts = {r["fraction"]: r.get("n_images") for r in floors}
    if floors:
        left.plot([r["n_images"] for r in floors], [r["pass_s"] for r in floors], "k-o", label="floor: forward pass")
        left.plot([r["n_images"] for r in floors], [r["wall_s"] for r in floors], "k--o", label="floor command")
    if ours:
        left.plot(
            [counts.get(r["fraction"]) for r in ours],
            [r["wall_s"] for r in ours],
            "-o",
            color="#4477aa",
            label="ours, cold cache",
        )
    left.set_xlabel("images")
    left.set_ylabel("seconds")
    left.set_title("time to goal 0.90 against data size")
    left.legend(fontsize=8)
    if trials:
        right.plot(
            [r["trials"] for r in trials],
            [r["wall_s"] for r in trials],
            "-o",
            color="#4477aa",
            label="ours, warm: whole command",
        )
        right.plot(
            [r["trials"] for r in trials],
            [r.get("trials_s", 0) for r in trials],
            "-o",
            color="#228833",
            label="sum of trial times",
        )
    right.set_xlabel("trials")
    right.set_ylabel("seconds")
    right.set_title("cost against trials (goal unreachable)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
