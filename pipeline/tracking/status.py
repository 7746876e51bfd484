"""The model now serving as ``champion`` in the MLflow registry, read without writing.

``mlops status`` shows it beside the search. MLflow's SQLAlchemy store creates its tables on
first use of an empty database, so a SQLite store is read only when its file already holds
the registry's tables (checked through a read-only connection); a missing store means no
champion, never a new database. MLflow keeps no time for an alias, so the promotion gate
notes it in the registered model's ``mlops.champion_since`` tag; a version crowned before
that tag existed (or by hand in the MLflow UI) is "since" its registration.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pipeline.tracking.promotion import TAG_CHAMPION_SINCE
from pipeline.tracking.tracker import _probe

ALIAS = "champion"


@dataclass
class Champion:
    """The registry's answer for one model name.

    Attributes:
        model: the registered model's name (the manifest's ``name``).
        version: the version the alias points at; None when there is none (see ``note``).
        registered: when that version was registered, ISO 8601 UTC.
        since: when it became champion (the ``mlops.champion_since`` tag), else ``registered``.
        run_id: the MLflow run the version came from.
        note: why there is no version ("no champion yet", "MLflow ... unreachable").
    """

    model: str
    version: str | None = None
    registered: str | None = None
    run_id: str | None = None
    note: str | None = None
    since: str | None = None


def read_champion(model: str, tracking_uri: str) -> Champion:
    """The ``champion`` version of ``model`` in the registry at ``tracking_uri``.

    Never raises for a missing or unreachable store: the search's status is worth showing
    without it, so the reason goes in ``Champion.note``.
    """
    if tracking_uri.startswith("sqlite:///"):
        missing = _missing_sqlite_registry(tracking_uri)
        if missing:
            return Champion(model, note=missing)
    try:
        _probe(tracking_uri)  # MLflow's own retries take minutes to give up on a closed port
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            version = client.get_model_version_by_alias(model, ALIAS)
            crowned = (client.get_registered_model(model).tags or {}).get(TAG_CHAMPION_SINCE, "")
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return Champion(model, note="no champion yet")
            raise
    except Exception as error:  # connection errors surface as many different types
        first = (str(error).strip().splitlines() or [""])[0][:160]
        return Champion(model, note=f"MLflow at {tracking_uri} unreadable ({type(error).__name__}: {first})")
    registered = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC).isoformat(timespec="seconds")
    crowned_version, _, crowned_at = crowned.partition("@")
    since = crowned_at if crowned_version == str(version.version) and crowned_at else registered
    return Champion(model, str(version.version), registered, version.run_id, since=since)


def _missing_sqlite_registry(uri: str) -> str | None:
    """Why a SQLite tracking store has no registry to read (None when it has one)."""
    path = Path(uri.removeprefix("sqlite:///").partition("?")[0]).expanduser().absolute()
    if not path.is_file():
        return f"no MLflow store at {path}"
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
        try:
            found = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'registered_model_aliases'"
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.Error as error:
        return f"MLflow store {path} unreadable ({error})"
    return None if found else f"no model registered in {path} yet"
