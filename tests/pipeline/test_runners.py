"""The runner seam: one contract, run against the local runner and (marker ``docker``) the
Docker runner; plus what the Docker runner forwards and mounts."""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import MlopsError
from pipeline.runners import DockerRunner, LocalRunner, choose_runner
from tests.pipeline.docker_fixtures import (  # noqa: F401  (fixtures)
    SmallModel,
    base_image,
    docker_engine,
    small_model_image,
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
        return (lambda out, entry: LocalRunner(out=out, entrypoint=entry)), sys.executable
    built = request.getfixturevalue("small_model_image").built
    client = request.getfixturevalue("docker_engine")

    def docker(out: io.StringIO, entry: list[str] | None) -> DockerRunner:
        return DockerRunner(built.tag, client=client, out=out, entrypoint=entry)

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


def test_choose_runner_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert isinstance(choose_runner("local"), LocalRunner)
    with pytest.raises(MlopsError, match="unknown runner 'podman'"):
        choose_runner("podman")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    out = io.StringIO()
    assert isinstance(choose_runner("auto", out=out), LocalRunner)
    assert out.getvalue() == "no Docker engine reachable; running locally\n"
    with pytest.raises(MlopsError, match="no Docker engine reachable"):
        choose_runner("docker")


def test_docker_env_forwards_settings_not_host_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_MAX_TRIALS", "5")
    monkeypatch.setenv("KERAS_HOME", "/data/keras")
    monkeypatch.setenv("UNRELATED", "x")
    env = DockerRunner("img", client=object()).container_env({"SEED": "1", "PATH": "/host"})
    assert env["MLOPS_MAX_TRIALS"] == "5" and env["KERAS_HOME"] == "/data/keras"
    assert env["SEED"] == "1"
    assert "UNRELATED" not in env and "PATH" not in env and "HOME" not in env


def test_docker_mounts_same_paths_state_writable_data_read_only(tmp_path: Path) -> None:
    work = tmp_path / "work"
    keras = tmp_path / "keras"
    for folder in (work, keras):
        folder.mkdir()
    runner = DockerRunner("img", client=object(), state_dirs=[tmp_path / "cache"])
    env = {
        "MLOPS_RUNS_DIR": str(work / "runs"),  # inside the workdir: already mounted
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "MLOPS_STORAGE": "postgresql://db/optuna",  # not a path
        "KERAS_HOME": str(keras),
    }
    mounts = dict(runner.mounts(env, work))
    assert mounts == {
        tmp_path / "cache": False,
        keras: True,
        tmp_path / "mlruns": False,
        work: False,
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
    runner = choose_runner("auto", image=built.tag)
    assert isinstance(runner, DockerRunner)
    assert runner.model_path(folder) == "/app/models/tiny_reg"
    assert LocalRunner().model_path(folder) == str(folder.resolve())
