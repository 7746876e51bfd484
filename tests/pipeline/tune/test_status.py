"""``mlops status``: a read-only snapshot of a search, on real Optuna storage and real ``mlops tune`` runs.

The fast tests build studies directly in SQLite (trials with chosen times, a heartbeat
made stale by hand); the slow ones watch a real ``mlops tune`` subprocess, kill it, and
read a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage
from optuna.trial import create_trial
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.environment import Environment
from pipeline.errors import MlopsError
from pipeline.summary import GoalSpec
from pipeline.tune.attributes import INTERVAL_ATTR, WORKER_ATTR
from pipeline.tune.readonly import load_readonly, open_readonly
from pipeline.tune.status import read_status
from pipeline.tune.study import worker_id
from tests.pipeline.stub_model import environment, run_tune, tune_command, write_stub

GOAL = GoalSpec(metric="val_accuracy", direction="maximize", target=0.95)
ELSEWHERE = "another-host|pid:[1]|4242"  # a worker on another machine: only its heartbeat tells


def files(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: (mtime_ns, size, sha256): what a read must leave as it was."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def new_study(tmp_path: Path, name: str = "s") -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return optuna.create_study(study_name=name, storage=url, direction="maximize"), url


def finished_trial(value: float, start: datetime, seconds: float, interval: list[float] | None = None) -> Any:
    trial = create_trial(
        value=value,
        params={"x": value},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        user_attrs={WORKER_ATTR: ELSEWHERE, **({INTERVAL_ATTR: interval} if interval else {})},
    )
    trial.datetime_start, trial.datetime_complete = start, start + timedelta(seconds=seconds)
    return trial


def status_of(url: str, name: str = "s", goal: GoalSpec | None = GOAL, max_trials: int = 5, **kw: Any) -> Any:
    study, storage = load_readonly(name, url)
    return read_status(study, storage, url, max_trials, goal, grace_period=10, **kw)


def test_counts_best_and_an_eta_from_the_median_trial(tmp_path: Path) -> None:
    study, url = new_study(tmp_path)
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    study.add_trial(finished_trial(0.7, t0, 10))
    study.add_trial(finished_trial(0.9, t0 + timedelta(seconds=10), 30, interval=[0.8, 0.95]))
    study.add_trial(finished_trial(0.8, t0 + timedelta(seconds=40), 20))
    status = status_of(url, now=t0 + timedelta(hours=1))
    assert status.state == "interrupted"  # budget left, goal unmet, nothing runs
    assert status.reason == "no trial running; 3 of 5 finished, goal not met: `mlops tune` continues it"
    assert status.counts == {"complete": 3, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    assert (status.best.number, status.best.value, status.best.interval) == (1, 0.9, (0.8, 0.95))
    assert status.elapsed_seconds == 60.0  # first start to last end, not to now: nothing runs
    assert status.median_trial_seconds == 20.0
    assert status.eta_seconds == 40.0  # (5 - 3) trials x 20 s
    assert status.goal_met is False


def test_the_goal_or_the_budget_finishes_a_search(tmp_path: Path) -> None:
    study, url = new_study(tmp_path)
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    study.add_trial(finished_trial(0.7, t0, 10))
    study.add_trial(finished_trial(0.97, t0 + timedelta(seconds=10), 10))
    met = status_of(url, now=t0 + timedelta(hours=1))
    assert (met.state, met.reason, met.goal_met, met.eta_seconds) == ("finished", "goal met by trial 1", True, None)
    spent = status_of(url, goal=GoalSpec(target=0.99), max_trials=2, now=t0 + timedelta(hours=1))
    assert (spent.state, spent.reason) == ("finished", "2 of max_trials 2 trials finished")


def running_trial(study: optuna.Study, url: str, worker: str) -> tuple[RDBStorage, int]:
    """A RUNNING trial of ``worker`` with a heartbeat recorded now, as ``optimize`` leaves one."""
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker)
    storage = RDBStorage(url, heartbeat_interval=1)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), trial.number)
    storage.record_heartbeat(trial_id)
    return storage, trial_id


def test_a_running_trial_lives_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    study, url = new_study(tmp_path)
    _, trial_id = running_trial(study, url, ELSEWHERE)
    fresh = status_of(url)
    assert fresh.state == "running"
    assert fresh.reason.startswith("trial 0 running, heartbeat ")
    assert fresh.counts["running"] == 1 and fresh.workers == 1

    with sqlite3.connect(tmp_path / "optuna.db") as db:  # the worker stopped beating a minute ago
        db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', '-60 seconds') WHERE trial_id = ?", [trial_id]
        )
    stale = status_of(url)
    assert stale.state == "interrupted"
    age = re.fullmatch(r"trial 0 left RUNNING: heartbeat (\d+)s old, past the grace period 10s", stale.reason)
    assert age is not None and int(age.group(1)) >= 60, stale.reason


def test_a_trial_whose_worker_here_is_gone_is_interrupted_despite_a_fresh_heartbeat(tmp_path: Path) -> None:
    study, url = new_study(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host, namespace, _ = worker_id().split("|")
    running_trial(study, url, f"{host}|{namespace}|{dead.pid}")
    status = status_of(url)
    assert (status.state, status.reason) == ("interrupted", f"trial 0 left RUNNING: its worker PID {dead.pid} is gone")


def test_reading_changes_no_byte_and_the_storage_refuses_writes(tmp_path: Path) -> None:
    study, url = new_study(tmp_path)
    study.add_trial(finished_trial(0.7, datetime(2026, 1, 1), 10))
    running_trial(study, url, ELSEWHERE)
    before = files(tmp_path)
    time.sleep(0.01)  # a write now would show in the mtime
    status_of(url)
    assert files(tmp_path) == before  # no byte, no mtime, no journal or new file
    storage = open_readonly(url)
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "another")
    assert "attempt to write a readonly database" in str(refused.value.__cause__)


def test_a_missing_study_or_storage_is_one_line_and_nothing_is_created(tmp_path: Path) -> None:
    study, url = new_study(tmp_path)
    optuna.create_study(study_name="s.parent", storage=url)  # a claim marker: not offered as a study
    with pytest.raises(MlopsError) as missing:
        load_readonly("t", url)
    assert str(missing.value) == (
        f"no study 't' in {url} (studies there: s); pass --study NAME, or run `mlops tune MODEL_DIR` first"
    )
    nowhere = tmp_path / "none" / "optuna.db"
    with pytest.raises(MlopsError, match=r"^no study storage at .*none/optuna.db: nothing was tuned there; run"):
        load_readonly("s", f"sqlite:///{nowhere}")
    assert not nowhere.parent.exists()


def status_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    """``mlops status --json ARGS`` in this process, with a clean environment."""
    env = Environment({k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))})
    stores = [
        "--storage",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    result = CliRunner().invoke(app, ["status", *args, *stores, "--json"], obj=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def study_exists(database: Path, name: str) -> bool:
    """Whether the search made its study yet, read without writing.

    Not ``optuna.get_all_study_names``: its storage creates the tables, racing the search
    that is creating them ("table studies already exists").
    """
    if not database.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:  # no table yet, or locked while the search writes it
        return False


@pytest.mark.slow
def test_status_follows_a_running_search_and_sees_it_killed(tmp_path: Path) -> None:
    import mlflow  # noqa: F401  (imported before the search starts: the first poll must be quick)

    model = write_stub(tmp_path / "stub", epochs=6, sleep=1.0)  # goal 1.0: never met; 6 s a trial
    command = tune_command(tmp_path, model, "--max-trials", "5", "--study-name", "s")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen = []
    trial_1 = tmp_path / "runs" / "stub" / "s" / "checkpoints" / "trial-0001" / "epochs.log"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if study_exists(tmp_path / "optuna.db", "s"):
                seen.append(status_json(tmp_path, "--study", "s"))
            if trial_1.exists() and trial_1.read_text().strip():
                time.sleep(0.3)  # past trial 1's first report: the kill lands mid-epoch, not mid-write
                break
            time.sleep(0.2)
        seen.append(status_json(tmp_path, "--study", "s"))  # trial 1 is running now
    finally:
        process.kill()
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""

    assert seen[-1]["state"] == "running" and seen[-1]["counts"]["running"] == 1, seen[-1]
    assert seen[-1]["reason"].startswith("trial 1 running, heartbeat ")
    completes = [s["counts"]["complete"] for s in seen]
    assert completes == sorted(completes) and completes[-1] == 1  # counts only grow; trial 0 finished
    assert seen[-1]["goal"]["target"] == 1.0 and seen[-1]["max_trials"] == 5  # recorded by the run (bare --study)

    before = files(tmp_path)
    killed = status_json(tmp_path, "--study", "s")
    assert files(tmp_path) == before  # read-only: no byte, mtime or file changed
    assert killed["state"] == "interrupted"
    assert killed["reason"] == f"trial 1 left RUNNING: its worker PID {process.pid} is gone"
    assert killed["counts"] == {"complete": 1, "pruned": 0, "failed": 0, "running": 1, "waiting": 0}


@pytest.mark.slow
def test_a_finished_search_shows_its_best_trial_and_the_champion(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", epochs=1, target=0.6)  # met by the first trial with x >= 0.6
    done = run_tune(tmp_path, model)  # the study name derived from the model, as MODEL_DIR finds it
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "runs" / "stub" / "summary.json").read_text())

    before = files(tmp_path)
    by_model = status_json(tmp_path, str(model))
    by_study = status_json(tmp_path, "--study", by_model["study"])
    assert files(tmp_path) == before  # neither store, nor anything else, was touched
    assert by_model == by_study  # the model folder and the bare study name give the same answer
    assert by_model["state"] == "finished"
    assert by_model["reason"] == f"goal met by trial {summary['best']['number']}"
    assert by_model["best"]["number"] == summary["best"]["number"]
    assert by_model["best"]["value"] == pytest.approx(summary["best"]["value"])
    assert by_model["goal_met"] is True and by_model["eta_seconds"] is None
    champion = by_model["champion"]
    assert (champion["model"], champion["version"], champion["note"]) == ("stub", "1", None)
    assert champion["run_id"] == summary["best"]["mlflow_run_id"]
