from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage

from pipeline.config.settings import TuneSettings
from pipeline.sqlite_wal import close, sqlite_file, wal_unopened, write_ahead
from pipeline.tracking.tracker import Tracker
from pipeline.tune.readonly import load_readonly
from pipeline.tune.study import open_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def journal_mode(path: Path) -> str:
    """The journal mode a fresh connection finds in the file (WAL mode is stored in the file)."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///runs/optuna.db", Path("runs/optuna.db")),
        ("sqlite:////abs/mlflow.db", Path("/abs/mlflow.db")),
        ("sqlite:////abs/optuna.db?timeout=5", Path("/abs/optuna.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:x.db?mode=ro&uri=true", None),
        ("postgresql://user@db/optuna", None),
        ("http://127.0.0.1:5000", None),
    ],
)
def test_sqlite_file_names_only_file_backed_sqlite_urls(url: str, path: Path | None) -> None:
    assert sqlite_file(url) == path


def test_a_new_database_is_created_in_wal_mode_folder_and_all(tmp_path: Path) -> None:
    database = tmp_path / "new" / "optuna.db"
    assert write_ahead(f"sqlite:///{database}") == "wal"
    assert journal_mode(database) == "wal"


def test_an_existing_database_keeps_its_rows_and_turns_wal(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE t (a)")
        connection.execute("INSERT INTO t VALUES (7)")
        connection.commit()
    assert journal_mode(database) == "delete"
    assert write_ahead(f"sqlite:///{database}") == "wal"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("SELECT a FROM t").fetchall() == [(7,)]


def test_other_urls_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql://user@127.0.0.1:1/x", "http://127.0.0.1:1"):
        assert write_ahead(url) is None
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_database_is_reported_by_the_store_not_here(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n")
    assert write_ahead(f"sqlite:///{notes}") is None
    assert notes.read_text() == "not a database\n"  # untouched: the store's own open names the problem


def test_a_folder_that_cannot_be_made_is_not_an_error_here(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert write_ahead(f"sqlite:///{tmp_path / 'file' / 'optuna.db'}") is None


def test_workers_switching_one_new_database_at_once_all_find_it_in_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    modes: list[str | None] = []
    threads = [threading.Thread(target=lambda: modes.append(write_ahead(url))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert modes == ["wal"] * 4


def open_wal_study(tmp_path: Path) -> tuple[optuna.Study, RDBStorage, str]:
    """A study opened the search's way (``open_study``) with one finished trial, and its URL."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study, storage = open_study("s", "maximize", TuneSettings(storage=url))
    trial = study.ask()
    trial.suggest_float("lr", 0.0, 1.0)
    study.tell(trial, 0.5)
    return study, storage, url


def new_wal_study(tmp_path: Path) -> str:
    """``open_wal_study``, closed as a finished search closes it; its URL."""
    _, storage, url = open_wal_study(tmp_path)
    close(storage.engine)
    return url


def test_the_search_opens_its_study_in_wal_mode_and_leaves_mlflow_as_it_is(tmp_path: Path) -> None:
    new_wal_study(tmp_path)
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "wal")
    assert journal_mode(tmp_path / "optuna.db") == "wal"
    # A serving container running as another user reads the registry where it cannot write.
    assert journal_mode(tmp_path / "mlflow.db") == "delete"


def test_wal_unopened_tells_a_closed_wal_database_from_an_open_or_rollback_one(tmp_path: Path) -> None:
    new_wal_study(tmp_path)
    database = tmp_path / "optuna.db"
    assert wal_unopened(database)
    with contextlib.closing(sqlite3.connect(database)) as writer:
        writer.execute("SELECT count(*) FROM studies").fetchone()
        assert not wal_unopened(database)  # a connection is open: its -wal file is there
    assert wal_unopened(database)
    rollback = tmp_path / "rollback.db"
    with contextlib.closing(sqlite3.connect(rollback)) as connection:
        connection.execute("CREATE TABLE t (a)")
    assert not wal_unopened(rollback)
    assert not wal_unopened(tmp_path / "missing.db")
    (tmp_path / "text.db").write_text("x" * 200)
    assert not wal_unopened(tmp_path / "text.db")


def test_status_reads_a_closed_wal_study_without_making_a_file(tmp_path: Path) -> None:
    storage = new_wal_study(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    seen, _ = load_readonly("s", storage)
    assert [t.value for t in seen.get_trials()] == [0.5]
    # A plain mode=ro reader would leave optuna.db-wal and optuna.db-shm here (and fail in a
    # folder it may not write).
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_status_reads_a_wal_study_a_search_has_open(tmp_path: Path) -> None:
    study, _, storage = open_wal_study(tmp_path)
    assert (tmp_path / "optuna.db-wal").exists()  # the search's connection is open
    seen, _ = load_readonly("s", storage)
    assert [t.value for t in seen.get_trials()] == [0.5]
    running = study.ask()  # written after the reader opened: a new read sees it
    running.suggest_float("lr", 0.0, 1.0)
    assert len(load_readonly("s", storage)[0].get_trials()) == 2
