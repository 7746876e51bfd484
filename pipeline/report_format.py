"""How a ``TuneSummary``'s figures read to a person: shared by the e-mail and the CI summary.

Both reports must say the same thing in the same words (a reviewer who sees "0.9487" on the
pull request should find "0.9487" in the e-mail), so the formatting lives here, once.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.summary import TuneSummary


def format_value(value: float | None) -> str:
    """Format a metric value: two decimals when that is exact, else four significant digits.

    Args:
        value: the number, or ``None``.

    Returns:
        ``"0.90"`` for 0.9, ``"0.9487"`` for 0.94871, ``"–"`` for ``None``.
    """
    if value is None:
        return "–"
    if abs(value) < 1e4 and round(value, 2) == value:
        return f"{value:.2f}"
    return f"{value:.4g}"


def format_interval(interval: tuple[float, float] | None) -> str:
    """Format a Wilson interval as ``[0.91, 0.97]``, or ``""`` when there is none."""
    if interval is None:
        return ""
    return f"[{format_value(interval[0])}, {format_value(interval[1])}]"


def format_duration(seconds: float) -> str:
    """Format a wall time: ``"12.3 s"``, ``"4m 05s"``, ``"1h 02m 03s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def format_param(value: object) -> str:
    """Format one hyper-parameter value (floats to four significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def goal_text(summary: TuneSummary) -> str:
    """The goal as one phrase, e.g. ``val_accuracy >= 0.90`` (``lower 95% bound`` when asked)."""
    goal = summary.goal
    op = "<=" if goal.direction == "minimize" else ">="
    bound = " (lower 95% bound)" if goal.confidence and goal.direction != "minimize" else ""
    return f"{goal.metric}{bound} {op} {format_value(goal.target)}"


def goal_check(summary: TuneSummary) -> str:
    """The comparison that decided the goal, e.g. ``val_accuracy 0.95 >= 0.90``.

    When the goal is checked on the interval's lower bound, that bound is what is compared,
    so the line never claims ``0.95 >= 0.95`` for a goal that was missed on its bound.
    """
    goal = summary.goal
    best = summary.best
    if best is None:
        return "no completed trial"
    checked, label = best.value, goal.metric
    if goal.confidence and goal.direction != "minimize" and best.interval is not None:
        checked, label = best.interval[0], f"{goal.metric} lower bound"
    if goal.direction == "minimize":
        op = "<=" if summary.goal_met else ">"
    else:
        op = ">=" if summary.goal_met else "<"
    return f"{label} {format_value(checked)} {op} {format_value(goal.target)}"


def trials_text(summary: TuneSummary) -> str:
    """Trial counts as ``12 (10 complete, 1 pruned, 1 failed)``."""
    return (
        f"{summary.trials_total} ({summary.trials_complete} complete, "
        f"{summary.trials_pruned} pruned, {summary.trials_failed} failed)"
    )


def mlflow_link(summary: TuneSummary) -> tuple[str | None, str]:
    """Where to look at the run in MLflow.

    Returns:
        ``(url, label)``: ``url`` is ``mlflow_run_url`` when set, else one built from an
        HTTP tracking URI and the run id; ``None`` when the store has no web address (a
        SQLite file), in which case ``label`` names the store and the run id to open with
        ``mlflow ui``.
    """
    run_id = summary.mlflow_parent_run_id or (summary.best.mlflow_run_id if summary.best else None)
    if summary.mlflow_run_url:
        return summary.mlflow_run_url, f"run {run_id}" if run_id else "MLflow run"
    uri = summary.tracking_uri.rstrip("/")
    if run_id and uri.startswith(("http://", "https://")):
        experiment = summary.mlflow_experiment_id or "0"
        return f"{uri}/#/experiments/{experiment}/runs/{run_id}", f"run {run_id}"
    if run_id:
        return None, f"run {run_id} in {uri or 'the local store'}"
    return None, uri or "not tracked"


def resolve_plot(summary: TuneSummary, path: str) -> Path:
    """Find a plot file: absolute, relative to the working directory, or to ``run_dir``."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists() or not summary.run_dir:
        return candidate
    return Path(summary.run_dir) / candidate
