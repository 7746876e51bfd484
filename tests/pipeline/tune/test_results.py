"""The end of a search in-process: score, log and register the best trial, or say why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.config.settings import TuneSettings
from pipeline.sdk.contract import load_plugin
from pipeline.tracking.tracker import Tracker
from pipeline.tune.attributes import RESTARTS_ATTR
from pipeline.tune.objective import Objective
from pipeline.tune.results import finish_study
from pipeline.tune.search_run import SearchRun
from pipeline.tune.study import open_study
from tests.pipeline.stub_model import write_stub
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


def _search_of(tmp_path: Path, tracking_uri: str, study_name: str, x: float, **settings: Any) -> Any:
    """One stub search ``study_name`` of the test's model whose only trial scores ``x``; its summary.

    Every search sees the same data (one data fingerprint), so the champion's recorded test
    score counts and nothing is loaded again.
    """
    name = model_name(tmp_path)
    plugin = load_plugin(write_stub(tmp_path / "stub", target=0.1, epochs=1, name=name))
    options = TuneSettings(storage=f"sqlite:///{tmp_path / 'optuna.db'}", runs_dir=tmp_path / "runs", **settings)
    study, _ = open_study(study_name, "maximize", options)
    tracker = Tracker(tracking_uri, name)
    parent_id = tracker.parent_run(None, study_name, {"model": name})
    run_dir = tmp_path / "runs" / name
    tags = {"git_commit": "abc", "data_fingerprint": "same-data"}
    prepared = {"epochs": 1, "sleep": 0.0}
    run = SearchRun(
        plugin, prepared, plugin.manifest.goal, tracker, parent_id, run_dir, run_dir / study_name, tags, options
    )
    study.enqueue_trial({"x": x, "k": 1})
    objective = Objective(run)
    study.optimize(objective, n_trials=1)
    return finish_study(study, run, objective)


def test_a_weaker_challenger_keeps_the_champion_and_a_better_one_replaces_it(tmp_path: Path, tracking_uri: str) -> None:
    name, client = model_name(tmp_path), MlflowClient(tracking_uri=tracking_uri)
    first = _search_of(tmp_path, tracking_uri, "first", 0.8)
    assert first.promotion is not None and first.promotion.verdict == "first"

    weaker = _search_of(tmp_path, tracking_uri, "weaker", 0.6)
    assert weaker.registered_model == f"{name}/2" and weaker.promotion is not None
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1  # unchanged
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 2
    assert (weaker.promotion.verdict, weaker.promotion.champion_value, weaker.promotion.champion_scored) == (
        "kept",
        0.8,
        "recorded",
    )
    logged = client.get_run(weaker.mlflow_parent_run_id).data  # type: ignore[arg-type]
    assert logged.tags["promotion.verdict"] == "kept" and logged.tags["promotion.reason"] == weaker.promotion.reason
    assert logged.metrics["promotion.champion_test_accuracy"] == 0.8
    assert logged.metrics["promotion.challenger_test_accuracy"] == 0.6
    assert logged.tags["promotion.challenger_interval"] == "[0.0771, 0.9642]"  # Wilson 95% of 0.6 on 1 example

    better = _search_of(tmp_path, tracking_uri, "better", 0.85)
    assert better.promotion is not None and better.promotion.verdict == "promoted"
    assert int(client.get_model_version_by_alias(name, "champion").version) == 3
    assert int(client.get_model_version_by_alias(name, "previous").version) == 1


def test_the_margin_setting_keeps_a_slightly_better_challenger(tmp_path: Path, tracking_uri: str) -> None:
    name, client = model_name(tmp_path), MlflowClient(tracking_uri=tracking_uri)
    _search_of(tmp_path, tracking_uri, "first", 0.8)
    slightly = _search_of(tmp_path, tracking_uri, "slightly", 0.82, promote_margin=0.05)
    assert slightly.promotion is not None and slightly.promotion.verdict == "kept"
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    forced = _search_of(tmp_path, tracking_uri, "forced", 0.7, force_promote=True)
    assert forced.promotion is not None and forced.promotion.verdict == "forced"
    assert int(client.get_model_version_by_alias(name, "champion").version) == 3
    assert int(client.get_model_version_by_alias(name, "previous").version) == 1
