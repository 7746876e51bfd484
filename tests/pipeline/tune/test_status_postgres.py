"""``mlops status`` on PostgreSQL: the read-only storage of ``pipeline.tune.readonly``, for real.

Each test gets a fresh database on a throwaway server on 127.0.0.1 (``tests/pipeline/services.py``),
builds a study in it with Optuna's own storage, and reads it through ``open_readonly`` or the
``mlops status`` CLI. The study helpers are ``test_status.py``'s, shared with the SQLite tests.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.engine import make_url

from pipeline.errors import MlopsError
from pipeline.tune.readonly import open_readonly
from tests.cli import MLOPS
from tests.pipeline.services import PostgresServer, url_with_database
from tests.pipeline.stub_model import environment
from tests.pipeline.tune.test_status import ELSEWHERE, finished_trial, running_trial, status_of

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 1, 1, 12, 0, 0)
NO_TRIALS = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}


def three_trials(url: str) -> optuna.Study:
    """Study ``s`` (maximize) with trials of 10, 30 and 20 s; trial 1 is best (0.9, interval [0.8, 0.95])."""
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.add_trial(finished_trial(0.7, T0, 10))
    study.add_trial(finished_trial(0.9, T0 + timedelta(seconds=10), 30, interval=[0.8, 0.95]))
    study.add_trial(finished_trial(0.8, T0 + timedelta(seconds=40), 20))
    return study


def execute(url: str, *statements: str) -> list[Any]:
    """Run SQL on the database of ``url`` (autocommit, a normal read-write session); the last one's rows."""
    import psycopg2

    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password, dbname=parsed.database
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            rows: list[Any] = []
            for statement in statements:
                cursor.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            return rows
    finally:
        connection.close()


def tables(url: str) -> list[str]:
    return [row[0] for row in execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def mlops_status(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``mlops status ARGS`` in a subprocess, with a clean environment."""
    tracking = ["--tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}"]  # never read for a bare --study; kept local
    return subprocess.run(
        [*MLOPS, "status", *args, *tracking], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120
    )


def test_a_postgres_study_with_a_live_trial_counts_and_best(postgres_url: str) -> None:
    study = three_trials(postgres_url)
    _, trial_id = running_trial(study, postgres_url, ELSEWHERE)  # heartbeat now, on the server's clock

    fresh = status_of(postgres_url)
    assert fresh.state == "running"
    assert re.fullmatch(r"trial 3 running, heartbeat \d+s ago, grace 10s", fresh.reason), fresh.reason
    assert fresh.counts == {**NO_TRIALS, "complete": 3, "running": 1}
    assert (fresh.best.number, fresh.best.value, fresh.best.interval) == (1, 0.9, (0.8, 0.95))
    assert (fresh.finished, fresh.workers, fresh.median_trial_seconds) == (3, 1, 20.0)
    assert fresh.eta_seconds == 40.0  # (5 - 3) trials x 20 s, one worker
    assert fresh.goal_met is False

    # The worker stopped beating a minute ago (by the server's clock, as Optuna judges it).
    execute(
        postgres_url,
        f"UPDATE trial_heartbeats SET heartbeat = now() - interval '60 s' WHERE trial_id = {trial_id}",
    )
    stale = status_of(postgres_url)
    assert stale.state == "interrupted"
    age = re.fullmatch(r"trial 3 left RUNNING: heartbeat (\d+)s old, past the grace period 10s", stale.reason)
    assert age is not None and 60 <= int(age.group(1)) < 3600, stale.reason  # not off by a time zone


def test_the_readonly_storage_refuses_writes_on_postgres(postgres_url: str) -> None:
    three_trials(postgres_url)
    storage = open_readonly(postgres_url)
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "another")
    assert "cannot execute INSERT in a read-only transaction" in str(refused.value.__cause__)
    assert optuna.get_all_study_names(storage=postgres_url) == ["s"]  # nothing was created


def test_an_empty_postgres_database_is_one_error_and_gets_no_tables(postgres_url: str) -> None:
    with pytest.raises(MlopsError) as empty:
        open_readonly(postgres_url)
    assert str(empty.value) == (  # the database's own words, not Optuna's wrapper ("during the commit")
        f"study storage {postgres_url} cannot be read (ProgrammingError: (psycopg2.errors.UndefinedTable) "
        'relation "version_info" does not exist); fix --storage, or run `mlops tune` once if a killed process '
        "left it mid-write"
    )
    assert tables(postgres_url) == []  # no Optuna table, no alembic stamp


def test_the_cli_shows_a_postgres_study_and_lists_the_studies_for_a_wrong_name(
    postgres_url: str, tmp_path: Path
) -> None:
    three_trials(postgres_url)
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://", 1)  # as a user types it
    assert plain != postgres_url

    shown = mlops_status(tmp_path, "--study", "s", "--storage", plain, "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["counts"] == {**NO_TRIALS, "complete": 3}
    assert (status["state"], status["storage"], status["max_trials"]) == ("interrupted", plain, 40)
    assert status["best"] == {"number": 1, "value": 0.9, "interval": [0.8, 0.95]}

    missing = mlops_status(tmp_path, "--study", "t", "--storage", plain)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert missing.stderr.splitlines() == [
        f"error: no study 't' in {plain} (studies there: s); pass --study NAME, or run `mlops tune MODEL_DIR` first"
    ]


@pytest.fixture
def reader_url(postgres_server: PostgresServer, postgres_url: str) -> Iterator[tuple[str, str]]:
    """A role with a password that may only SELECT the tables made there; yields (its URL, the password)."""
    role, secret = f"mlops_reader_{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    try:
        execute(
            postgres_url,
            f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",  # the study's, made next
        )
    except Exception as error:  # a server given by $MLOPS_TEST_POSTGRES_URL may not allow CREATEROLE
        pytest.skip(f"cannot create a role on {postgres_server.url}: {error}")
    try:
        yield make_url(postgres_url).set(username=role, password=secret).render_as_string(hide_password=False), secret
    finally:
        with contextlib.suppress(Exception):
            execute(postgres_url, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_a_password_in_the_storage_url_is_never_printed(
    postgres_url: str, reader_url: tuple[str, str], tmp_path: Path
) -> None:
    # The throwaway server trusts 127.0.0.1, so the password is not checked; it is sent, and must not show.
    url, secret = reader_url
    three_trials(postgres_url)
    shown = url.replace(f":{secret}@", ":***@")
    assert secret in url and shown != url

    as_json = mlops_status(tmp_path, "--study", "s", "--storage", url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["storage"] == shown
    as_text = mlops_status(tmp_path, "--study", "s", "--storage", url)
    assert as_text.returncode == 0, as_text.stderr
    assert as_text.stdout.splitlines()[0] == f"study     s in {shown}"
    no_study = mlops_status(tmp_path, "--study", "t", "--storage", url)
    assert no_study.returncode == 2
    assert no_study.stderr.startswith(f"error: no study 't' in {shown} (studies there: s)")
    nowhere = url_with_database(url, "no_such_database")
    no_database = mlops_status(tmp_path, "--study", "s", "--storage", nowhere)
    assert no_database.returncode == 2
    assert no_database.stderr.startswith(
        f"error: study storage {nowhere.replace(secret, '***')} cannot be read (OperationalError: "
        "(psycopg2.OperationalError) connection to server at "
    )
    assert 'database "no_such_database" does not exist); fix --storage' in no_database.stderr
    assert len(no_database.stderr.splitlines()) == 1
    for run in (as_json, as_text, no_study, no_database):
        assert secret not in run.stdout + run.stderr
