"""Workers sharing one SQLite study each take a queued trial alone (pipeline/sqlite_locks.py)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, text

from pipeline.config.settings import TuneSettings
from pipeline.sqlite_locks import immediate_transactions
from pipeline.sqlite_wal import close
from pipeline.tune.study import open_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")

QUEUED = 40
WORKERS = 4


def drain_queue(url: str, ran: str, start_at: float) -> None:
    """One worker: open the study the search's way, then run queued trials until none is left."""
    study, storage = open_study("queue", "maximize", TuneSettings(storage=url))
    while time.time() < start_at:  # every worker asks for its first trial at the same moment
        time.sleep(0.001)

    def objective(trial: optuna.Trial) -> float:
        with open(ran, "a") as record:
            record.write(f"{trial.number}\n")
        return trial.suggest_float("x", 0.0, 100.0)

    waiting = (optuna.trial.TrialState.WAITING,)
    while study.get_trials(deepcopy=False, states=waiting):
        study.optimize(objective, n_trials=1)
    close(storage.engine)


def test_workers_draining_one_queue_run_each_queued_trial_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study, storage = open_study("queue", "maximize", TuneSettings(storage=url))
    for index in range(QUEUED):  # how a staged search and first trials hand out work
        study.enqueue_trial({"x": float(index)})
    close(storage.engine)
    ran = tmp_path / "ran.txt"
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=drain_queue, args=(url, str(ran), time.time() + 8)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * WORKERS
    numbers = [int(line) for line in ran.read_text().split()]
    # Without BEGIN IMMEDIATE two workers read one trial WAITING and both ran it (then one
    # failed telling it), in every try of this test.
    assert len(numbers) == len(set(numbers))
    assert set(range(QUEUED)) <= set(numbers)  # a worker that found the queue empty drew a trial of its own
    finished = optuna.load_study(study_name="queue", storage=url).get_trials(deepcopy=False)
    assert [t.params["x"] for t in finished[:QUEUED]] == [float(i) for i in range(QUEUED)]


def test_each_transaction_takes_the_write_lock_as_it_begins(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    engine = create_engine(f"sqlite:///{database}")
    immediate_transactions(engine)
    other = sqlite3.connect(database, timeout=0.1, isolation_level=None)
    with engine.begin() as connection:
        connection.execute(text("SELECT 1"))  # a read only: the lock is already held
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again once the transaction ends
    other.execute("ROLLBACK")
    other.close()
    engine.dispose()


def test_other_databases_are_left_as_they_are() -> None:
    engine = create_engine("postgresql+psycopg2://user@127.0.0.1:1/none")  # never connected
    hooks = len(engine.pool.dispatch.connect)
    immediate_transactions(engine)
    assert (len(engine.pool.dispatch.connect), len(engine.dispatch.begin)) == (hooks, 0)
    sqlite = create_engine("sqlite://")
    hooks = len(sqlite.pool.dispatch.connect)
    immediate_transactions(sqlite)
    assert (len(sqlite.pool.dispatch.connect), len(sqlite.dispatch.begin)) == (hooks + 1, 1)
