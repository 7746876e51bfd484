"""The study's SQLite file in write-ahead-log (WAL) mode: a commit costs a quarter of a millisecond, not 1-5.

A search commits to Optuna's storage at every epoch (the intermediate value the pruner
reads) and about 80 times for a 30-epoch trial (its parameters, attributes, reports, state).
In SQLite's default rollback-journal mode each commit writes a journal and the database with
two fsyncs: 0.8-5.4 ms a commit on this project's 2-core machine (its disk's fsync time
varies), against 0.23-0.24 ms in WAL mode with the same durability (``synchronous=FULL``: a
commit is on disk when it returns) (``python -m bench.sqlite_commit --optuna``). WAL mode
is a property of the database file (it persists), so switching it once, before Optuna opens
the file, is all it takes; Optuna's engine needs no option. A reader no longer waits for the
writer either (``mlops status`` during a search).

Only the study: MLflow's ``mlflow.db`` keeps SQLite's default. A WAL database can only be
read where its ``-shm`` index can be made, and the registry is read by processes that may not
write beside it (a serving container running as another user, a read-only mount); a trial
commits to MLflow a handful of times, not at every epoch.

What a user sees: while a process has ``optuna.db`` open, ``optuna.db-wal`` and
``optuna.db-shm`` sit beside it (SQLite removes them when the last connection closes). Copy
all three, or copy the database when no search runs. WAL needs a file system with shared
memory (a local disk or a Docker volume, not NFS); where the switch fails the database keeps
its journal mode and works as before, only slower. ``mlops status`` reads a WAL study that
no process has open as an immutable file (``wal_unopened``), so reading still writes nothing.
A search closes its connections when it ends (``close``): SQLite then moves the log into
``optuna.db`` and removes it, so the study is whole in that one file again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (``sqlite:////abs`` too); ``None`` for anything else.

    In-memory databases and ``file:`` URIs are not files we manage: ``None``.
    """
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    if not path or path.startswith((":memory:", "file:")):
        return None
    return Path(path)


def write_ahead(url: str, timeout: float = 30.0) -> str | None:
    """Put the SQLite database at ``url`` in WAL mode, creating the file (and its folder) if missing.

    Args:
        url: a storage or tracking URL; anything but a file-backed ``sqlite:///`` one is left alone.
        timeout: seconds to wait for another process's lock (a worker starting at the same moment).

    Returns:
        The journal mode the database is in afterwards (``"wal"``, or the mode it kept where the
        switch failed: a file system without shared memory, a process holding the file), or
        ``None`` when ``url`` names no SQLite file or it could not be opened; the caller goes
        on either way and the store's own open reports any real problem.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as connection:
            return str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    except (OSError, sqlite3.Error):
        return None


def wal_unopened(path: Path) -> bool:
    """Whether ``path`` is a WAL-mode SQLite database that no process has open (no ``-wal`` file beside it).

    SQLite keeps the ``-wal`` file while any connection is open and removes it when the last
    one closes. Such a database can be read as immutable: nothing writes it, and a reader that
    may not create the ``-shm`` index (a read-only folder) can still read it.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError:
        return False
    # Bytes 18 and 19 of the header: the file format's write and read versions, 2 for WAL.
    in_wal = len(header) == 100 and header.startswith(b"SQLite format 3\x00") and header[18] == 2
    return in_wal and not path.with_name(path.name + "-wal").exists()


def close(engine: Any) -> None:
    """Fold a SQLite database's write-ahead log into the file, then close the engine's connections.

    Why: a command process leaves with its connections open (``pipeline/heap.py`` freezes the
    heap, so nothing is finalised at exit), and SQLite folds the log into the database only at a
    checkpoint: every 1000 pages, and when the last connection closes. Without this a finished
    search left ``optuna.db`` holding its header alone and the whole study in ``optuna.db-wal``;
    whoever copied the one file lost the study. The checkpoint is ``PASSIVE`` (it waits for no
    reader: a ``mlops status`` reading at that moment keeps the frames it reads in the log,
    where the next opener folds them in). Errors are swallowed: closing must not hide the
    search's own outcome, and a log left behind is still read and folded in by the next opener.

    Args:
        engine: a SQLAlchemy engine (an ``RDBStorage``'s ``engine``); any non-SQLite one is just disposed.
    """
    try:
        if engine.dialect.name == "sqlite":
            # The driver's connection, outside any transaction: the search's engine begins each of
            # its transactions by taking the write lock (pipeline/sqlite_locks.py).
            connection = engine.raw_connection()
            try:
                connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                connection.close()
        engine.dispose()
    except Exception:  # see the docstring
        pass
