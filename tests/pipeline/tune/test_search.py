"""``tune()``: in-process on the stub model (fast), and ``mlops tune`` end to end on the face model.

The end-to-end runs (a real search on Olivetti with the real face-pretrained weights, a
minute or more each) are marked ``slow``; the in-process tests cover the same behaviour.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.config.settings import TuneSettings, resolve_settings
from pipeline.errors import ExitCode
from pipeline.tracking.tracker import TRIAL_TAG
from pipeline.tune.attributes import PARENT_ATTR, RESTARTS_ATTR, RUN_ID_ATTR, WORKER_ATTR
from pipeline.tune.search import tune
from pipeline.tune.study import worker_id
from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT
from tests.pipeline.stub_model import write_stub
from tests.pipeline.tune.stub_search import model_name

MODEL = ROOT / "models" / "face_vgg16"

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def stub_settings(tmp_path: Path, tracking_uri: str, **extra: object) -> TuneSettings:
    """Every store and folder of an in-process search under ``tmp_path`` (the MLflow store is shared)."""
    return TuneSettings(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=tracking_uri,
        experiment=model_name(tmp_path),
        study_name="s",
        runs_dir=tmp_path / "runs",
        cache_dir=tmp_path / "cache",
        **{"pruner": "none", "timeout": 120.0, **extra},  # type: ignore[arg-type]
    )


def stub(tmp_path: Path, **options: object) -> Path:
    return write_stub(tmp_path / "stub", name=model_name(tmp_path), **options)  # type: ignore[arg-type]


def runs_of(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id])


def test_a_met_goal_exits_0_and_registers_the_champion(tmp_path: Path, tracking_uri: str) -> None:
    printed: list[str] = []
    model = stub(tmp_path, target=0.1, notes='["2 of 9 photos skipped"]')
    summary = tune(model, stub_settings(tmp_path, tracking_uri, max_trials=3), printed.append)
    name = model_name(tmp_path)
    assert summary.exit_code == ExitCode.OK and summary.goal_met
    assert summary.trials_total == 1  # the first trial met the goal: the search stopped there
    assert f"model: registered {name}/1 (alias champion)" in printed
    assert any(line.startswith("goal met: best val_accuracy") for line in printed)
    on_disk = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
    assert on_disk["goal_met"] is True and on_disk["registered_model"] == f"{name}/1"
    assert on_disk["data_notes"] == ["2 of 9 photos skipped"]  # what prepare noted, for the e-mail and CI summary
    champion = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(name, "champion")
    assert champion.run_id == summary.best.mlflow_run_id  # type: ignore[union-attr]
    runs = runs_of(tracking_uri, name)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("s", "FINISHED"), ("trial-0", "FINISHED")]
    # Where the time went: every stage, in order, in summary.json, the parent run and the log.
    assert set(on_disk["stage_seconds"]) == {"setup", "prepare", "search", "finish"}
    assert 0 < sum(on_disk["stage_seconds"].values()) <= on_disk["wall_seconds"]
    # What train reported per epoch but keeps out of its history reaches the run too.
    seconds = MlflowClient(tracking_uri=tracking_uri).get_metric_history(summary.best.mlflow_run_id, "epoch_seconds")  # type: ignore[union-attr]
    assert sorted(m.step for m in seconds) == [0, 1]
    parent = next(r for r in runs if r.info.run_name == "s")
    assert set(parent.data.metrics) >= {f"stage_seconds.{k}" for k in on_disk["stage_seconds"]}
    line = next(line for line in printed if line.startswith("time: "))
    assert [part.split()[0] for part in line.removeprefix("time: ").split(", ")] == [
        "setup",
        "prepare",
        "search",
        "finish",
    ]


def test_a_finished_search_leaves_its_study_whole_in_optuna_db(tmp_path: Path, tracking_uri: str) -> None:
    summary = tune(stub(tmp_path), stub_settings(tmp_path, tracking_uri, max_trials=2, goal=1.0), lambda line: None)
    assert_whole_in_one_file(tmp_path / "optuna.db", "s", summary.trials_total)


def test_an_unreachable_goal_is_an_honest_failure(tmp_path: Path, tracking_uri: str) -> None:
    printed: list[str] = []
    settings = stub_settings(tmp_path, tracking_uri, max_trials=2, goal=1.0, goal_confidence=True)
    summary = tune(stub(tmp_path), settings, printed.append)
    assert summary.exit_code == ExitCode.GOAL_NOT_MET
    assert any(line.startswith("goal NOT met: best val_accuracy") for line in printed), printed
    on_disk = json.loads((tmp_path / "runs" / model_name(tmp_path) / "summary.json").read_text())
    assert on_disk["goal_met"] is False and on_disk["registered_model"] is None
    assert on_disk["trials_complete"] + on_disk["trials_pruned"] == 2
    assert MlflowClient(tracking_uri=tracking_uri).search_model_versions(f"name = '{model_name(tmp_path)}'") == []


def test_the_same_study_with_a_higher_goal_continues_it(tmp_path: Path, tracking_uri: str) -> None:
    """A second run of one study with another goal adds trials to it (params are write-once in MLflow)."""
    model = stub(tmp_path)
    first = tune(model, stub_settings(tmp_path, tracking_uri, max_trials=1, goal=0.5), print)
    assert first.exit_code == ExitCode.OK
    printed: list[str] = []
    second = tune(model, stub_settings(tmp_path, tracking_uri, max_trials=2, goal=1.0), printed.append)
    assert second.exit_code == ExitCode.GOAL_NOT_MET
    assert "1 finished trial(s) so far" in printed[0]
    assert second.trials_complete + second.trials_pruned == 2
    assert second.mlflow_parent_run_id == first.mlflow_parent_run_id  # the same parent run, re-opened


def test_a_supervisor_restart_is_counted_from_the_settings(tmp_path: Path, tracking_uri: str) -> None:
    printed: list[str] = []
    settings = stub_settings(tmp_path, tracking_uri, max_trials=1, restarts=1, restart_reason="was killed by SIGKILL")
    summary = tune(stub(tmp_path), settings, printed.append)
    assert "restart 1: the previous run was killed by SIGKILL" in printed
    assert summary.restarts == 1
    study = optuna.load_study(study_name="s", storage=settings.storage_url)
    assert study.user_attrs[RESTARTS_ATTR] == 1
    parent = MlflowClient(tracking_uri=tracking_uri).get_run(summary.mlflow_parent_run_id)  # type: ignore[arg-type]
    assert parent.data.metrics["restarts"] == 1
    assert parent.data.tags["mlops.restart.1"] == "was killed by SIGKILL"


def test_the_supervisor_s_hand_off_reaches_the_settings() -> None:
    """The supervisor sets MLOPS_RESTARTS / MLOPS_RESTART_REASON; they are tune settings like any other."""
    environ = {"MLOPS_RESTARTS": "2", "MLOPS_RESTART_REASON": "exited with 137"}
    settings = resolve_settings({}, {}, {}, environ=environ)
    assert (settings.restarts, settings.restart_reason) == (2, "exited with 137")
    assert (TuneSettings().restarts, TuneSettings().restart_reason) == (0, "")


def test_a_trial_whose_process_died_is_retried_from_its_checkpoint(tmp_path: Path, tracking_uri: str) -> None:
    """What a SIGKILL mid-trial leaves (a RUNNING trial of a dead PID, its RUNNING run, a checkpoint), resumed."""
    model = stub(tmp_path, epochs=3)
    settings = stub_settings(tmp_path, tracking_uri, max_trials=1)
    tune(model, settings, print)
    study = optuna.load_study(study_name="s", storage=settings.storage_url)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0.5, 0.9)})
    dead.suggest_int("k", 1, 1000)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    host, namespace, _ = worker_id().split("|")
    dead.set_user_attr(WORKER_ATTR, f"{host}|{namespace}|{process.pid}")
    client = MlflowClient(tracking_uri=tracking_uri)
    parent_id = study.user_attrs[PARENT_ATTR]
    experiment = client.get_run(parent_id).info.experiment_id
    killed = client.create_run(experiment, tags={"mlflow.parentRunId": parent_id, TRIAL_TAG: "1"}, run_name="trial-1")
    dead.set_user_attr(RUN_ID_ATTR, killed.info.run_id)
    folder = tmp_path / "runs" / model_name(tmp_path) / "s" / "checkpoints" / "trial-0001"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"epoch": 0, "history": [dead.params["x"]]}))
    (folder / "epochs.log").write_text("1 0\n")

    printed: list[str] = []
    summary = tune(model, stub_settings(tmp_path, tracking_uri, max_trials=2), printed.append)
    assert summary.exit_code == ExitCode.GOAL_NOT_MET
    assert "resuming: trial(s) 1 died with their process; retrying from their checkpoints" in printed
    retried = next(line for line in printed if line.startswith("trial   2"))
    assert retried.endswith("(resumed at epoch 1)")
    trials = optuna.load_study(study_name="s", storage=settings.storage_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params
    assert (folder / "epochs.log").read_text().split()[1::2] == ["0", "1", "2"]  # every epoch once
    runs = runs_of(tracking_uri, model_name(tmp_path))
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("s", "FINISHED"),
        ("trial-0", "FINISHED"),
        ("trial-2", "FINISHED"),  # the killed trial's run, re-opened by its retry: counted once
    ]


def mlops(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in ``cwd`` (where mlflow.db, mlops-runs/ and the cache go)."""
    full_env = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [*MLOPS, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tune_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "tune",
        str(MODEL),
        "--weights",
        str(FACE_WEIGHTS),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--max-trials",
        "6",
        *extra,
    ]


def nested_runs(tmp_path: Path, parent_id: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("face_vgg16")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


@pytest.mark.slow
def test_search_meets_goal_registers_champion_and_reuses_the_cache(offline_env: dict, tmp_path: Path) -> None:
    first = mlops(tune_args(tmp_path, "--goal", "0.9"), tmp_path, offline_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "goal met: best val_accuracy" in first.stdout
    assert "test accuracy:" in first.stdout
    assert "features: 400 images through VGG16" in first.stdout

    summary = json.loads((tmp_path / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
    assert summary["goal_met"] is True and summary["registered_model"] == "face_vgg16/1"
    assert summary["best"]["value"] >= 0.9 and 0.0 < summary["best"]["test_value"] <= 1.0
    low, high = summary["best"]["interval"]
    assert low < summary["best"]["value"] <= high
    assert {"Optimization history", "Learning curves", "Confusion matrix"} <= set(summary["plots"])

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("face_vgg16", "champion")
    assert champion.run_id == summary["best"]["mlflow_run_id"]
    runs = nested_runs(tmp_path, summary["mlflow_parent_run_id"])
    assert len(runs) == summary["trials_total"]
    assert all(run.info.status == "FINISHED" for run in runs)
    assert {run.data.tags["optuna.trial_number"] for run in runs} == {str(i) for i in range(summary["trials_total"])}

    second = mlops(tune_args(tmp_path, "--goal", "0.9", "--study-name", "again"), tmp_path, offline_env)
    assert second.returncode == 0, second.stderr
    assert "features: reused from the cache" in second.stdout
    assert "through VGG16" not in second.stdout
    # The command's study, kept in SQLite's write-ahead log while it ran, is whole in optuna.db alone.
    assert_whole_in_one_file(tmp_path / "mlops-runs" / "optuna.db", summary["study_name"], summary["trials_total"])


def assert_whole_in_one_file(database: Path, study_name: str, trials: int) -> None:
    """No ``-wal`` left beside ``database``, and a copy of the file alone holds the study's trials."""
    assert not database.with_name(database.name + "-wal").exists()
    copy = database.parent / "copied" / database.name
    copy.parent.mkdir()
    shutil.copyfile(database, copy)
    with contextlib.closing(sqlite3.connect(copy)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{copy}")
    assert len([t for t in study.trials if t.state != TrialState.WAITING]) == trials  # as the summary counts


@pytest.mark.slow
def test_unreachable_goal_is_an_honest_failure(offline_env: dict, tmp_path: Path) -> None:
    result = mlops(
        # Unreachable: the Wilson lower bound of an accuracy stays below 1.
        tune_args(tmp_path, "--goal", "1", "--goal-confidence", "--max-trials", "2", "--set", "data.input_size=32"),
        tmp_path,
        offline_env,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "goal NOT met" in result.stdout
    summary = json.loads((tmp_path / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
    assert summary["goal_met"] is False and summary["registered_model"] is None
    assert summary["trials_complete"] + summary["trials_pruned"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "/no/such.h5"], "params.weights='/no/such.h5' names no file; pass imagenet or none"),
        (["--set", "data.source=mnist"], "data.source='mnist' is unknown"),
        (["--pruner", "magic"], "pruner='magic' is unknown"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(offline_env: dict, tmp_path: Path, args: list[str], message: str) -> None:
    result = mlops(
        ["tune", str(MODEL), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *args], tmp_path, offline_env
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


@pytest.mark.slow
def test_same_study_again_with_a_higher_goal_continues_it(offline_env: dict, tmp_path: Path) -> None:
    """A second run of one study with another goal adds trials to it (params are write-once in MLflow)."""
    args = tune_args(tmp_path, "--set", "data.input_size=32", "--study-name", "faces", "--max-trials", "1")
    first = mlops([*args, "--goal", "0.5"], tmp_path, offline_env)
    assert first.returncode == 0, first.stdout + first.stderr
    # model.yaml's first trial: a linear head (no layers, so no widths shown), and the line says where it came from.
    (line,) = [row for row in first.stdout.splitlines() if row.startswith("trial   0")]
    assert " n_layers=0 " in line and "units=" not in line and line.endswith("  (first_trials[0])"), line
    second = mlops([*args[:-2], "--max-trials", "2", "--goal", "1", "--goal-confidence"], tmp_path, offline_env)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "1 finished trial(s) so far" in second.stdout
    summary = json.loads((tmp_path / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
    assert summary["trials_complete"] + summary["trials_pruned"] == 2


def test_the_timeout_stops_a_trial_that_is_still_training(tmp_path: Path, tracking_uri: str) -> None:
    # Optuna's timeout only stops a study between trials; a 40-epoch trial of 0.1 s epochs
    # would overrun a 1-second budget fourfold. It ends at the first epoch past the timeout.
    model = stub(tmp_path, epochs=40, sleep=0.1)
    printed: list[str] = []
    summary = tune(model, stub_settings(tmp_path, tracking_uri, timeout=1.0), printed.append)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and 1 <= len(trial.intermediate_values) < 40
    assert any(line.startswith("trial   0  timed out val_accuracy") for line in printed), printed
    (run,) = [r for r in runs_of(tracking_uri, model_name(tmp_path)) if r.data.tags.get("optuna.state")]
    assert run.data.tags["stopped_by"] == "timeout" and run.data.tags["optuna.state"] == "PRUNED"
    assert not summary.goal_met
