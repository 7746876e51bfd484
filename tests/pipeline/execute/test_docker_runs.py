"""Real runs in real containers (markers ``docker`` and ``slow``).

The face model tunes inside its own image and its MLflow runs are read back on the host; a
push that changes the regression model makes ``mlops run --runner docker`` build a
regression image and tune the model in it, leaving the unchanged model alone.

The images are built from the engine's layer cache after the first time: the first face
build installs TensorFlow (minutes); later ones rebuild only the last layers or nothing.
Each test removes the tags it made and keeps the layers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.build.images import build_image
from pipeline.execute.runners import DockerRunner
from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT, SHARED
from tests.pipeline.docker_fixtures import (
    project_snapshot,
)
from tests.pipeline.test_orchestrate import make_repo, touch

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CONTAINER_UID = 1000


def _untag(client: Any, tag: str) -> None:
    """Remove a tag the test made; the layers stay for the next build."""
    with contextlib.suppress(Exception):  # already gone
        client.images.remove(tag, noprune=True)


def test_face_model_tunes_in_its_container_and_the_host_sees_its_runs(
    docker_engine: Any,  # noqa: F811
    base_image: str,  # noqa: F811
    offline_env: dict[str, str],
    tmp_path: Path,
) -> None:
    project = project_snapshot(tmp_path / "project")  # the work tree may change meanwhile
    commit = f"test{uuid.uuid4().hex[:8]}"
    built = build_image(
        ROOT / "models" / "face_vgg16",
        "cnn",
        "keras",
        commit,
        env=os.environ,
        base_image=base_image,
        client=docker_engine,
        log=lambda line: None,
        project_root=project,
    )
    try:
        labels = docker_engine.images.get(built.tag).labels
        assert labels["io.mlops.kind"] == "cnn" and labels["io.mlops.framework"] == "keras"

        work = tmp_path / "work"
        work.mkdir()
        work.chmod(0o755)  # pytest's folders are 0700; the container's user must enter it
        out = io.StringIO()
        runner = DockerRunner(
            built.tag,
            client=docker_engine,
            out=out,
            host_env=os.environ,
            # Written by the container: created and given to its user.
            state_dirs=[work / "mlruns", work / "mlops-runs", work / "cache"],
            # The weights file, and the targets of SCIKIT_LEARN_DATA's symlinks: read-only.
            data_dirs=[SHARED],
        )
        tracking = f"sqlite:///{work}/mlruns/mlflow.db"
        code = runner.run(
            [
                "tune",
                runner.model_path(ROOT / "models" / "face_vgg16"),
                "--weights",
                str(FACE_WEIGHTS),
                "--set",
                "data.input_size=32",
                "--max-trials",
                "3",
                "--goal",
                "0.01",  # met by any trial: the run ends with exit 0 and registers
                "--tracking-uri",
                tracking,
                "--runs-dir",
                f"{work}/mlops-runs",
                "--cache-dir",
                f"{work}/cache",
            ],
            env={**offline_env, "TF_CPP_MIN_LOG_LEVEL": "3"},
            workdir=work,
        )
        output = out.getvalue()
        assert code == 0, output
        assert runner.model_path(ROOT / "models" / "face_vgg16") == "/app/models/face_vgg16"

        summary_file = work / "mlops-runs" / "face_vgg16" / "summary.json"
        assert summary_file.stat().st_uid == CONTAINER_UID  # written inside the container
        summary = json.loads(summary_file.read_text())
        assert summary["exit_code"] == code
        assert 1 <= summary["trials_total"] <= 3
        assert summary["trials_complete"] >= 1, output
        assert summary["tracking_uri"] == tracking

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking)
        parent = client.get_run(summary["mlflow_parent_run_id"])
        assert parent.info.status == "FINISHED"
        children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert len(children) == summary["trials_total"], [c.info.run_name for c in children]
        assert all(c.info.status != "RUNNING" for c in children)
        best = next(c for c in children if c.info.run_id == summary["best"]["mlflow_run_id"])
        assert best.data.metrics["val_accuracy"] == pytest.approx(summary["best"]["value"])
        assert summary["goal_met"] and summary["registered_model"].startswith("face_vgg16/")
    finally:
        _untag(docker_engine, built.tag)


def _run_push(
    repo_dir: Path, before: str, after: str, env: dict[str, str], goal: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *MLOPS,
            "run",
            "--before",
            before,
            "--after",
            after,
            "--runner",
            "docker",
            "--max-trials",
            "3",
            "--goal",
            goal,
            "--no-notify",
            "--restart-backoff",
            "0.5",
        ],
        cwd=repo_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def _push_env(offline_env: dict[str, str], base_image: str) -> dict[str, str]:  # noqa: F811
    env = {**os.environ, **offline_env, "MLOPS_BASE_IMAGE": base_image, "PYTHONUNBUFFERED": "1"}
    # As scripts/offline-env.sh exports it: the container mounts it read-only, so the
    # symlinks in SCIKIT_LEARN_DATA resolve there too.
    env["MLOPS_SHARED_DATA"] = str(SHARED)
    for name in ("MLFLOW_TRACKING_URI", "MLOPS_TRACKING_URI", "MLOPS_RUNS_DIR", "MLOPS_CACHE_DIR"):
        env.pop(name, None)  # the run's own defaults, inside the repository
    return env


@pytest.mark.parametrize(
    ("changed", "unchanged", "kind", "framework", "goal"),
    [  # goals any trial meets: val_rmse <= 1000, val_accuracy >= 0.01; the push exits 0
        ("diabetes_regression", "digits_mlp", "regression", "scikit-learn", "1000"),
        ("digits_mlp", "diabetes_regression", "ann", "keras", "0.01"),
    ],
)
def test_push_tunes_the_changed_model_in_its_kind_of_container(
    docker_engine: Any,  # noqa: F811
    base_image: str,  # noqa: F811
    offline_env: dict[str, str],
    tmp_path: Path,
    changed: str,
    unchanged: str,
    kind: str,
    framework: str,
    goal: str,
) -> None:
    repo, first = make_repo(tmp_path, ["diabetes_regression", "digits_mlp"])
    second = touch(repo, changed)
    tag = f"{changed}:{second[:12]}"
    shared_owner = SHARED.stat().st_uid
    try:
        result = _run_push(Path(repo.working_dir), first, second, _push_env(offline_env, base_image), goal)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert f"classify: {kind} ({framework})" in result.stdout

        image = docker_engine.images.get(tag)  # built (or reused) and tagged at the pushed commit
        assert image.labels["io.mlops.kind"] == kind
        assert image.labels["io.mlops.framework"] == framework
        assert image.labels["io.mlops.model"] == changed

        runs = Path(repo.working_dir) / "mlops-runs"
        summary_file = runs / changed / "summary.json"
        assert summary_file.stat().st_uid == CONTAINER_UID, output  # written by the container
        summary = json.loads(summary_file.read_text())
        assert 1 <= summary["trials_total"] <= 3
        assert summary["exit_code"] == result.returncode
        assert not (runs / unchanged).exists(), output  # unchanged: not tuned
        assert not docker_engine.images.list(name=f"{unchanged}:{second[:12]}")
        assert SHARED.stat().st_uid == shared_owner  # mounted read-only, never given to the container
        markdown = (Path(repo.working_dir) / "mlops-summary.md").read_text()
        assert changed in markdown and unchanged not in markdown
    finally:
        _untag(docker_engine, tag)
