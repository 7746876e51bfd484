"""Session fixtures for tests against real services on 127.0.0.1: PostgreSQL and an MLflow server.

``postgres_server`` uses ``$MLOPS_TEST_POSTGRES_URL`` when set, else ``initdb``s a throwaway
cluster (binaries on PATH or under /usr/lib/postgresql/*/bin; as root it runs them as the
``postgres`` OS user, else ``nobody``), starts it on a free port listening only on 127.0.0.1
with trust authentication and its socket in the cluster folder, and stops it afterwards; it
skips, saying why, when there are no binaries. ``postgres_url`` is a fresh database on it for
one test. ``mlflow_server`` runs ``mlflow server`` (one worker, SQLite backend, artifacts served
over HTTP from a temporary folder) and yields its ``http://`` URL. Import the fixtures you use
into the test module.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

POSTGRES_ENV = "MLOPS_TEST_POSTGRES_URL"
POSTGRES_USER = "mlops"
POSTGRES_BINARIES = ("initdb", "postgres")
MLFLOW_START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections (nothing listens on it)."""
    return free_port()


def _stop(process: subprocess.Popen[Any], first: signal.Signals, wait: float = 20.0) -> None:
    """Signal a process group we started, then kill it if it outlives ``wait`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# --- PostgreSQL -------------------------------------------------------------------------------


def find_postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = [shutil.which(name) for name in POSTGRES_BINARIES]
    if all(on_path):
        return Path(os.path.realpath(str(on_path[0]))).parent

    def version(folder: str) -> int:
        name = Path(folder).parent.name
        return int(name) if name.isdigit() else 0

    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    for folder in reversed(versions):
        if all((Path(folder) / name).is_file() for name in POSTGRES_BINARIES):
            return Path(folder)
    return None


def _service_user() -> pwd.struct_passwd | None:
    """As root, the unprivileged OS user to run PostgreSQL as (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' OS user exists to run PostgreSQL")


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """``subprocess`` keyword arguments that drop root to ``user`` (no runuser/su needed)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def url_with_database(url: str, database: str) -> str:
    """``url`` (a SQLAlchemy URL) pointing at another database on the same server."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _connect(url: str) -> Any:
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg2.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database or "postgres",
        connect_timeout=5,
    )


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server; ``url`` is a SQLAlchemy URL of a database on it."""

    url: str
    own_databases: list[str] = field(default_factory=list)

    def create_database(self, prefix: str = "mlops_test") -> str:
        """A new empty database on the server; returns its URL (falls back to ``url`` when not allowed)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        connection = _connect(self.url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        except Exception:  # no CREATEDB right on a server we were given: share its database
            return self.url
        finally:
            connection.close()
        self.own_databases.append(name)
        return url_with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by ``create_database`` (connections to it are closed first)."""
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        if name not in self.own_databases:
            return
        connection = _connect(self.url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.own_databases.remove(name)
        finally:
            connection.close()


def _wait_for_postgres(url: str, process: subprocess.Popen[Any], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{_tail(log)}")
        try:
            _connect(url).close()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                message = f"postgres not accepting connections after {timeout:.0f}s ({error}):\n{_tail(log)}"
                raise RuntimeError(message) from None
        time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server: ``$MLOPS_TEST_POSTGRES_URL``, or a throwaway cluster on 127.0.0.1."""
    given = os.environ.get(POSTGRES_ENV)
    if given:
        try:
            _connect(given).close()
        except Exception as error:
            pytest.fail(f"{POSTGRES_ENV}={given} is not reachable: {error}")
        server = PostgresServer(given)
        yield server
        for name in list(server.own_databases):
            server.drop_database(url_with_database(given, name))
        return

    folder = find_postgres_bin()
    if folder is None:
        pytest.skip(
            f"no PostgreSQL binaries (initdb, postgres) on PATH or under /usr/lib/postgresql/*/bin; "
            f"install them (apt-get install postgresql) or set {POSTGRES_ENV}"
        )
    user = _service_user()
    # Not under pytest's tmp folder: its parents are mode 0700 root, which the service user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="mlops-test-pg-"))
    data, sockets, log = base / "data", base / "sockets", base / "postgres.log"
    sockets.mkdir()
    if user is not None:
        for path in (base, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    process: subprocess.Popen[Any] | None = None
    try:
        init = subprocess.run(
            [
                str(folder / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                POSTGRES_USER,
                "--auth",
                "trust",  # a local, test-only cluster listening on 127.0.0.1
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=base,
            **_as_user(user),
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        port = free_port()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(sockets),
            "max_connections": "200",
            "fsync": "off",  # a throwaway cluster: durability buys nothing here
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        command = [str(folder / "postgres"), "-D", str(data)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=base,
                start_new_session=True,
                **_as_user(user),
            )
        admin = f"postgresql+psycopg2://{POSTGRES_USER}@127.0.0.1:{port}/postgres"
        try:
            _wait_for_postgres(admin, process, log)
        except RuntimeError as error:
            pytest.fail(str(error))
        server = PostgresServer(admin)
        server.url = server.create_database("mlops")
        yield server
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # SIGINT: PostgreSQL's "fast" shutdown
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test (as SQLAlchemy URL), dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    with contextlib.suppress(Exception):
        postgres_server.drop_database(url)


# --- MLflow tracking server ------------------------------------------------------------------


def _mlflow_command() -> list[str]:
    beside = Path(sys.executable).parent / "mlflow"
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "mlflow"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts uploaded to it over HTTP); yields its URL."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = base / "server.log"
    command = [
        *_mlflow_command(),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{base / 'server.db'}",
        # Clients upload through the server (mlflow-artifacts:/), as they would from other machines.
        "--serve-artifacts",
        "--artifacts-destination",
        str(base / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=base, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {MLFLOW_START_TIMEOUT:.0f}s:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(process, signal.SIGTERM)
