"""One trial: sample parameters, train the model's candidate, log it, judge it against the goal."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from pipeline.sdk.contract import ModelPlugin, TrainResult, TrialContext
from pipeline.summary import GoalSpec
from pipeline.tracking.tracker import STUDY_TAG, TRIAL_TAG, Tracker
from pipeline.tune.confidence import wilson_interval
from pipeline.tune.sampling import duplicate_of
from pipeline.tune.study import INTERRUPTED_ATTR, WORKER_ATTR, trial_origin, worker_id


def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"units": [64, 32]}`` -> ``{"units_0": 64, "units_1": 32}`` (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, list):
            flat.update({f"{name}_{i}": v for i, v in enumerate(value)})
        else:
            flat[name] = value
    return flat


def interval_for(goal: GoalSpec, value: float, n: int | None) -> tuple[float, float] | None:
    """The Wilson interval when the goal's metric is an accuracy measured on ``n`` examples."""
    if n and "accuracy" in goal.metric:
        return wilson_interval(value, n)
    return None


class Objective:
    """The function Optuna optimizes, bound to one prepared data set.

    Args:
        plugin: the model.
        data: what the model's ``prepare`` returned.
        goal: the goal (metric, direction, target, confidence).
        tracker: MLflow writer; ``parent_id`` the search's parent run.
        checkpoints: folder of per-trial checkpoint folders.
        tags: tags for every trial run (git commit, data fingerprint).
        seed: the study seed; trial ``n``'s seed derives from it.
        log: prints one line per trial.
    """

    def __init__(
        self,
        plugin: ModelPlugin,
        data: Any,
        goal: GoalSpec,
        tracker: Tracker,
        parent_id: str,
        checkpoints: Path,
        tags: Mapping[str, str],
        seed: int,
        log: Callable[[str], None],
    ) -> None:
        self.plugin, self.data, self.goal = plugin, data, goal
        self.tracker, self.parent_id, self.checkpoints = tracker, parent_id, checkpoints
        self.tags, self.seed, self.log = dict(tags), seed, log
        self.best: tuple[int, TrainResult] | None = None  # kept so the winner is not retrained
        self.logging_seconds = 0.0
        self._run_id: str | None = None  # the running trial's MLflow run

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
        params = self.plugin.manifest.search_space.sample(trial)
        origin = trial_origin(trial)
        checkpoint_dir = self.checkpoints / f"trial-{origin:04d}"
        trial.set_user_attr(WORKER_ATTR, worker_id())
        tags = {**self.tags, TRIAL_TAG: str(trial.number), STUDY_TAG: trial.study.study_name}
        if origin != trial.number:
            tags["optuna.retry_of"] = str(origin)
        run_id = self._timed(
            self.tracker.trial_run, trial.user_attrs.get("mlflow_run_id"), self.parent_id, f"trial-{trial.number}", tags
        )
        self._run_id = run_id
        trial.set_user_attr("mlflow_run_id", run_id)
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
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        context = TrialContext(
            trial.number, self.seed + origin, report, checkpoint_dir, self.goal.metric, self.goal.direction, self.log
        )
        try:
            result = self.plugin.train(self.data, params, context)
        except optuna.TrialPruned:
            last = seen.get(self.goal.metric, {})
            value = last[max(last)] if last else float("nan")
            self._close(run_id, params, {self.goal.metric: value}, seen, "PRUNED", "FINISHED")
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # a pruned trial's weights are never needed
            self._line(trial.number, "pruned", value, None, time.perf_counter() - started, params, seen)
            raise
        except Exception:
            self._close(run_id, params, {}, seen, "FAIL", "FAILED")
            raise
        interval = interval_for(self.goal, result.value, result.n_val)
        met = self.goal.reached(result.value, interval[0] if interval else None)
        metrics = {self.goal.metric: result.value}
        if interval:
            trial.set_user_attr("interval", list(interval))
            metrics.update({f"{self.goal.metric}_lower95": interval[0], f"{self.goal.metric}_upper95": interval[1]})
        self._close(run_id, params, metrics, result.history, "COMPLETE", "FINISHED", goal_met=met)
        for name in ("latest.npz", "latest.previous.npz"):  # keep only the best epoch's weights
            (checkpoint_dir / name).unlink(missing_ok=True)
        if self._better(result.value):
            self.best = (trial.number, result)
        state = "goal met" if met else "complete"
        self._line(trial.number, state, result.value, interval, time.perf_counter() - started, params, seen)
        return result.value

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best[1].value if self.goal.direction == "maximize" else value < self.best[1].value

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
        self._timed(self.tracker.log, run_id, params=flatten(params), metrics=metrics, tags=tags, history=history)
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
    ) -> None:
        bounds = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        shown = " ".join(f"{k}={_short(v)}" for k, v in params.items())
        epochs = seen.get(self.goal.metric, {})
        resumed = f"  (resumed at epoch {min(epochs)})" if epochs and min(epochs) > 0 else ""
        self.log(
            f"trial {number:3d}  {state:9s} {self.goal.metric} {value:.4f}{bounds}  {seconds:5.2f}s  {shown}{resumed}"
        )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    return str(value)
