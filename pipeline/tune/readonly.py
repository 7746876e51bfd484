"""Open a search's Optuna storage so that reading it can change nothing.

``mlops status`` reads a study another process may be writing. ``optuna.load_study`` with a
URL would build an ``RDBStorage`` that creates missing tables and stamps a schema version on
open; here the tables are never created, the version is never checked, and the connection
itself refuses writes: SQLite is opened ``mode=ro`` (a missing file is an error, not a new
database; a study in WAL mode that no process has open, ``immutable`` too, so that no
``-wal`` or ``-shm`` file is made beside it), PostgreSQL with
``default_transaction_read_only``. Other databases get the first two guards only.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from pipeline.errors import MlopsError
from pipeline.sqlite_wal import wal_unopened
from pipeline.tune.study import redact, with_driver

# Optuna's heartbeat table (schema-versioned by Optuna; read only, by these two columns).
_HEARTBEATS = sqlalchemy.table(
    "trial_heartbeats",
    sqlalchemy.column("trial_id", sqlalchemy.Integer),
    sqlalchemy.column("heartbeat", sqlalchemy.DateTime),
)


def readonly_url(url: str) -> tuple[str, dict[str, object]]:
    """The SQLAlchemy URL and engine options that open ``url`` for reading only.

    Raises:
        MlopsError: a SQLite storage whose file does not exist (nothing was tuned there).
    """
    scheme = url.partition("://")[0]
    if scheme.startswith("sqlite"):
        path = url.partition(":///")[2].partition("?")[0]
        if not path or path.startswith(":memory:"):
            raise MlopsError(f"study storage {url} is in memory, gone with its process; pass the --storage it used")
        file = Path(path).expanduser().absolute()
        if not file.is_file():
            raise MlopsError(
                f"no study storage at {file}: nothing was tuned there; run `mlops tune MODEL_DIR` first "
                "or pass the --storage (or --runs-dir) the search used"
            )
        query = {"mode": "ro", "uri": "true"}
        if wal_unopened(file):
            # A WAL study no process has open: a mode=ro reader would create its -wal and -shm
            # files (or fail where it may not); immutable reads the file alone. A search that
            # opens it meanwhile writes its -wal first: the file changes at a checkpoint only.
            query["immutable"] = "1"
        # Built as a URL object: SQLAlchemy unquotes the database part once, SQLite's URI parser again.
        ro = sqlalchemy.engine.URL.create("sqlite", database=f"file:{quote(str(file))}", query=query)
        # A writer holds SQLite's lock for a moment per commit: wait for it like ``mlops tune`` does.
        return ro.render_as_string(hide_password=False), {"connect_args": {"timeout": 30}}
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return with_driver(url), {"connect_args": {"options": "-c default_transaction_read_only=on"}}
    return url, {}


def open_readonly(url: str) -> RDBStorage:
    """An ``RDBStorage`` on ``url`` that neither creates tables nor migrates nor writes.

    No heartbeat is configured on it, so nothing it does can fail a trial.

    Raises:
        MlopsError: the storage is missing, unreachable or not an Optuna storage.
    """
    target, engine_kwargs = readonly_url(url)
    try:
        storage = RDBStorage(
            target, engine_kwargs=engine_kwargs, skip_compatibility_check=True, skip_table_creation=True
        )
        storage.get_all_studies()  # proves the tables are Optuna's, now rather than mid-report
    except Exception as error:
        # Optuna wraps every database error in a StorageInternalError saying only "during the commit".
        inner = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else None
        cause = inner or error
        first = (str(cause).strip().splitlines() or [""])[0]
        raise MlopsError(
            f"study storage {redact(url)} cannot be read ({type(cause).__name__}: {first}); "
            "fix --storage, or run `mlops tune` once if a killed process left it mid-write"
        ) from None
    return storage


def load_readonly(name: str, url: str) -> tuple[optuna.Study, RDBStorage]:
    """The study ``name`` in ``url``, opened read-only; never created.

    Raises:
        MlopsError: no such study (the message lists the studies there), or an unreadable storage.
    """
    storage = open_readonly(url)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        # ``<study>.parent``, ``<study>.retry-3``: claim markers of ``pipeline.tune.study``, not searches.
        searches = [n for n in names if not any(n.startswith(f"{other}.") for other in names)]
        there = f"studies there: {', '.join(searches)}" if searches else "it holds no study"
        raise MlopsError(
            f"no study {name!r} in {redact(url)} ({there}); pass --study NAME, or run `mlops tune MODEL_DIR` first"
        )
    return optuna.load_study(study_name=name, storage=storage), storage


def heartbeat_ages(storage: RDBStorage, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by trial id, on the database's own clock.

    Optuna records heartbeats with the database's ``now()`` and judges them the same way
    (``RDBStorage._get_stale_trial_ids``, private); so does this, so a worker on another
    machine with another clock is judged fairly. A trial with no heartbeat row is absent.
    """
    if not trial_ids:
        return {}
    query = sqlalchemy.select(_HEARTBEATS.c.trial_id, _HEARTBEATS.c.heartbeat).where(
        _HEARTBEATS.c.trial_id.in_(trial_ids)
    )
    with storage.engine.connect() as connection:
        now = _naive(connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar())
        rows = connection.execute(query).all()
    return {int(trial_id): (now - _naive(beat)).total_seconds() for trial_id, beat in rows}


def _naive(value: object) -> datetime:
    """A database timestamp as a naive ``datetime`` (PostgreSQL's ``now()`` carries a zone, the column none)."""
    if isinstance(value, str):  # SQLite returns ``now()`` as text
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return value.replace(tzinfo=None)
