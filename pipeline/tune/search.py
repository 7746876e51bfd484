"""``mlops tune``: search a model's hyperparameters until its goal is met or the budget is spent.

One call prepares the data once, opens (or resumes) the study and its MLflow parent run,
runs trials until a trial reaches the goal (``study.stop()``), the trial budget or the
timeout, then scores the best trial once on the test split, logs plots and the model, and
registers it when the goal was met (alias ``champion`` if it beats the champion there is:
``pipeline.tracking.promotion``). Ctrl-C or SIGTERM ends it cleanly:
the running trial keeps its checkpoint and is queued for retry, its MLflow run and the
parent run end KILLED, and the same command continues the study.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from pipeline import heap, sqlite_wal
from pipeline.build.dockerfiles import normalize_framework
from pipeline.config.manifest import ModelManifest
from pipeline.config.preflight import check_run
from pipeline.config.settings import TuneSettings, apply_overrides
from pipeline.errors import ExitCode, MlopsError
from pipeline.report.formatting import trials_text
from pipeline.sdk.contract import StudyContext, load_plugin
from pipeline.summary import TuneSummary
from pipeline.tracking.tracker import Tracker
from pipeline.tracking.versioning import git_commit
from pipeline.tune import interrupts
from pipeline.tune.attributes import PARENT_ATTR, RESTARTS_ATTR, RUN_ID_ATTR, SEARCH_ATTR
from pipeline.tune.failure_streak import FailureStreak
from pipeline.tune.first_trials import queue_first_trials
from pipeline.tune.interrupts import Interrupted
from pipeline.tune.objective import Objective
from pipeline.tune.results import finish_study
from pipeline.tune.search_run import SearchRun
from pipeline.tune.stage_times import StageClock
from pipeline.tune.staged import staged_search
from pipeline.tune.study import (
    claim_parent_run,
    finished,
    goal_met_trials,
    open_study,
    reclaim_dead_trials,
    retry_interrupted,
    stop_rules,
)
from pipeline.tune.warm_start import record_data, warm_start
from pipeline.tune.workers import Helpers, start_helpers


def study_name_for(manifest: Any, data: dict[str, Any], params: dict[str, Any], seed: int) -> str:
    """Model name plus a hash of everything that makes trials comparable.

    A changed data source, weights file, search space or seed starts a new study instead of
    mixing incomparable trials into an old one; the same command resumes the same study.
    """
    space = [(p.name, p.type, p.low, p.high, p.log, list(p.choices), p.per_layer) for p in manifest.search_space.params]
    parts = {"data": data, "params": params, "space": space, "metric": manifest.goal.metric, "seed": seed}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{manifest.name}-{digest[:8]}"


@dataclass
class _Progress:
    """What a search has opened so far: what an interrupt must close."""

    study: optuna.Study | None = None
    storage: RDBStorage | None = None
    tracker: Tracker | None = None
    parent_id: str | None = None
    helpers: Helpers | None = None  # this command's helper processes (--workers)
    helper: bool = False  # this process is a helper: the command owns the parent run and the result


def tune(model_dir: Path, settings: TuneSettings, log: Callable[[str], None] = print) -> TuneSummary:
    """Run (or resume) the search for the model in ``model_dir``.

    Returns:
        The summary (also written to ``<runs_dir>/<model>/summary.json``); its ``exit_code``
        is 0 when the goal was met and ``ExitCode.GOAL_NOT_MET`` when it was not.

    Raises:
        MlopsError: for bad configuration, unreadable data, unreachable services.
        Interrupted: after Ctrl-C or SIGTERM, once the running trial is queued for retry
            (its checkpoint kept) and its MLflow run and the parent run ended KILLED; its
            ``message`` is the one line to show.
    """
    summary = _run(model_dir, settings, log, _Progress())
    assert summary is not None  # only a helper's search returns none
    return summary


def help_search(model_dir: Path, settings: TuneSettings, log: Callable[[str], None] = print) -> None:
    """A helper's part of ``tune`` (``pipeline/tune/workers.py``): trials on the command's study, nothing after.

    Raises:
        MlopsError, Interrupted: as ``tune``; the parent run is left to the command.
    """
    _run(model_dir, settings, log, _Progress(helper=True))


def _run(
    model_dir: Path, settings: TuneSettings, log: Callable[[str], None], progress: _Progress
) -> TuneSummary | None:
    """``_search`` with its clean-up: interrupts, failures, helpers, the study's SQLite log."""
    try:
        return _search(model_dir, settings, log, progress)
    except KeyboardInterrupt as stop:
        raise _stopped(stop, progress, log) from None
    except Exception:
        # A bad input or a crash after the parent run opened: the run ends FAILED, not RUNNING.
        if progress.tracker is not None and progress.parent_id is not None and not progress.helper:
            try:
                progress.tracker.finish(progress.parent_id, "FAILED")
            except Exception as error:  # the original error is the one to show
                log(f"could not close MLflow run {progress.parent_id} ({type(error).__name__}: {error})")
        raise
    finally:
        if progress.helpers is not None:  # an error or an interrupt: they stop too
            progress.helpers.stop()
        if progress.storage is not None:  # a SQLite study whole in optuna.db again, its log folded in
            sqlite_wal.close(progress.storage.engine)


def _stopped(stop: KeyboardInterrupt, progress: _Progress, log: Callable[[str], None]) -> Interrupted:
    """Leave the study and MLflow resumable after an interrupt; the line to show."""
    study, storage, tracker, parent_id = progress.study, progress.storage, progress.tracker, progress.parent_id
    if progress.helpers is not None:  # before the study is read: their interrupted trials are queued too
        progress.helpers.stop()
    kept = 0
    try:
        if study is not None and storage is not None:
            retry_interrupted(study, storage)  # the trial that was running: same params, same checkpoint
            kept = len(finished(study))
            if tracker is not None and parent_id is not None:
                tracker.close_orphans(parent_id, live=_live_runs(study, waiting=False))
                if not progress.helper:  # the command's run: a helper stopped by it leaves the run to it
                    tracker.finish(parent_id, "KILLED")
    except Exception as error:  # a store failing now must not turn the stop into a crash
        log(f"interrupted: could not record it all ({type(error).__name__}: {error}); the next run finishes it")
    return interrupts.stopped(stop, f"interrupted: {kept} trial(s) kept; run the same command to continue")


def _search(
    model_dir: Path, settings: TuneSettings, log: Callable[[str], None], progress: _Progress
) -> TuneSummary | None:
    started = time.perf_counter()
    clock = StageClock()
    plugin = load_plugin(model_dir)
    check_run(plugin.manifest, settings)  # before any folder, store, run or data
    if not progress.helper:  # now, so their start-up overlaps this process's imports and data
        progress.helpers = start_helpers(model_dir, settings, log)
    manifest = plugin.manifest
    goal = replace(
        manifest.goal,
        target=manifest.goal.target if settings.goal is None else settings.goal,
        confidence=manifest.goal.confidence or settings.goal_confidence,
    )
    data_options, params = apply_overrides(manifest, settings)
    name = settings.study_name or study_name_for(manifest, data_options, params, settings.seed)
    # A search parameter that params also sets (--set params.fine_tune_blocks=0) is held there.
    manifest = replace(manifest, search_space=manifest.search_space.fixing(params))
    plugin = replace(plugin, manifest=manifest)
    run_dir = settings.runs_dir.resolve() / manifest.name
    run_dir.mkdir(parents=True, exist_ok=True)
    heap.preload(["mlflow"])  # the collector paused while it loads (pipeline/heap.py)
    tracker = Tracker(settings.tracking, settings.experiment or manifest.name)  # fail fast, before the data
    study, storage = open_study(name, goal.direction, settings)
    heap.preload(heap.framework_modules(_framework(manifest)))  # what every trial imports: now, the same way
    progress.study, progress.storage, progress.tracker = study, storage, tracker
    # `mlops status --study NAME` has no model folder: it reads the goal and budget from here.
    study.set_user_attr(SEARCH_ATTR, {"model": manifest.name, "goal": asdict(goal), "max_trials": settings.max_trials})
    log(
        f"study {name} in {settings.storage_url if settings.storage else run_dir.parent / 'optuna.db'}: "
        f"{len(finished(study))} finished trial(s) so far; goal {goal.metric} "
        f"{goal.sign} {goal.target:g}"
        f"{' (Wilson 95% lower bound)' if goal.confidence else ''}"
    )

    context = StudyContext(manifest, data_options, params, settings.seed, settings.cache_dir, log)
    context.feature_shard_size = settings.feature_shard_size  # resumes the shards a killed extraction left
    clock.lap("setup")
    data = plugin.prepare(context)
    clock.lap("prepare")
    fingerprint = str(context.facts.get("data_fingerprint", ""))
    record_data(study, fingerprint)  # later studies on these data start from this one's best
    commit = git_commit(manifest.folder, settings.commit)
    tags = {"git_commit": commit, "data_fingerprint": fingerprint}
    previous = study.user_attrs.get(PARENT_ATTR)
    parent_id = claim_parent_run(
        study, lambda run_id: tracker.parent_run(run_id, name, {**tags, "model": manifest.name})
    )
    progress.parent_id = parent_id
    # MLflow params are write-once: logged when the parent run is made. The goal may change
    # between runs of one study (--goal 0.95 after 0.90), so it goes in tags, which may.
    options = {**{f"data.{k}": v for k, v in data_options.items()}, **{f"params.{k}": v for k, v in params.items()}}
    tracker.log(
        parent_id,
        params={"model": manifest.name, **options} if parent_id != previous else None,
        tags={
            **tags,
            "goal": f"{goal.metric} {goal.direction} {goal.target:g}",
            **{f"data.{k}": v for k, v in context.facts.items()},
        },
    )

    _record_restart(study, settings, tracker, parent_id, log)
    reclaimed = reclaim_dead_trials(study, storage)
    if reclaimed:
        numbers = ", ".join(map(str, reclaimed))
        log(f"resuming: trial(s) {numbers} died with their process; retrying from their checkpoints")
    tracker.close_orphans(parent_id, live=_live_runs(study))

    checkpoints = run_dir / name / "checkpoints"
    run = SearchRun(plugin, data, goal, tracker, parent_id, run_dir, checkpoints, tags, settings, log)
    objective = Objective(run)
    staged = staged_search(settings, manifest.search_space, goal, log)  # None: one flat search
    if goal_met_trials(study, goal):
        log("the goal was already met in this study; reporting its best trial")
    elif len(finished(study)) < settings.max_trials:
        streak = FailureStreak(str(manifest.folder))
        if settings.warm_start:  # queued before the staged search's first trial: they run first
            warm_start(study, manifest.name, goal.metric, manifest.search_space, log)
        first_stage = (staged.param, staged.low) if staged is not None else None
        queue_first_trials(study, settings.first_trials, manifest.search_space, first_stage, log)
        if staged is not None:
            staged.prime(study)
        run.deadline = time.monotonic() + settings.timeout if settings.timeout else None
        study.optimize(
            streak.watch(objective),
            timeout=settings.timeout,
            callbacks=[*stop_rules(settings.max_trials, goal), streak, *([staged] if staged else [])],
            catch=(Exception,),  # a trial's crash fails that trial; three alike stop the study
        )
        # The parent run is the command's to end: a helper whose trials keep failing just stops.
        streak.raise_if_stopped(on_stop=None if progress.helper else lambda: tracker.finish(parent_id, "FAILED"))
    if progress.helper:
        return None  # the command scores, logs and registers the study's best
    if progress.helpers is not None:  # the search is over: a trial a helper still runs is queued for retry
        progress.helpers.stop()
    tracker.close_orphans(parent_id, live=_live_runs(study, waiting=False))  # other workers' may still run
    clock.lap("search")

    summary = finish_study(study, run, objective)
    summary.staged = staged.summary(study) if staged is not None else None
    clock.lap("finish")
    clock.split_features(context.facts)
    summary.stage_seconds = {stage: round(seconds, 3) for stage, seconds in clock.seconds.items()}
    tracker.log(parent_id, metrics={f"stage_seconds.{k}": v for k, v in summary.stage_seconds.items()})
    summary.wall_seconds = time.perf_counter() - started
    summary.feature_cache_hit = context.facts.get("feature_cache_hit")
    summary.data_notes = [str(note) for note in context.notes]
    summary.exit_code = ExitCode.OK if summary.goal_met else ExitCode.GOAL_NOT_MET
    summary.write(run_dir / "summary.json")
    tracker.log_artifact(parent_id, str(run_dir / "summary.json"))
    tracker.finish(parent_id, "FINISHED")
    _print_summary(summary, objective.logging_seconds, log)
    log(clock.line())
    return summary


def _framework(manifest: ModelManifest) -> str | None:
    """The model's framework as the image builder names it (``tf.keras`` -> keras; none given: the kind's)."""
    try:
        return normalize_framework(manifest.framework, manifest.kind or "")  # no kind: unknown, so none
    except MlopsError:  # one the builder does not know: nothing to preload, the trials import their own
        return None


def _record_restart(
    study: optuna.Study, settings: TuneSettings, tracker: Tracker, parent_id: str, log: Callable[[str], None]
) -> None:
    """When a supervisor restarted us (``settings.restarts``), count it on the study and in the parent run."""
    if not settings.restarts:
        return
    total = int(study.user_attrs.get(RESTARTS_ATTR, 0)) + 1
    study.set_user_attr(RESTARTS_ATTR, total)
    reason = settings.restart_reason or "unknown"
    tracker.log(parent_id, metrics={"restarts": total}, tags={f"mlops.restart.{total}": reason})
    log(f"restart {total}: the previous run {reason}")


def _live_runs(study: optuna.Study, waiting: bool = True) -> set[str]:
    """MLflow runs of trials running (here or in another worker), and of retries about to run here.

    Once this process runs no more trials (``waiting=False``), a retry still WAITING is not
    running: its run is closed KILLED, not left RUNNING, and re-opened when a run gets to it.
    """
    running = (optuna.trial.TrialState.RUNNING,)
    states = (optuna.trial.TrialState.WAITING, *running) if waiting else running
    return {str(t.user_attrs.get(RUN_ID_ATTR)) for t in study.get_trials(deepcopy=False, states=states)}


def _print_summary(summary: TuneSummary, logging_seconds: float, log: Callable[[str], None]) -> None:
    goal, best = summary.goal, summary.best
    if best is None:
        log(f"goal NOT met: no trial finished ({summary.trials_failed} failed)")
    else:
        bounds = f" [{best.interval[0]:.3f}, {best.interval[1]:.3f}]" if best.interval else ""
        verdict = "goal met" if summary.goal_met else "goal NOT met"
        best_line = f"best {goal.metric} {best.value:.4f}{bounds} (trial {best.number})"
        log(f"{verdict}: {best_line}, goal {goal.sign} {goal.target:g}")
        if best.test_value is not None:
            log(f"test {goal.metric.removeprefix('val_')}: {best.test_value:.4f} (held-out split, scored once)")
    log(f"trials: {trials_text(summary)} in {summary.wall_seconds:.1f}s; MLflow logging {logging_seconds:.1f}s")
    if summary.registered_model:
        alias = "challenger" if summary.promotion is not None and not summary.promotion.promoted else "champion"
        log(f"model: registered {summary.registered_model} (alias {alias})")
    log(f"runs: MLflow {summary.tracking_uri}, experiment {summary.model}, parent run {summary.mlflow_parent_run_id}")
    log(f"summary: {Path(summary.run_dir) / 'summary.json'}")
