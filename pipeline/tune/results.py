"""After the search: score the best trial on the test split, draw, log, register, promote, summarise.

Every worker of a study gets here and writes its own summary, but the best trial's model is
logged once, registered once and put through the promotion gate once (``run_once``): two
workers finishing together would otherwise register it twice.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from pipeline import faults
from pipeline.config.settings import apply_overrides
from pipeline.sdk.contract import Evaluation, TrainResult, TrialContext
from pipeline.summary import BestTrial, GoalSpec, Promotion, TuneSummary
from pipeline.tracking import plots, promotion, unseen
from pipeline.tracking.tracker import Tracker
from pipeline.tune.attributes import INTERVAL_ATTR, RESTARTS_ATTR, RUN_ID_ATTR
from pipeline.tune.objective import Objective
from pipeline.tune.search_run import SearchRun
from pipeline.tune.study import counts, goal_met_trials, run_once, trial_seed
from pipeline.tune.study import redact as redact_url


def best_trial(study: optuna.Study, goal: GoalSpec) -> optuna.trial.FrozenTrial | None:
    """The goal-meeting trial when there is one (the first that met it), else the best complete one."""
    met = goal_met_trials(study, goal)
    if met:
        return met[0]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def _result_of(trial: optuna.trial.FrozenTrial, run: SearchRun, kept: tuple[int, TrainResult] | None) -> TrainResult:
    """The best trial's fitted model: kept in memory (``kept``), or refitted (same seed) after a restart."""
    if kept is not None and kept[0] == trial.number:
        return kept[1]
    params = run.plugin.manifest.search_space.sample(optuna.trial.FixedTrial(trial.params))
    replay = run.run_dir / "replay"
    shutil.rmtree(replay, ignore_errors=True)
    context = TrialContext(
        trial.number,
        trial_seed(trial, run.seed),
        lambda epoch, metrics: None,
        replay,
        run.goal.metric,
        run.goal.direction,
        run.log,
    )
    return run.plugin.train(run.data, params, context)


def finish_study(study: optuna.Study, run: SearchRun, objective: Objective) -> TuneSummary:
    """Score, plot, log and register the study's best trial; return the summary.

    Args:
        study: the study, after ``optimize``.
        run: the search.
        objective: the search's objective (holds this process's best fitted model).
    """
    plugin, data, goal, tracker, parent_id = run.plugin, run.data, run.goal, run.tracker, run.parent_id
    settings, run_dir = run.settings, run.run_dir
    tally = counts(study)
    summary = TuneSummary(
        model=plugin.manifest.name,
        kind=plugin.manifest.kind,
        goal=goal,
        goal_met=False,
        best=None,
        trials_total=sum(n for state, n in tally.items() if state != "WAITING"),  # queued, never run: not trials
        trials_complete=tally.get("COMPLETE", 0),
        trials_pruned=tally.get("PRUNED", 0),
        trials_failed=tally.get("FAIL", 0),
        trials_interrupted=tally.get("INTERRUPTED", 0),
        study_name=study.study_name,
        storage=redact_url(settings.storage_url),
        tracking_uri=tracker.uri,
        mlflow_experiment_id=tracker.experiment_id,
        mlflow_parent_run_id=parent_id,
        mlflow_run_url=tracker.run_url(parent_id),
        restarts=int(study.user_attrs.get(RESTARTS_ATTR, 0)),
        run_dir=str(run_dir),
    )
    plot_dir = run_dir / "plots"
    if summary.trials_complete:
        path = plots.optimization_history(study, goal.target, goal.metric, plot_dir / "optimization_history.png")
        summary.plots["Optimization history"] = str(path)
    trial = best_trial(study, goal)
    if trial is None:
        _log_plots(tracker, parent_id, summary.plots)
        return summary

    result = _result_of(trial, run, objective.best)
    evaluation = plugin.evaluate(data, result)
    interval = trial.user_attrs.get(INTERVAL_ATTR)
    summary.goal_met = bool(goal_met_trials(study, goal))
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    summary.best = BestTrial(
        trial.number,
        float(trial.value or 0.0),
        dict(trial.params),
        tuple(interval) if interval else None,
        evaluation.value,
        run_id,
    )
    summary.plots["Learning curves"] = str(plots.learning_curves(result.history, plot_dir / "learning_curves.png"))
    if evaluation.labels is not None:
        path = plots.confusion_matrix(
            evaluation.y_true, evaluation.y_pred, evaluation.labels, plot_dir / "confusion_matrix.png"
        )
        summary.plots["Confusion matrix"] = str(path)
    elif evaluation.y_true is not None:
        summary.plots["Test predictions"] = str(
            plots.residuals(evaluation.y_true, evaluation.y_pred, plot_dir / "test_predictions.png")
        )

    test_metric = "test_" + goal.metric.removeprefix("val_")
    best_metrics = {
        f"best_{goal.metric}": float(trial.value or 0.0),
        test_metric: evaluation.value,
        "best_trial": trial.number,
    }
    tracker.log(parent_id, metrics=best_metrics, tags={"goal_met": str(summary.goal_met).lower()})
    _log_plots(tracker, parent_id, summary.plots)
    if run_id:

        def log_model() -> str:
            tracker.log(run_id, metrics={test_metric: evaluation.value})
            if evaluation.fit_ids is not None:  # what a later gate must not score this model on
                unseen.record(tracker.client, run_id, evaluation.fit_ids)
            _log_plots(tracker, run_id, summary.plots)
            return tracker.log_model(run_id, plugin.export(data, result))

        model_uri = run_once(study, f"model-{trial.number}", log_model)
        faults.point("register")  # hit 1: the model logged, not yet registered
        if summary.goal_met and settings.register:
            tags = {"study": study.study_name, "trial": str(trial.number)}

            def register() -> str:
                faults.point("register")  # hit 2: the registration claimed, the registry not yet written
                return tracker.register(model_uri, run_id, plugin.manifest.name, tags)

            summary.registered_model = run_once(study, f"registered-{trial.number}", register)
            summary.promotion = _promote(study, run, summary.registered_model, evaluation, trial.number)
    return summary


def _promote(study: optuna.Study, run: SearchRun, registered: str, evaluation: Evaluation, number: int) -> Promotion:
    """Put the registered version through the promotion gate (once per study); log the comparison."""
    name, _, version = registered.rpartition("/")
    goal, settings = run.goal, run.settings
    data_options, _ = apply_overrides(run.plugin.manifest, settings)
    fingerprint = promotion.test_split_fingerprint(run.tags.get("data_fingerprint"), data_options, run.seed)

    def rescore(model_uri: str) -> Evaluation:
        return run.plugin.evaluate(run.data, TrainResult(math.nan, promotion.load_model(model_uri)))

    def decide() -> dict[str, Any]:
        decision = promotion.gate(
            run.tracker.client,
            name,
            int(version),
            promotion.score(goal, evaluation.value, evaluation.n),
            goal,
            fingerprint=fingerprint,
            margin=settings.promote_margin,
            rescore=rescore,
            force=settings.force_promote,
            evaluation=evaluation,
        )
        _log_promotion(run.tracker, run.parent_id, decision)
        return asdict(decision)

    # A forced rerun of a study whose challenger was kept decides again; any other rerun reuses.
    key = f"promoted-{number}" + ("-forced" if settings.force_promote else "")
    decision = Promotion.from_dict(run_once(study, key, decide))
    run.log(f"promotion: {decision.headline}: {decision.reason}")
    return decision


def _log_promotion(tracker: Tracker, run_id: str, decision: Promotion) -> None:
    """The comparison in the search's parent run: both scores, their intervals, the verdict."""
    metrics = {f"promotion.challenger_{decision.metric}": decision.challenger_value}
    if decision.champion_value is not None:
        metrics[f"promotion.champion_{decision.metric}"] = decision.champion_value
    tags = {
        "promotion.verdict": decision.verdict,
        "promotion.reason": decision.reason,
        "promotion.challenger_version": decision.challenger_version,
        "promotion.margin": decision.margin,
    }
    if decision.champion_version is not None:
        tags["promotion.champion_version"] = decision.champion_version
        tags["promotion.champion_scored"] = decision.champion_scored or ""
    for role, interval in (("challenger", decision.challenger_interval), ("champion", decision.champion_interval)):
        if interval is not None:
            tags[f"promotion.{role}_interval"] = f"[{interval[0]:.4f}, {interval[1]:.4f}]"
    tracker.log(run_id, metrics=metrics, tags=tags)


def _log_plots(tracker: Tracker, run_id: str, paths: dict[str, str]) -> None:
    for path in paths.values():
        tracker.log_artifact(run_id, path, "plots")
