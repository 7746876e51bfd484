"""Session fixtures for tests that need a real Docker engine (marker ``docker``).

``docker_engine`` uses a running engine, or starts ``dockerd`` the way TOOLING.md does
(root only, no bridge, the host firewall left alone) and stops it afterwards, or skips
saying why. ``base_image`` makes sure the registry-free base image exists, building it with
``scripts/build-base-image.sh``. ``small_model_image`` builds a tiny scikit-learn model once
per session. Import the fixtures you use into the test module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pipeline.build.images import BuiltImage, build_image

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("MLOPS_TEST_BASE_IMAGE", "local/python:3.11-bookworm")
DOCKERD_FLAGS = ["--bridge=none", "--iptables=false", "--ip6tables=false"]
# Each test module that imports a fixture gets its own copy of it; this keeps one build.
_BUILT: dict[str, SmallModel] = {}


def _ping() -> Any | None:
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Docker SDK client for a live engine; starts (and later stops) dockerd if need be."""
    client = _ping()
    if client is not None:
        yield client
        client.close()
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.skip("no Docker engine reachable and dockerd cannot be started (needs root)")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [dockerd, "--data-root", "/var/lib/docker", *DOCKERD_FLAGS],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while (client := _ping()) is None and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.25)
    if client is None:
        process.terminate()
        process.wait(timeout=30)
        pytest.skip(f"dockerd did not start; see {log_path}: {log_path.read_text()[-300:]}")
    yield client
    client.close()
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def base_image(docker_engine: Any) -> str:
    """The base image tests build from; built with scripts/build-base-image.sh if missing."""
    try:
        docker_engine.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except Exception:
        pass
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip(f"{BASE_IMAGE} missing; run scripts/build-base-image.sh as root (debootstrap)")
    env = {**os.environ, "MLOPS_BASE_IMAGE": BASE_IMAGE}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-base-image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/build-base-image.sh failed: {done.stderr[-800:]}")
    return BASE_IMAGE


def make_regression_model(folder: Path, name: str = "tiny_reg", extra: str = "") -> Path:
    """Write a small scikit-learn regression model folder and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.yaml").write_text(
        f"name: {name}\nkind: regression\nframework: scikit-learn\n"
        "goal: {metric: r2, target: 0.5}\n"
        "search_space:\n  alpha: {type: float, low: 0.001, high: 10.0, log: true}\n"
    )
    (folder / "model.py").write_text(
        "from sklearn.linear_model import Ridge\n\n\n"
        "def train(data, params, trial):\n"
        "    return Ridge(alpha=params['alpha'])\n" + extra
    )
    return folder


def project_snapshot(dest: Path) -> Path:
    """A still copy of the project's code: the work tree may change while a test builds."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "pipeline", dest / "pipeline", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    return dest


class SmallModel(NamedTuple):
    """A model folder, its built image and the project snapshot the image holds."""

    folder: Path
    built: BuiltImage
    project: Path


@pytest.fixture(scope="session")
def small_model_image(
    docker_engine: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmallModel]:
    """A tiny regression model's image, built for real once per session.

    A token in the model code makes this session's context new, so the build runs (its
    dependency layers come from the engine's cache after the first time: seconds, not
    minutes). Its tags are removed afterwards; the layers stay for the next run.
    """
    if "small_model" in _BUILT:  # a second test module importing this fixture: same image
        yield _BUILT["small_model"]
        return
    token = uuid.uuid4().hex[:12]
    model_root = tmp_path_factory.mktemp("model")
    folder = make_regression_model(model_root / "tiny_reg", extra=f"# session {token}\n")
    project = project_snapshot(tmp_path_factory.mktemp("project"))
    built = build_image(
        folder,
        "regression",
        "scikit-learn",
        token,
        env=os.environ,
        base_image=base_image,
        client=docker_engine,
        log=lambda line: None,
        project_root=project,
    )
    _BUILT["small_model"] = SmallModel(folder, built, project)
    yield _BUILT["small_model"]
    del _BUILT["small_model"]
    for image in docker_engine.images.list(name="tiny_reg"):
        for tag in image.tags:
            if tag.startswith("tiny_reg:"):
                docker_engine.images.remove(tag, noprune=True)
