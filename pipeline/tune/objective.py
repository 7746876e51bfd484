"""One trial: sample parameters, train the model's candidate, log it, judge it against the goal."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from pipeline import faults
from pipeline.sdk.checkpoints import tidy_finished
from pipeline.sdk.contract import TrainResult, TrialContext
from pipeline.summary import GoalSpec
from pipeline.tracking.tracker import STUDY_TAG, TRIAL_TAG
from pipeline.tune.attributes import (
    FIRST_TRIAL_ATTR,
    INTERRUPTED_ATTR,
    INTERVAL_ATTR,
    RUN_ID_ATTR,
    SEED_ATTR,
    WARM_START_ATTR,
    WORKER_ATTR,
)
from pipeline.tune.confidence import wilson_interval
from pipeline.tune.sampling import duplicate_of
from pipeline.tune.search_run import SearchRun
from pipeline.tune.study import trial_origin, trial_seed, worker_id


def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"units": [64, 32]}`` -> ``{"units_0": 64, "units_1": 32}`` (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, list):
            flat.update({f"{name}_{i}": v for i, v in enumerate(value)})
        else:
            flat[name] = value
    return flat


def unlogged(history: Mapping[str, Any], logged: set[int]) -> dict[str, dict[int, float]]:
    """``history`` (per metric, a list indexed by epoch or an epoch -> value map) without ``logged``."""
    kept: dict[str, dict[int, float]] = {}
    for name, values in history.items():
        steps = values.items() if isinstance(values, Mapping) else enumerate(values)
        kept[name] = {int(step): float(value) for step, value in steps if int(step) not in logged}
    return kept


def interval_for(goal: GoalSpec, value: float, n: int | None) -> tuple[float, float] | None:
    """The Wilson interval when the goal's metric is an accuracy measured on ``n`` examples."""
    if n and "accuracy" in goal.metric:
        return wilson_interval(value, n)
    return None


class Objective:
    """The function Optuna optimizes, bound to one search (its model, prepared data, goal, runs).

    Each trial logs one MLflow run nested in ``run.parent_id`` and prints one line.

    Attributes:
        best: this process's best trial so far, (number, result): the winner is not retrained.
        logging_seconds: time spent writing to MLflow.
    """

    def __init__(self, run: SearchRun) -> None:
        self.run = run
        self.goal, self.tracker, self.log = run.goal, run.tracker, run.log
        self.best: tuple[int, TrainResult] | None = None
        self.logging_seconds = 0.0
        self._run_id: str | None = None  # the running trial's MLflow run
        self._logged: set[int] = set()  # epochs its run already holds (an earlier attempt was killed)

    def __call__(self, trial: optuna.Trial) -> float:
        """Run one trial; raises ``optuna.TrialPruned`` when the pruner stops it.

        On Ctrl-C / SIGTERM (``KeyboardInterrupt``) the trial's checkpoint stays, the trial is
        marked for retry (``INTERRUPTED_ATTR``) and its MLflow run ends KILLED.
        """
        self._run_id = None
        try:
            return self._trial(trial)
        except KeyboardInterrupt:
            self._interrupted(trial)
            raise

    def _interrupted(self, trial: optuna.Trial) -> None:
        try:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            if self._run_id is not None:
                # No per-epoch history: the retry logs the whole curve once, into this same run.
                self.tracker.log(self._run_id, tags={"optuna.state": "INTERRUPTED"})
                self.tracker.finish(self._run_id, "KILLED")
        except Exception as error:  # a store that fails now must not turn the stop into a crash
            self.log(f"trial {trial.number}: could not record the interrupt ({type(error).__name__}: {error})")

    def _trial(self, trial: optuna.Trial) -> float:
        run = self.run
        params = run.plugin.manifest.search_space.sample(trial)
        origin = trial_origin(trial)
        checkpoint_dir = run.checkpoints / f"trial-{origin:04d}"
        trial.set_user_attr(WORKER_ATTR, worker_id())
        queued = _queued_by(trial)
        tags = {**run.tags, TRIAL_TAG: str(trial.number), STUDY_TAG: trial.study.study_name, **queued}
        if origin != trial.number:
            tags["optuna.retry_of"] = str(origin)
        run_id = self._timed(
            self.tracker.trial_run, trial.user_attrs.get(RUN_ID_ATTR), run.parent_id, f"trial-{trial.number}", tags
        )
        self._run_id = run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        # A retry of a trial killed after its run was logged (not yet closed) logs no epoch twice.
        retried = origin != trial.number
        self._logged = self._timed(self.tracker.logged_epochs, run_id, self.goal.metric) if retried else set()
        same = duplicate_of(trial.study, trial)
        if same is not None:  # never train a finished trial's parameters again
            self._close(run_id, params, {}, {}, "PRUNED", "FINISHED", extra={"duplicate_of": str(same)})
            self.log(f"trial {trial.number:3d}  pruned    same parameters as trial {same}; not trained again")
            raise optuna.TrialPruned(f"same parameters as trial {same}")
        seen: dict[str, dict[int, float]] = {}
        started = time.perf_counter()

        def report(epoch: int, metrics: Mapping[str, float]) -> None:
            for name, value in metrics.items():
                seen.setdefault(name, {})[epoch] = float(value)
            trial.report(float(metrics[self.goal.metric]), epoch)
            faults.point("epoch")  # mid-trial: reported and checkpointed, not finished
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
            if run.deadline is not None and time.monotonic() > run.deadline:
                raise TimedOut(f"the search's timeout ({run.settings.timeout:g}s) ran out at epoch {epoch}")

        seed = trial_seed(trial, run.seed)
        trial.set_user_attr(SEED_ATTR, seed)  # what a later study's warm start repeats
        context = TrialContext(
            trial.number, seed, report, checkpoint_dir, self.goal.metric, self.goal.direction, self.log,
            run.settings.checkpoint_seconds,
        )  # fmt: skip
        try:
            result = run.plugin.train(run.data, params, context)
        except optuna.TrialPruned as stop:
            last = seen.get(self.goal.metric, {})
            value = last[max(last)] if last else float("nan")
            timed_out = isinstance(stop, TimedOut)
            extra = {"stopped_by": "timeout"} if timed_out else None
            self._close(run_id, params, {self.goal.metric: value}, seen, "PRUNED", "FINISHED", extra=extra)
            tidy_finished(checkpoint_dir, pruned=True)
            state = "timed out" if timed_out else "pruned"
            self._line(trial.number, state, value, None, time.perf_counter() - started, params, seen, queued)
            raise
        except Exception:
            self._close(run_id, params, {}, seen, "FAIL", "FAILED")
            raise
        interval = interval_for(self.goal, result.value, result.n_val)
        met = self.goal.reached(result.value, interval[0] if interval else None)
        metrics = {self.goal.metric: result.value}
        if interval:
            trial.set_user_attr(INTERVAL_ATTR, list(interval))
            metrics.update({f"{self.goal.metric}_lower95": interval[0], f"{self.goal.metric}_upper95": interval[1]})
        # The reported epochs too: what train() reported but keeps out of its history (epoch_seconds).
        self._close(run_id, params, metrics, {**seen, **result.history}, "COMPLETE", "FINISHED", goal_met=met)
        tidy_finished(checkpoint_dir, pruned=False)
        if self.best is None or self.goal.better(result.value, self.best[1].value):
            self.best = (trial.number, result)
        state = "goal met" if met else "complete"
        self._line(trial.number, state, result.value, interval, time.perf_counter() - started, params, seen, queued)
        return result.value

    def _close(
        self,
        run_id: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        history: Mapping[str, Any],
        state: str,
        status: str,
        goal_met: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        tags = {"optuna.state": state, "goal_met": str(goal_met).lower(), **(extra or {})}
        history = unlogged(history, self._logged)
        self._timed(self.tracker.log, run_id, params=flatten(params), metrics=metrics, tags=tags, history=history)
        faults.point("mlflow-log")  # logged, its run not yet closed
        self._timed(self.tracker.finish, run_id, status)

    def _timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.logging_seconds += time.perf_counter() - started

    def _line(
        self,
        number: int,
        state: str,
        value: float,
        interval: tuple[float, float] | None,
        seconds: float,
        params: Mapping[str, Any],
        seen: Mapping[str, Mapping[int, float]],
        queued: Mapping[str, str],
    ) -> None:
        bounds = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        shown = " ".join(f"{k}={_short(v)}" for k, v in params.items() if v != [])  # no widths for no layers
        epochs = seen.get(self.goal.metric, {})
        resumed = f"  (resumed at epoch {min(epochs)})" if epochs and min(epochs) > 0 else ""
        source = "".join(f"  ({_QUEUED_BY[tag]}{text})" for tag, text in queued.items())
        self.log(
            f"trial {number:3d}  {state:9s} {self.goal.metric} {value:.4f}{bounds}  {seconds:5.2f}s  {shown}"
            f"{resumed}{source}"
        )


_QUEUED_BY = {"mlops.warm_start_from": "warm start from ", "mlops.first_trial": ""}


def _queued_by(trial: optuna.Trial) -> dict[str, str]:
    """MLflow tags saying where a queued trial's parameters came from (a warm start, ``tune.first_trials``)."""
    tags = {}
    if WARM_START_ATTR in trial.user_attrs:
        tags["mlops.warm_start_from"] = str(trial.user_attrs[WARM_START_ATTR])
    if FIRST_TRIAL_ATTR in trial.user_attrs:
        tags["mlops.first_trial"] = f"first_trials[{trial.user_attrs[FIRST_TRIAL_ATTR]}]"
    return tags


class TimedOut(optuna.TrialPruned):
    """The search's timeout ran out while a trial trained: it ends pruned at that epoch."""


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    return str(value)
