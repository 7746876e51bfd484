"""A stop signal never cuts a storage write in half: it waits for the write, then stops.

The signal is raised at many points inside one Optuna write (a trace function counts the
lines SQLAlchemy runs and raises SIGINT at the k-th, for 50 k spread over the write), in this process, with the handler
``mlops`` installs. Before the deferral, a signal past about the thousandth line left
SQLAlchemy's session half-way: every later write raised StorageInternalError, and in a real
``mlops tune`` the SQLite lock it held stalled the clean-up (a stop that never exited).
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import pytest
from optuna.storages import RDBStorage

from pipeline.tune import interrupts
from pipeline.tune.interrupts import Interrupted


@pytest.fixture
def handler() -> Iterator[None]:
    """``mlops``'s handlers for SIGINT and SIGTERM, pytest's back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    for signum, previous in saved.items():
        signal.signal(signum, previous)


def _study(folder: Path) -> tuple[optuna.Study, RDBStorage]:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = RDBStorage(f"sqlite:///{folder / 'optuna.db'}", engine_kwargs={"connect_args": {"timeout": 2}})
    return optuna.create_study(storage=storage, study_name="s"), storage


def _trial(study: optuna.Study, storage: RDBStorage) -> int:
    trial_id = study.ask()._trial_id
    storage.set_trial_intermediate_value(trial_id, 0, 0.1)  # SQLAlchemy's statement cache warm, as in a search
    return trial_id


def _write_signalled_at(storage: RDBStorage, trial_id: int, line: int) -> tuple[int, KeyboardInterrupt | None]:
    """One intermediate-value write with SIGINT raised at SQLAlchemy's ``line``-th line (0: none).

    Returns the lines SQLAlchemy ran and the interrupt, caught once the write returned and the
    main thread went to sleep (where a deferred signal must wake it).
    """
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line" and str(frame.f_globals.get("__name__", "")).startswith("sqlalchemy"):
            count += 1
            if count == line:
                signal.raise_signal(signal.SIGINT)
        return tracer

    sys.settrace(tracer)
    try:
        storage.set_trial_intermediate_value(trial_id, 1, 0.5)
    except KeyboardInterrupt as stop:
        return count, stop
    finally:
        sys.settrace(None)
    if line == 0:
        return count, None
    try:
        time.sleep(30)  # a deferred signal lands here, at once
    except KeyboardInterrupt as stop:
        return count, stop
    return count, None


def test_a_signal_inside_a_storage_write_waits_for_it_and_leaves_the_storage_usable(
    tmp_path: Path, handler: None
) -> None:
    study, storage = _study(tmp_path)
    lines, _ = _write_signalled_at(storage, _trial(study, storage), line=0)
    for line in range(1, lines + 1, max(1, lines // 50)):
        trial_id = _trial(study, storage)
        interrupts.install()  # a fresh process's state: not stopping yet
        started = time.monotonic()
        ran, stop = _write_signalled_at(storage, trial_id, line)
        if ran < line:  # this write ran fewer lines than the first (SQLAlchemy's caches warmer): no signal sent
            assert stop is None
            continue
        assert isinstance(stop, Interrupted), f"line {line}: the stop never arrived"
        assert time.monotonic() - started < 30, f"line {line}: the stop waited for the sleep"
        assert storage.get_trial(trial_id).intermediate_values in ({0: 0.1}, {0: 0.1, 1: 0.5})  # all or nothing
        # The storage works (before: StorageInternalError on every later call) ...
        storage.set_trial_user_attr(trial_id, "after", line)
        assert storage.get_trial(trial_id).user_attrs["after"] == line
        # ... and no connection of ours holds the database's lock.
        other = sqlite3.connect(tmp_path / "optuna.db", timeout=0.5)
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
        other.close()


def test_a_signal_outside_atomic_code_stops_at_once(handler: None) -> None:
    started = time.monotonic()
    with pytest.raises(Interrupted) as stop:
        signal.raise_signal(signal.SIGTERM)
        time.sleep(30)
    assert stop.value.signum == signal.SIGTERM and time.monotonic() - started < 30
    assert interrupts.exit_code(stop.value) == 143
