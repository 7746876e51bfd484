"""The runner seam: one contract, run against the local runner and (marker ``docker``) the
Docker runner; plus what the Docker runner forwards and mounts."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import MlopsError
from pipeline.execute.runners import DockerRunner, LocalRunner, choose_runner, failure_line
from tests.pipeline.docker_fixtures import (
    SmallModel,
)

# A runner factory: (out, entrypoint or None) -> runner; and the Python inside that runner.
Factory = tuple[Callable[[io.StringIO, list[str] | None], Any], str]


@pytest.fixture(
    params=[
        "local",
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
    ]
)
def runner_factory(request: pytest.FixtureRequest) -> Factory:
    """Builds runners of one kind; the contract below holds for each."""
    if request.param == "local":
        return (lambda out, entry: LocalRunner(out=out, entrypoint=entry, host_env=os.environ)), sys.executable
    built = request.getfixturevalue("small_model_image").built
    client = request.getfixturevalue("docker_engine")

    def docker(out: io.StringIO, entry: list[str] | None) -> DockerRunner:
        return DockerRunner(built.tag, client=client, out=out, entrypoint=entry, host_env=os.environ)

    return docker, "python3"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A work folder the container's user may enter (pytest's are 0700)."""
    folder = tmp_path / "work"
    folder.mkdir()
    folder.chmod(0o755)
    return folder


def test_contract_help_exits_zero(runner_factory: Factory, workdir: Path) -> None:
    make, _ = runner_factory
    out = io.StringIO()
    assert make(out, None).run(["--help"], {}, workdir) == 0
    assert "Usage: mlops" in out.getvalue()


def test_contract_failure_exit_code_propagates(runner_factory: Factory, workdir: Path) -> None:
    make, _ = runner_factory
    out = io.StringIO()
    assert make(out, None).run(["build", str(workdir / "missing")], {}, workdir) == 2
    assert "no such model folder" in out.getvalue()


def test_contract_env_and_paths_are_the_same_inside(runner_factory: Factory, workdir: Path, tmp_path: Path) -> None:
    make, python = runner_factory
    runs = tmp_path / "runs"  # missing: mlops makes it (and the Docker runner, to mount it)
    script = (
        "import os, sqlite3, sys\n"
        "runs = os.environ['MLOPS_RUNS_DIR']; os.makedirs(runs, exist_ok=True)\n"
        "open(os.path.join(runs, 'summary.json'), 'w').write(os.getcwd())\n"
        "path = os.environ['MLFLOW_TRACKING_URI'].removeprefix('sqlite:///')\n"
        "os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "db = sqlite3.connect(path)\n"
        "db.execute('create table runs (id)'); db.commit()\n"
        "print('ok', os.environ['MLOPS_MAX_TRIALS'], 'é')\n"
        "sys.exit(7)\n"
    )
    env = {
        "MLOPS_RUNS_DIR": str(runs),
        "MLOPS_MAX_TRIALS": "3",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
    }
    out = io.StringIO()
    assert make(out, [python, "-c", script]).run([], env, workdir) == 7
    assert "ok 3 é" in out.getvalue()
    assert (runs / "summary.json").read_text() == str(workdir)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()


def test_contract_kill_returns_137(runner_factory: Factory, workdir: Path) -> None:
    make, python = runner_factory
    out = io.StringIO()
    runner = make(out, [python, "-c", "import time; print('up', flush=True); time.sleep(120)"])
    timer = threading.Timer(3.0, runner.stop)
    timer.start()
    try:
        assert runner.run([], {}, workdir) == 137
    finally:
        timer.cancel()


def test_choose_runner_names(tmp_path: Path) -> None:
    nowhere = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    assert isinstance(choose_runner("local", nowhere), LocalRunner)
    with pytest.raises(MlopsError, match="unknown runner 'podman'"):
        choose_runner("podman", nowhere)
    out = io.StringIO()
    assert isinstance(choose_runner("auto", nowhere, out=out), LocalRunner)
    assert out.getvalue() == "no Docker engine reachable; running locally\n"
    with pytest.raises(MlopsError, match=f"no Docker engine reachable at unix://{tmp_path}/no.sock"):
        choose_runner("docker", nowhere)


def test_docker_env_forwards_settings_not_host_paths() -> None:
    host = {"MLOPS_MAX_TRIALS": "5", "KERAS_HOME": "/data/keras", "UNRELATED": "x"}
    runner = DockerRunner("img", client=object(), user="1000:1000", host_env=host)
    env = runner.container_env({"SEED": "1", "PATH": "/host"})
    assert env["MLOPS_MAX_TRIALS"] == "5" and env["KERAS_HOME"] == "/data/keras"
    assert env["SEED"] == "1" and env["PATH"] == "/host"  # what the caller sets on purpose passes
    assert "UNRELATED" not in env and "HOME" not in env
    # Another user than the image's gets a HOME it can write.
    assert DockerRunner("img", client=object(), user="4242:4242").container_env({})["HOME"] == "/tmp"


SECRETS = {
    "MLOPS_SMTP_PASSWORD": "smtp-secret",
    "MLOPS_WEBHOOK_URL": "https://hooks.example.org/secret",
    "GITHUB_TOKEN": "ghp_secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
}


def test_docker_env_drops_secrets_of_the_host() -> None:
    host = {**SECRETS, "MLOPS_MAX_TRIALS": "5"}
    env = DockerRunner("img", client=object(), host_env=host).container_env({"MLOPS_RESTARTS": "1"}, ["tune", "m"])
    assert not set(SECRETS) & set(env), env
    assert env["MLOPS_MAX_TRIALS"] == "5" and env["MLOPS_RESTARTS"] == "1"


def test_local_runner_child_gets_no_secrets(workdir: Path) -> None:
    host = {**os.environ, **SECRETS, "MLOPS_MAX_TRIALS": "5", "LC_ALL": "C.UTF-8"}
    out = io.StringIO()
    script = "import json, os; print(json.dumps(dict(os.environ)))"
    runner = LocalRunner(out=out, entrypoint=[sys.executable, "-c", script], host_env=host)
    code = runner.run([], {"MLOPS_RESTARTS": "2"}, workdir)
    assert code == 0, out.getvalue()
    child = json.loads(out.getvalue())
    assert not set(SECRETS) & set(child), sorted(child)
    assert child["MLOPS_MAX_TRIALS"] == "5" and child["MLOPS_RESTARTS"] == "2"
    assert child["PATH"] == os.environ["PATH"] and child["LC_ALL"] == "C.UTF-8"  # a Python starts


def test_docker_network_none_unless_a_store_is_remote(tmp_path: Path) -> None:
    runner = DockerRunner("img", client=object())
    local = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    assert runner.network_mode(local, ["tune", "m"]) == "none"
    assert runner.network_mode({}, ["tune", "m", "--storage", f"sqlite:///{tmp_path}/o.db"]) == "none"
    assert runner.network_mode({"MLOPS_TRACKING_URI": "http://127.0.0.1:5000"}, ["tune"]) == "host"
    assert runner.network_mode(local, ["tune", "m", "--tracking-uri", "https://mlflow.example.org"]) == "host"
    assert runner.network_mode(local, ["tune", "m", "--storage", "postgresql://u:p@db/optuna"]) == "host"
    assert runner.network_mode({"MLOPS_STORAGE": "mysql://db/optuna"}, []) == "host"
    assert DockerRunner("img", client=object(), network="host").network_mode(local, []) == "host"


def test_docker_mounts_same_paths_checkout_read_only_state_writable(tmp_path: Path) -> None:
    work = tmp_path / "work"
    keras = tmp_path / "keras"
    for folder in (work, keras):
        folder.mkdir()
    runner = DockerRunner("img", client=object(), user="1000:1000", state_dirs=[tmp_path / "cache"])
    env = {
        "MLOPS_RUNS_DIR": str(work / "runs"),  # inside the read-only checkout: its own rw mount
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "MLOPS_STORAGE": "postgresql://db/optuna",  # not a path
        "KERAS_HOME": str(keras),
    }
    mounts = dict(runner.mounts(env, work))
    assert mounts == {
        tmp_path / "cache": False,
        keras: True,
        tmp_path / "mlruns": False,
        work: True,
        work / "runs": False,
    }
    assert (work / "runs").is_dir() and (tmp_path / "mlruns").is_dir()
    if os.geteuid() == 0:  # only root can give a folder away, and only root needs to
        assert (tmp_path / "mlruns").stat().st_uid == 1000
        assert work.stat().st_uid == 0  # the work tree itself is never chowned


def test_docker_runner_needs_an_image(tmp_path: Path) -> None:
    with pytest.raises(MlopsError, match="no image to run; build one first"):
        DockerRunner(None, client=object()).run(["--help"], {}, tmp_path)


@pytest.mark.docker
@pytest.mark.slow
def test_docker_runner_model_path_is_the_image_copy(
    small_model_image: SmallModel,  # noqa: F811
    docker_engine: Any,  # noqa: F811
) -> None:
    folder, built, _ = small_model_image
    runner = choose_runner("auto", os.environ, image=built.tag)
    assert isinstance(runner, DockerRunner)
    assert runner.model_path(folder) == "/app/models/tiny_reg"
    assert LocalRunner().model_path(folder) == str(folder.resolve())


_SANDBOX_PROBE = """
import errno, json, os, sys
found = {}
try:
    open("probe.txt", "w").write("x")
    found["checkout"] = "writable"
except OSError as error:
    found["checkout"] = errno.errorcode[error.errno]
open(os.path.join(os.environ["MLOPS_RUNS_DIR"], "ok.txt"), "w").write("x")
found["net"] = sorted(os.listdir("/sys/class/net"))
found["uid"] = os.getuid()
found["cap_eff"] = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff"))
found["secrets"] = sorted(name for name in os.environ if name in sys.argv[1:])
print(json.dumps(found))
"""


@pytest.mark.docker
@pytest.mark.slow
def test_docker_sandbox_read_only_checkout_no_network_no_secrets(
    small_model_image: SmallModel,  # noqa: F811
    docker_engine: Any,  # noqa: F811
    workdir: Path,
    tmp_path: Path,
) -> None:
    host = {**os.environ, **SECRETS}
    runs = tmp_path / "runs"
    entry = ["python3", "-c", _SANDBOX_PROBE, *SECRETS]

    def probe(env: dict[str, str]) -> dict[str, Any]:
        out = io.StringIO()
        tag = small_model_image.built.tag
        runner = DockerRunner(tag, client=docker_engine, out=out, entrypoint=entry, host_env=host)
        assert runner.run([], {"MLOPS_RUNS_DIR": str(runs), **env}, workdir) == 0, out.getvalue()
        return dict(json.loads(out.getvalue().strip().splitlines()[-1]))

    local = probe({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db"})
    assert local == {
        "checkout": "EROFS",
        "net": ["lo"],
        "uid": 1000 if os.geteuid() == 0 else os.geteuid(),
        "cap_eff": "0000000000000000",
        "secrets": [],
    }
    assert (runs / "ok.txt").is_file() and not (workdir / "probe.txt").exists()
    remote = probe({"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})  # a tracking server: the host's network
    assert remote["net"] == sorted(os.listdir("/sys/class/net")) and len(remote["net"]) > 1
    assert remote["checkout"] == "EROFS" and remote["secrets"] == []


def test_contract_the_last_error_line_is_kept_for_the_failure_mail(runner_factory: Factory, workdir: Path) -> None:
    make, python = runner_factory
    script = "import sys; print('epoch 1'); print('error: model.py:3: SyntaxError: bad'); print('bye'); sys.exit(2)"
    runner = make(io.StringIO(), [python, "-c", script])
    assert runner.run([], {}, workdir) == 2
    assert runner.last_failure == "model.py:3: SyntaxError: bad"
    crash = "import sys; print('start', flush=True); raise RuntimeError('boom')"
    runner = make(io.StringIO(), [python, "-c", crash])
    assert runner.run([], {}, workdir) == 1
    assert runner.last_failure == "RuntimeError: boom"
    runner = make(io.StringIO(), [python, "-c", "print('fine')"])
    assert runner.run([], {}, workdir) == 0 and runner.last_failure is None


def test_a_traceback_is_read_from_stderr_when_the_streams_arrive_out_of_order() -> None:
    # A container's stdout and stderr are copied apart: a print before a crash can land
    # after the traceback in the merged log (seen in CI: the mail said "start").
    merged = ["Traceback (most recent call last):", '  File "<string>", line 1', "RuntimeError: boom", "start"]
    errors = merged[:3]
    assert failure_line(merged) == "start"  # what the merged log alone would say
    assert failure_line(merged, errors) == "RuntimeError: boom"
    assert failure_line(["error: bad setting", *merged], errors) == "bad setting"
    assert failure_line(["start"], []) is None
