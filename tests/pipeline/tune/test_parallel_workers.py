"""Two ``mlops tune`` started together on a fresh SQLite store: no race, no replay, one registration."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.pipeline.stub_model import environment, tune_command, write_stub


def run_two(tmp_path: Path, model: Path, *extra: str) -> list[subprocess.CompletedProcess[str]]:
    """Two workers on one study, started at once, each in its own folder (its own machine)."""
    processes = []
    for index in range(2):
        cwd = tmp_path / f"worker-{index}"
        cwd.mkdir()
        command = tune_command(tmp_path, model, "--study-name", "shared", *extra)
        command[command.index("--runs-dir") + 1] = str(cwd / "runs")
        processes.append(
            subprocess.Popen(
                command, cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    done = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return done


@pytest.mark.slow
def test_two_workers_on_a_fresh_store_draw_distinct_trials(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", epochs=2, sleep=0.5)  # goal 1.0, x < 0.9: the budget decides
    for result in run_two(tmp_path, model, "--max-trials", "8"):
        assert result.returncode == 3, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    drawn = [(t.params["x"], t.params["k"]) for t in trials]
    assert len(set(drawn)) == len(drawn)  # was: each worker drew the same sequence


@pytest.mark.slow
def test_two_workers_meeting_the_goal_register_the_model_once(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", epochs=2, sleep=0.2, target=0.1)  # any trial meets the goal
    results = run_two(tmp_path, model, "--max-trials", "4")
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "model: registered stub/1 (alias champion)" in result.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'stub'")
    assert [int(v.version) for v in versions] == [1]
    experiment = client.get_experiment_by_name("stub").experiment_id
    assert len(client.search_logged_models([experiment])) == 1  # logged once, not once per worker
    assert client.get_model_version_by_alias("stub", "champion").run_id == versions[0].run_id
