"""``mlops status [MODEL_DIR | --study NAME]``: where a search stands, read without disturbing it.

It reads the study from Optuna's storage (opened read-only: ``pipeline.tune.readonly``) and
the champion from MLflow's registry, for a search running now in any process or machine, or
one that ended. Settings resolve exactly as ``mlops tune`` resolves them (model.yaml,
mlops.yaml, ``MLOPS_*``, flags), so the same flags find the same study.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.commands.edge import environment, model_settings
from pipeline.config.environment import Environment
from pipeline.errors import ExitCode, MlopsError
from pipeline.summary import GoalSpec

if TYPE_CHECKING:
    from pipeline.tracking.status import Champion
    from pipeline.tune.status import SearchStatus


def register(app: typer.Typer) -> None:
    """Add the ``status`` command to the CLI."""

    @app.command("status")
    def status_command(
        ctx: typer.Context,
        model_dir: Annotated[
            Path | None, typer.Argument(help="The model folder whose search to show (its settings name the study).")
        ] = None,
        study: Annotated[
            str | None, typer.Option(help="The study's name; default: the one `mlops tune MODEL_DIR` uses.")
        ] = None,
        storage: Annotated[
            str | None, typer.Option(help="Optuna storage URL; default: sqlite:///mlops-runs/optuna.db.")
        ] = None,
        runs_dir: Annotated[Path | None, typer.Option(help="The search's runs folder; default mlops-runs.")] = None,
        tracking_uri: Annotated[
            str | None,
            typer.Option(help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db."),
        ] = None,
        max_trials: Annotated[
            int | None, typer.Option(help="Trial budget to judge by; default: the one the search recorded.")
        ] = None,
        goal: Annotated[
            float | None, typer.Option(help="Goal to judge by; default: the one the search recorded.")
        ] = None,
        weights: Annotated[str | None, typer.Option(help="The --weights the search ran with.")] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="The --set overrides the search ran with.")
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object (one per refresh with --watch).")
        ] = False,
        watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C (then exit 0).")] = False,
        interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)] = 5.0,
    ) -> None:
        """Show a search's state, trials, best value, time spent and left, and the champion model."""
        flags: dict[str, Any] = {
            "study_name": study,
            "storage": storage,
            "runs_dir": runs_dir,
            "tracking_uri": tracking_uri,
            "max_trials": max_trials,
            "goal": goal,
            "weights": weights,
            "overrides": set_ or None,
        }
        target = resolve_target(model_dir, flags, environment(ctx))
        show = _show_json if as_json else _show_text
        from pipeline.tune.readonly import load_readonly

        opened = load_readonly(target.study, target.storage_url)
        target = from_study(target, opened[0])
        if not watch:
            show(*snapshot(target, *opened), clear=False)
            raise typer.Exit(ExitCode.OK)
        with _ctrl_c_ends_quietly():
            try:
                while True:
                    show(*snapshot(target, *opened), clear=sys.stdout.isatty())
                    time.sleep(interval)
                    if not as_json and not sys.stdout.isatty():
                        typer.echo("")  # a blank line between blocks in a log
            except KeyboardInterrupt:
                pass  # the way out of --watch, not a failure
        raise typer.Exit(ExitCode.OK)


@dataclass
class Target:
    """What to read: the study, its storage, the budget, goal and grace period, the model's name."""

    study: str
    storage_url: str
    tracking_uri: str
    max_trials: int
    goal: GoalSpec | None  # None: unknown (a bare --study on a study that recorded none)
    grace_period: float
    model: str | None  # whose champion to show; None: unknown
    flags: frozenset[str] = frozenset()  # the settings given to this command: they beat what the run recorded


def resolve_target(model_dir: Path | None, flags: dict[str, Any], env: Environment) -> Target:
    """The settings ``mlops tune`` would use for ``model_dir``, or, given only ``--study``, the flags.

    Raises:
        MlopsError: neither a model folder nor ``--study`` was given, or a setting is invalid.
    """
    from pipeline.config.settings import find_repo_config, read_repo_config, resolve_settings

    given = frozenset(name for name, value in flags.items() if value is not None)
    if model_dir is None:
        if flags["study_name"] is None:
            raise MlopsError("mlops status: give MODEL_DIR (e.g. models/face_vgg16) or --study NAME")
        config_path = find_repo_config(Path.cwd(), env.config_path)
        settings = resolve_settings({}, read_repo_config(config_path), flags, config_path, environ=env)
        goal = GoalSpec(target=settings.goal) if settings.goal is not None else None  # completed by from_study
        return Target(
            flags["study_name"],
            settings.storage_url,
            settings.tracking,
            settings.max_trials,
            goal,
            settings.grace_period,
            None,
            given,
        )
    from pipeline.config.settings import apply_overrides
    from pipeline.tune.search import study_name_for

    manifest, settings = model_settings(env, model_dir, flags)
    name = settings.study_name or study_name_for(manifest, *apply_overrides(manifest, settings), settings.seed)
    goal = replace(  # as ``mlops tune`` judges it
        manifest.goal,
        target=manifest.goal.target if settings.goal is None else settings.goal,
        confidence=manifest.goal.confidence or settings.goal_confidence,
    )
    return Target(
        name,
        settings.storage_url,
        settings.tracking,
        settings.max_trials,
        goal,
        settings.grace_period,
        manifest.name,
        given,
    )


def from_study(target: Target, study: Any) -> Target:
    """``target`` with what the study's latest run recorded (goal, budget, model); this command's flags win.

    The run's record beats the model's settings: it is what the search really runs with
    (``--goal-confidence``, ``MLOPS_MAX_TRIALS`` in its environment...).
    """
    from pipeline.tune.attributes import SEARCH_ATTR

    recorded = study.user_attrs.get(SEARCH_ATTR) or {}
    goal = target.goal
    if "goal" in recorded:
        goal = GoalSpec(**{k: v for k, v in recorded["goal"].items() if k in GoalSpec.__dataclass_fields__})
        if target.goal is not None and "goal" in target.flags:
            goal = replace(goal, target=target.goal.target)
    elif goal is not None and target.model is None:  # --goal on a study that recorded none: its own value
        goal = replace(goal, metric="value", direction=study.direction.name.lower())
    budget = target.max_trials
    if "max_trials" not in target.flags:
        budget = int(recorded.get("max_trials", budget))
    return replace(target, goal=goal, model=target.model or recorded.get("model"), max_trials=budget)


def snapshot(target: Target, study: Any, storage: Any) -> tuple[SearchStatus, Champion | None]:
    """The search's status now, and its model's champion (None when no model is named)."""
    from pipeline.tracking.status import read_champion
    from pipeline.tune.status import read_status
    from pipeline.tune.study import redact

    status = read_status(
        study, storage, redact(target.storage_url), target.max_trials, target.goal, target.grace_period
    )
    champion = read_champion(target.model, target.tracking_uri) if target.model else None
    return status, champion


@contextlib.contextmanager
def _ctrl_c_ends_quietly() -> Iterator[None]:
    """Ctrl-C as Python's plain ``KeyboardInterrupt``, not the CLI's recorded stop (exit 130).

    ``pipeline.cli.main`` turns SIGINT into a stop that ends with 130; watching has nothing
    to clean up and ends at Ctrl-C by design. SIGTERM keeps the CLI's handling (143).
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _show_json(status: SearchStatus, champion: Champion | None, clear: bool) -> None:
    typer.echo(json.dumps({**status.to_json(), "champion": asdict(champion) if champion else None}))


def _show_text(status: SearchStatus, champion: Champion | None, clear: bool) -> None:
    if clear:
        typer.echo("\x1b[H\x1b[2J", nl=False)  # redraw in place on a terminal
    typer.echo("\n".join(render(status, champion)))


def render(status: SearchStatus, champion: Champion | None) -> list[str]:
    """The compact human block, one ``label  value`` line each."""
    c = status.counts
    lines = [
        f"study     {status.study} in {status.storage}",
        f"state     {status.state} ({status.reason})",
        f"trials    {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, {c['running']} running, "
        f"{c['waiting']} waiting; {status.finished} of max {status.max_trials} finished",
        f"best      {_best(status)}",
        f"time      {_duration(status.elapsed_seconds)} since {status.started or '-'}"
        + (f"; {status.restarts} restart(s)" if status.restarts else ""),
    ]
    if status.state != "finished":
        lines.append(f"left      {_left(status)}")
    if champion is not None:
        lines.append(f"champion  {_champion(champion)}")
    return lines


def _best(status: SearchStatus) -> str:
    goal, best = status.goal, status.best
    metric = goal.metric if goal else "value"
    if best is None:
        text = "no complete trial yet"
    else:
        bounds = f" [{best.interval[0]:.3f}, {best.interval[1]:.3f}]" if best.interval else ""
        text = f"{metric} {best.value:.4f}{bounds} (trial {best.number})"
    if goal is not None:
        text += f"; goal {goal.sign} {goal.target:g}{' (lower bound)' if goal.confidence else ''}: "
        text += "met" if status.goal_met else "not met"
    return text


def _left(status: SearchStatus) -> str:
    if status.eta_seconds is None:
        return "unknown until a trial finishes"
    remaining = max(0, status.max_trials - status.finished)
    per = f"median {_duration(status.median_trial_seconds or 0.0)}"
    workers = f" / {status.workers} workers" if status.workers > 1 else ""
    return f"~{_duration(status.eta_seconds)} ({remaining} trials x {per}{workers}; {status.eta_note})"


def _champion(champion: Champion) -> str:
    if champion.version is None:
        return f"{champion.model}: {champion.note}"
    if champion.since and champion.since != champion.registered:
        return f"{champion.model} version {champion.version}, since {champion.since} (registered {champion.registered})"
    return f"{champion.model} version {champion.version}, since {champion.registered} (its registration)"


def _duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
