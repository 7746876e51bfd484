"""The build stage: a model's image, built with the Docker SDK.

``build_image`` assembles a build context in a temporary folder (see ``pipeline.build.dockerfiles``,
which renders the Dockerfile and writes the context), builds it with the Docker SDK and tags
it ``<model>:<commit>``. An image built from the same context is found by a content hash kept
in its labels and tagged again instead of rebuilt.

Example::

    from pipeline.build.images import build_image, docker_available

    env = Environment.from_os()  # at the edge: the CLI does this once
    if docker_available(env):
        built = build_image(Path("models/face_vgg16"), "cnn", "keras", commit="3f2a9c1", env=env)
        print(built.tag, "reused" if built.reused else "built")
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.build.dockerfiles import PROJECT_ROOT, assemble_context, base_image_from_settings, normalize_framework
from pipeline.config.environment import Environment
from pipeline.config.manifest import load_manifest
from pipeline.errors import MlopsError

HASH_LABEL = "io.mlops.context-hash"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # pip colours its errors


@dataclass(frozen=True)
class BuiltImage:
    """The result of ``build_image``.

    Attributes:
        tag: ``<model>:<commit>`` (or the tag asked for).
        image_id: the engine's image id.
        context_hash: hash of everything the image is built from.
        reused: True when an image with that hash existed and was tagged, not built.
    """

    tag: str
    image_id: str
    context_hash: str
    reused: bool


def image_tag(model_name: str, commit: str) -> str:
    """``<model>:<commit>``, with a full SHA shortened to 12 characters as git would show it."""
    short = commit[:12] if len(commit) == 40 else commit
    return f"{model_name}:{short}"


def docker_client(env: Mapping[str, str], timeout: int | None = 600) -> Any:
    """A Docker SDK client for the engine ``env`` names (``DOCKER_HOST`` or the default socket).

    Args:
        env: the environment snapshot; the SDK reads its ``DOCKER_*`` variables from it.
        timeout: seconds an API call may wait for an answer; None waits for ever.

    Raises:
        MlopsError: when no engine answers.
    """
    import docker  # here, not at the top: `mlops --help` should not pay for it

    try:
        client = docker.from_env(timeout=timeout, environment=dict(env))
        client.ping()
    except Exception:
        where = Environment(env).docker_host
        raise MlopsError(
            f"no Docker engine reachable at {where}; start dockerd (see README) or pass --runner local"
        ) from None
    return client


def docker_available(env: Mapping[str, str]) -> bool:
    """True when the engine ``env`` names answers a ping: the caller may then use the docker runner."""
    try:
        docker_client(env, timeout=5).close()
    except MlopsError:
        return False
    return True


def build_image(
    model_dir: Path,
    kind: str,
    framework: str | None,
    commit: str,
    *,
    env: Mapping[str, str],
    base_image: str | None = None,
    tag: str | None = None,
    client: Any = None,
    log: Callable[[str], None] = print,
    project_root: Path = PROJECT_ROOT,
) -> BuiltImage:
    """Build (or reuse) the model's image and tag it.

    Args:
        model_dir: the model folder (holding model.yaml).
        kind: ``cnn``, ``ann`` or ``regression``.
        framework: a ``FRAMEWORKS`` key or alias; None takes the kind's default.
        commit: the commit the image is built at (label and tag).
        env: the environment snapshot: the engine to connect to (when ``client`` is None)
            and the package-index settings (``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``)
            forwarded to the build. They may carry credentials
            (https://user:token@host/simple): the Dockerfile reads them only in its builder
            stage, whose layers the image does not keep. (BuildKit secrets would be the usual
            way, but the Docker SDK builds with the legacy builder, which has no secrets.)
        base_image: the ``FROM`` image; see ``base_image_from_settings``.
        tag: the tag to give the image instead of ``<model>:<commit>``.
        client: a Docker SDK client; None connects from the environment.
        log: prints one progress line (the build's output streams through it too).
        project_root: the checkout whose ``pipeline/`` and pyproject.toml go in.

    Raises:
        MlopsError: no engine reachable, a bad model folder, or a failed build (with the
            failing step's last log lines).
    """
    model_dir = Path(model_dir)
    client = client or docker_client(env)
    name = load_manifest(model_dir).name
    tag = tag or image_tag(name, commit)
    with tempfile.TemporaryDirectory(prefix="mlops-build-") as tmp:
        context = Path(tmp)
        digest = assemble_context(context, model_dir, kind, framework, base_image, project_root)
        base = base_image_from_settings(base_image)
        # A base image retagged with new content changes what the image is built from.
        digest = hashlib.sha256(f"{digest}:{_local_image_id(client, base)}".encode()).hexdigest()
        found = client.images.list(filters={"label": f"{HASH_LABEL}={digest}"})
        if found:
            found[0].tag(tag)
            log(f"reusing image {found[0].short_id} for {tag}: nothing it is built from changed")
            return BuiltImage(tag, found[0].id, digest, reused=True)
        log(f"building {tag} from {base} ({kind}, {normalize_framework(framework, kind)})")
        buildargs = {"MLOPS_COMMIT": commit, **Environment(env).pip_index_settings()}  # unset stays unset
        image_id = _stream_build(client, context, tag, buildargs, digest, log)
    return BuiltImage(tag, image_id, digest, reused=False)


def _local_image_id(client: Any, image: str) -> str:
    try:
        return str(client.images.get(image).id)
    except Exception:  # not pulled yet: the build pulls or fails with its own message
        return "absent"


def _stream_build(
    client: Any, context: Path, tag: str, buildargs: dict[str, str], digest: str, log: Callable[[str], None]
) -> str:
    """Run the build through the low-level API so its output streams as it comes."""
    tail: list[str] = []
    image_id = ""
    try:
        chunks = client.api.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs,
            labels={HASH_LABEL: digest},
            network_mode="host",  # dockerd may run with --bridge=none: no other network
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in chunks:
            if "error" in chunk:
                raise MlopsError(_build_failure(tag, tail, chunk["error"]))
            text = chunk.get("stream", "")
            for line in text.splitlines():
                if line.strip():
                    log(line.rstrip())
                    tail = (tail + [line.rstrip()])[-15:]
            image_id = chunk.get("aux", {}).get("ID", image_id)
    except MlopsError:
        raise
    except Exception as error:  # the API refused the build (bad base image name, ...)
        raise MlopsError(_build_failure(tag, tail, str(error))) from None
    return image_id or str(client.images.get(tag).id)


def _build_failure(tag: str, tail: list[str], reason: str) -> str:
    """One line: the engine's reason, then the failing step and what it printed."""
    lines = [_ANSI.sub("", line).strip() for line in tail]
    steps = [i for i, line in enumerate(lines) if line.startswith("Step ")]
    lines = lines[steps[-1] :] if steps else lines
    kept = [line for line in lines if line and not line.startswith(("--->", "Removing intermediate container"))]
    return f"building image {tag} failed: {reason.strip()}; last build output: " + " | ".join(kept[-8:])
