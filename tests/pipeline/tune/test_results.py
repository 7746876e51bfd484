"""The end of a search in-process: score, log and register the best trial, or say why not."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.tune.attributes import RESTARTS_ATTR
from pipeline.tune.objective import Objective
from pipeline.tune.results import finish_study
from tests.pipeline.tune.stub_search import model_name, open_search

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def test_a_met_goal_registers_the_best_trial_once_as_champion(tmp_path: Path, tracking_uri: str) -> None:
    study, run, _ = open_search(tmp_path, tracking_uri, target=0.6)
    study.enqueue_trial({"x": 0.55, "k": 1})
    study.enqueue_trial({"x": 0.65, "k": 2})
    objective = Objective(run)
    study.optimize(objective, n_trials=2)
    study.set_user_attr(RESTARTS_ATTR, 2)

    summary = finish_study(study, run, objective)
    name = model_name(tmp_path)
    assert summary.goal_met is True and summary.registered_model == f"{name}/1"
    assert summary.best is not None and summary.best.number == 1 and summary.best.value == 0.65
    assert summary.best.test_value == 0.65  # the stub's evaluate scores the fitted model's value
    assert (summary.trials_total, summary.trials_complete, summary.restarts) == (2, 2, 2)
    assert set(summary.plots) == {"Optimization history", "Learning curves"}
    client = MlflowClient(tracking_uri=tracking_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == summary.best.mlflow_run_id
    parent = client.get_run(run.parent_id).data
    assert parent.tags["goal_met"] == "true" and parent.metrics["best_trial"] == 1

    again = finish_study(study, run, Objective(run))  # another worker, or a rerun: refits, registers nothing new
    assert again.registered_model == f"{name}/1"
    assert [int(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [1]
    assert (run.run_dir / "replay" / "epochs.log").is_file()  # the best trial refitted from its seed


def test_a_missed_goal_registers_nothing_and_the_summary_says_so(tmp_path: Path, tracking_uri: str) -> None:
    study, run, _ = open_search(tmp_path, tracking_uri, target=1.0)
    study.enqueue_trial({"x": 0.7, "k": 1})
    objective = Objective(run)
    study.optimize(objective, n_trials=1)

    summary = finish_study(study, run, objective)
    assert summary.goal_met is False and summary.registered_model is None
    assert summary.best is not None and summary.best.value == 0.7  # the best there is, reported
    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.search_model_versions(f"name = '{model_name(tmp_path)}'") == []
    assert client.get_run(run.parent_id).data.tags["goal_met"] == "false"
    assert not (run.run_dir / "replay").exists()  # the model kept in memory was used


def test_a_search_whose_trials_all_failed_has_no_best_trial(tmp_path: Path, tracking_uri: str) -> None:
    study, run, _ = open_search(tmp_path, tracking_uri, fail=True)
    study.optimize(Objective(run), n_trials=2, catch=(RuntimeError,))
    summary = finish_study(study, run, Objective(run))
    assert (summary.goal_met, summary.best, summary.registered_model) == (False, None, None)
    assert (summary.trials_total, summary.trials_failed) == (2, 2)
    assert summary.plots == {}
