"""``mlops tune --workers 2``: a helper process searches the command's study; the command reports once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.pipeline.stub_model import environment, run_tune, tune_command, write_stub

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def study_of(tmp_path: Path) -> optuna.Study:
    """The study the command searched (``--study-name shared``) in ``tmp_path``'s SQLite store."""
    return optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def helper_pids(parent: int) -> set[int]:
    """The PIDs of ``parent``'s children running ``pipeline.tune.worker_process``."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent_of = int(stat.rsplit(")", 1)[1].split()[1])
        if parent_of == parent and b"pipeline.tune.worker_process" in command:
            found.add(int(entry.name))
    return found


def test_two_workers_share_the_trials_and_the_command_reports_them_all(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", epochs=2, sleep=0.2)  # goal 1.0 is never met: the budget ends it
    result = run_tune(tmp_path, model, "--workers", "2", "--study-name", "shared", "--max-trials", "8")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "workers: 2 on this study" in result.stdout
    assert "worker 2: trial" in result.stdout  # the helper's lines, relayed and marked
    trials = study_of(tmp_path).get_trials(deepcopy=False)
    assert len({t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs}) == 2
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 8
    summary = json.loads((tmp_path / "runs" / "stub" / "summary.json").read_text())
    assert summary["trials_total"] == len([t for t in trials if t.state != TrialState.WAITING])


def test_a_goal_either_worker_meets_ends_both_and_is_registered_once(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", epochs=3, sleep=0.2, target=0.1)  # any trial meets the goal
    result = run_tune(tmp_path, model, "--workers", "2", "--study-name", "shared", "--max-trials", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("model: registered stub/1 (alias champion)") == 1  # the command's line only
    # A helper's trial cut short by the goal is no failure (it is queued for retry, as after Ctrl-C).
    assert " 0 failed" in result.stdout.split("trials: ", 1)[1].splitlines()[0]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [int(v.version) for v in client.search_model_versions("name = 'stub'")] == [1]
    parent = json.loads((tmp_path / "runs" / "stub" / "summary.json").read_text())["mlflow_parent_run_id"]
    assert client.get_run(parent).info.status == "FINISHED"  # a stopped helper leaves the run to the command


def start_mid_trial(tmp_path: Path) -> tuple[subprocess.Popen[str], set[int]]:
    """``mlops tune --workers 2`` on 20 s trials, returned once each worker has trained an epoch; its helpers' PIDs."""
    model = write_stub(tmp_path / "stub", epochs=200, sleep=0.1)
    command = subprocess.Popen(
        tune_command(tmp_path, model, "--workers", "2", "--study-name", "shared"),
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: what a failing test leaves is killed
    )
    deadline = time.monotonic() + 120
    helpers: set[int] = set()
    while time.monotonic() < deadline and len(list((tmp_path / "runs").rglob("epochs.log"))) < 2:
        helpers = helpers or helper_pids(command.pid)
        time.sleep(0.2)
    if not helpers:
        os.killpg(command.pid, signal.SIGKILL)
        raise AssertionError("no helper process was started")
    return command, helpers


def alive(pids: set[int]) -> list[int]:
    """The PIDs of ``pids`` still running (or unreaped)."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def kill_all(pids: set[int]) -> None:
    """SIGKILL whatever of ``pids`` is left (a failing test must not leave a search running)."""
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)


def test_sigterm_to_the_command_stops_its_helpers_and_keeps_their_trials(tmp_path: Path) -> None:
    command, helpers = start_mid_trial(tmp_path)
    try:
        command.send_signal(signal.SIGTERM)  # the command alone, as a CI server stopping a job does
        stdout, stderr = command.communicate(timeout=120)
    finally:
        kill_all({command.pid, *helpers})
    assert command.returncode == 143, stdout + stderr
    assert not alive(helpers)  # waited for, none left behind
    trials = study_of(tmp_path).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    # Both interrupted trials are queued again with their checkpoints: nothing trained is lost.
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 2


def test_a_helper_whose_command_is_killed_stops_and_queues_its_trial(tmp_path: Path) -> None:
    command, helpers = start_mid_trial(tmp_path)
    try:
        command.kill()  # kill -9: the command cannot stop its helper
        command.communicate()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and alive(helpers):
            time.sleep(0.2)
        assert not alive(helpers)  # it noticed and stopped
    finally:
        kill_all(helpers)
    trials = study_of(tmp_path).get_trials(deepcopy=False)
    # The helper's trial is queued for retry; the command's is left RUNNING for the next run to reclaim.
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 1
    assert len([t for t in trials if t.state == TrialState.RUNNING]) == 1
