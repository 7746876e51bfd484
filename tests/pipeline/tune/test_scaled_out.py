"""Scaled-out mode for real: the study in PostgreSQL, the runs on an ``mlflow server``, two workers.

Every test runs the real ``mlops tune`` CLI in a subprocess against services on 127.0.0.1
(``tests/pipeline/services.py``): a throwaway PostgreSQL cluster (or ``$MLOPS_TEST_POSTGRES_URL``)
and an MLflow tracking server with its artifacts served over HTTP. The searches run the stub
model (``tests/pipeline/stub_model.py``): seconds, and one right outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT
from tests.pipeline.services import (
    closed_port,
)
from tests.pipeline.stub_model import write_stub

MODEL = ROOT / "models" / "face_vgg16"


def environment(offline_env: dict[str, str], experiment: str | None = None) -> dict[str, str]:
    env = {**os.environ, **offline_env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if experiment:
        env["MLOPS_EXPERIMENT"] = experiment  # one experiment per test on the shared server
    return env


def tune_command(cache: Path, storage: str, tracking: str, *extra: str) -> list[str]:
    return [
        *MLOPS,
        "tune",
        str(MODEL),
        "--weights",
        str(FACE_WEIGHTS),
        "--set",
        "data.input_size=32",
        "--cache-dir",
        str(cache),
        "--storage",
        storage,
        "--tracking-uri",
        tracking,
        *extra,
    ]


def stub_command(model: Path, cache: Path, storage: str, tracking: str, *extra: str) -> list[str]:
    """``mlops tune`` of the stub model in ``model``, on the given stores."""
    command = [*MLOPS, "tune", str(model), "--cache-dir", str(cache)]
    return [*command, "--storage", storage, "--tracking-uri", tracking, *extra]


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line, which must also be stderr's last (the message did not run over lines)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.postgres
def test_search_on_postgres_tracked_on_a_server(
    offline_env: dict[str, str],
    postgres_url: str,  # noqa: F811
    mlflow_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = f"stub-single-{uuid.uuid4().hex[:6]}"  # one model and experiment per test on the shared server
    model = write_stub(tmp_path / "stub", target=0.6, name=name)  # met by any trial with x >= 0.6
    command = stub_command(model, tmp_path / "cache", postgres_url, mlflow_server, "--max-trials", "6")
    result = run(command, tmp_path / "worker", environment(offline_env, name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    summary = json.loads((tmp_path / "worker" / "mlops-runs" / name / "summary.json").read_text())
    assert summary["mlflow_run_url"].startswith(mlflow_server + "/")
    assert summary["tracking_uri"] == mlflow_server
    assert summary["storage"] == postgres_url  # no password to redact in a trust-auth URL
    study = optuna.load_study(study_name=summary["study_name"], storage=postgres_url)
    assert len(study.trials) == summary["trials_total"] >= 1
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    found = client.get_experiment_by_name(name)
    assert found is not None
    parent_id = summary["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "mlflow.parentRunId" not in parent.data.tags
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id
    nested = client.search_runs([found.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(nested) == summary["trials_total"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in nested) == [t.number for t in study.trials]
    assert all(r.info.status == "FINISHED" for r in nested)

    plots = {Path(f.path).name for f in client.list_artifacts(parent_id, "plots")}
    assert plots == {"optimization_history.png", "learning_curves.png"}
    assert "summary.json" in {f.path for f in client.list_artifacts(parent_id)}

    assert summary["goal_met"] is True and "goal met" in result.stdout
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == summary["best"]["mlflow_run_id"]
    assert summary["registered_model"] == f"{name}/1"


@pytest.mark.postgres
def test_two_workers_share_one_study(
    offline_env: dict[str, str],
    postgres_url: str,  # noqa: F811
    mlflow_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    experiment = f"stub-workers-{uuid.uuid4().hex[:6]}"
    name = f"shared-{uuid.uuid4().hex[:6]}"
    max_trials = 6
    # The goal 1.0 is unreachable (x < 0.9): the budget decides. Half a second an epoch: both workers get trials.
    model = write_stub(tmp_path / "stub", epochs=2, sleep=0.5, name=experiment)
    command = stub_command(
        model, tmp_path / "cache", postgres_url, mlflow_server, "--max-trials", str(max_trials), "--study-name", name
    )
    env = environment(offline_env, experiment)
    workers = []
    for index in range(2):
        cwd = tmp_path / f"worker-{index}"  # one machine each: its own checkpoints and summary
        cwd.mkdir()
        workers.append(
            subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    try:
        for process in workers:
            outputs.append(process.communicate(timeout=420))
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert process.returncode == 3, stdout + stderr
        assert "goal NOT met" in stdout
        assert any(line.startswith("trial ") for line in stdout.splitlines()), stdout  # each worker ran a trial

    study = optuna.load_study(study_name=name, storage=postgres_url)
    trials = study.trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) >= max_trials
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert len({t.user_attrs.get("worker") for t in trials}) == 2

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [r.info.run_id for r in parents] == [study.user_attrs["mlflow_parent_run_id"]]  # one parent run
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {parents[0].info.run_id}
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in nested)
    assert numbers == [t.number for t in trials]  # every trial exactly once
    assert [(r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"] == []

    summaries = [
        json.loads((tmp_path / f"worker-{index}" / "mlops-runs" / experiment / "summary.json").read_text())
        for index in range(2)
    ]
    assert {s["mlflow_parent_run_id"] for s in summaries} == {parents[0].info.run_id}
    assert all(s["registered_model"] is None for s in summaries)


def test_unreachable_tracking_server_is_one_line_and_exit_2(offline_env: dict[str, str], tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run(tune_command(tmp_path / "cache", storage, uri), tmp_path, environment(offline_env), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"MLflow tracking at {uri} unreachable" in the_error_line(result)


@pytest.mark.parametrize(
    ("storage", "shown"),
    [
        ("postgresql://nobody@127.0.0.1:1/x", "postgresql://nobody@127.0.0.1:1/x"),
        ("postgresql+psycopg2://nobody:s3cret@127.0.0.1:1/x", "postgresql+psycopg2://nobody:***@127.0.0.1:1/x"),
    ],
)
def test_unreachable_storage_is_one_line_and_exit_2(
    offline_env: dict[str, str], tmp_path: Path, storage: str, shown: str
) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run(tune_command(tmp_path / "cache", storage, tracking), tmp_path, environment(offline_env), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"study storage {shown} unusable" in the_error_line(result)
    assert "s3cret" not in result.stderr + result.stdout
