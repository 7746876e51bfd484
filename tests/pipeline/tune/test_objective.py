"""One trial in-process: the stub model, a real SQLite study, a real MLflow store, no subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.tracking.tracker import TRIAL_TAG
from pipeline.tune.attributes import RUN_ID_ATTR, WORKER_ATTR
from pipeline.tune.objective import Objective
from pipeline.tune.study import reclaim_dead_trials, storage_of, trial_origin, worker_id
from tests.pipeline.tune.stub_search import open_search

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def trial_runs(tracking_uri: str, parent_id: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_a_complete_trial_logs_one_nested_run_and_keeps_only_its_best_weights(
    tmp_path: Path, tracking_uri: str
) -> None:
    study, run, printed = open_search(tmp_path, tracking_uri, target=1.0)
    folder = run.checkpoints / "trial-0000"
    folder.mkdir(parents=True)
    for name in ("latest.npz", "latest.previous.npz", "best.npz"):  # what keras.fastfit leaves
        (folder / name).write_bytes(b"weights")
    study.enqueue_trial({"x": 0.7, "k": 5})
    objective = Objective(run)
    study.optimize(objective, n_trials=1)

    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE and trial.value == 0.7
    (logged,) = trial_runs(tracking_uri, run.parent_id)
    assert trial.user_attrs[RUN_ID_ATTR] == logged.info.run_id
    assert logged.info.status == "FINISHED" and logged.info.run_name == "trial-0"
    assert logged.data.params == {"x": "0.7", "k": "5"}
    assert logged.data.metrics["val_accuracy"] == 0.7
    tags = logged.data.tags
    assert (tags["optuna.state"], tags["goal_met"], tags[TRIAL_TAG]) == ("COMPLETE", "false", "0")
    assert tags["git_commit"] == "abc"  # the search's tags reach every trial run
    history = MlflowClient(tracking_uri=tracking_uri).get_metric_history(logged.info.run_id, "epoch_val_accuracy")
    assert sorted(m.step for m in history) == [0, 1]
    assert sorted(p.name for p in folder.iterdir()) == ["best.npz", "epochs.log", "state.json"]
    assert objective.best is not None and objective.best[0] == 0 and objective.best[1].value == 0.7
    assert printed[-1].startswith("trial   0  complete  val_accuracy 0.7000")


def test_a_trial_that_meets_the_goal_is_tagged_so(tmp_path: Path, tracking_uri: str) -> None:
    study, run, printed = open_search(tmp_path, tracking_uri, target=0.6)
    study.enqueue_trial({"x": 0.5, "k": 1})
    study.enqueue_trial({"x": 0.8, "k": 2})
    study.enqueue_trial({"x": 0.7, "k": 3})
    objective = Objective(run)
    study.optimize(objective, n_trials=3)
    by_number = {int(r.data.tags[TRIAL_TAG]): r.data.tags["goal_met"] for r in trial_runs(tracking_uri, run.parent_id)}
    assert by_number == {0: "false", 1: "true", 2: "true"}
    assert objective.best is not None and objective.best[0] == 1  # the best value, not the last
    assert [line.split()[2] for line in printed] == ["complete", "goal", "goal"]


def test_a_pruned_trial_ends_its_run_pruned_and_drops_its_checkpoint(tmp_path: Path, tracking_uri: str) -> None:
    study, run, printed = open_search(tmp_path, tracking_uri, epochs=3)
    study.pruner = optuna.pruners.ThresholdPruner(lower=0.95)  # the stub reports x < 0.9: pruned at epoch 0
    study.enqueue_trial({"x": 0.6, "k": 5})
    study.optimize(Objective(run), n_trials=1)

    assert [t.state for t in study.trials] == [TrialState.PRUNED]
    (logged,) = trial_runs(tracking_uri, run.parent_id)
    assert logged.info.status == "FINISHED"
    assert (logged.data.tags["optuna.state"], logged.data.tags["goal_met"]) == ("PRUNED", "false")
    assert logged.data.metrics["val_accuracy"] == 0.6
    assert not (run.checkpoints / "trial-0000").exists()
    assert printed[-1].startswith("trial   0  pruned    val_accuracy 0.6000")


def test_a_failed_trial_ends_its_run_failed(tmp_path: Path, tracking_uri: str) -> None:
    study, run, _ = open_search(tmp_path, tracking_uri, fail=True)
    study.enqueue_trial({"x": 0.6, "k": 5})
    study.optimize(Objective(run), n_trials=1, catch=(RuntimeError,))

    assert [t.state for t in study.trials] == [TrialState.FAIL]
    (logged,) = trial_runs(tracking_uri, run.parent_id)
    assert logged.info.status == "FAILED"
    assert logged.data.tags["optuna.state"] == "FAIL"
    assert logged.data.params == {"x": "0.6", "k": "5"}


def test_a_retry_resumes_its_origin_s_checkpoint_in_the_same_run(tmp_path: Path, tracking_uri: str) -> None:
    """A trial whose process died is retried from its checkpoint folder, into its own MLflow run."""
    study, run, printed = open_search(tmp_path, tracking_uri, epochs=3)
    dead = optuna.load_study(study_name="s", storage=storage_of(study))
    trial = dead.ask({"x": optuna.distributions.FloatDistribution(0.5, 0.9)})
    trial.suggest_int("k", 1, 1000)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    host, namespace, _ = worker_id().split("|")
    trial.set_user_attr(WORKER_ATTR, f"{host}|{namespace}|{process.pid}")
    run_id = run.tracker.trial_run(None, run.parent_id, "trial-0", {TRIAL_TAG: "0"})
    trial.set_user_attr(RUN_ID_ATTR, run_id)
    folder = run.checkpoints / "trial-0000"  # it finished epoch 0 before it died
    folder.mkdir(parents=True)
    x = trial.params["x"]
    (folder / "state.json").write_text(json.dumps({"epoch": 0, "history": [x]}))
    (folder / "epochs.log").write_text("0 0\n")

    assert reclaim_dead_trials(study, storage_of(study)) == [0]
    study.optimize(Objective(run), n_trials=1)

    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and trial_origin(retry) == 0
    assert retry.user_attrs[RUN_ID_ATTR] == run_id
    (logged,) = trial_runs(tracking_uri, run.parent_id)  # the retry re-opened the dead trial's run
    assert logged.info.run_id == run_id and logged.info.run_name == "trial-1"
    assert logged.data.tags["optuna.retry_of"] == "0" and logged.info.status == "FINISHED"
    assert (folder / "epochs.log").read_text().split()[1::2] == ["0", "1", "2"]  # resumed, not replayed
    assert printed[-1].endswith("(resumed at epoch 1)")
