"""Rendering a model's Dockerfile and assembling its build context.

``render_dockerfile`` fills ``dockerfiles/<kind>.Dockerfile.j2`` for a kind and framework;
``assemble_context`` writes a complete build context into a folder (the Dockerfile, the
pipeline's code and metadata, the model folder) and returns its content hash. None of it
needs a Docker engine, so it lives apart from ``pipeline.build.images``, which talks to the
engine: ``mlops build --dry-run`` and the template tests use this module alone.

Example::

    from pipeline.build.dockerfiles import render_dockerfile

    print(render_dockerfile("cnn", "keras", model_name="face_vgg16"))
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from pipeline.config.manifest import KINDS, load_manifest
from pipeline.errors import MlopsError
from pipeline.sdk.feature_cache import file_digest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = PROJECT_ROOT / "dockerfiles"
# python:3.11-slim (Debian bookworm) pinned by digest so a user's build is reproducible. No
# registry is reachable where this was written, so the digest could not be re-checked here:
# refresh it with `docker buildx imagetools inspect python:3.11-slim`.
PYTHON_SLIM_DIGEST = "sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7"
DEFAULT_BASE_IMAGE = f"python:3.11-slim@{PYTHON_SLIM_DIGEST}"
MODEL_DIR_IN_IMAGE = "/app/models"


@dataclass(frozen=True)
class FrameworkSpec:
    """What the framework layer of an image installs.

    Attributes:
        packages: pinned pip requirements.
        pip_args: extra pip options (an index holding CPU-only wheels).
        env: environment variables the framework reads.
    """

    packages: tuple[str, ...]
    pip_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


FRAMEWORKS: dict[str, FrameworkSpec] = {
    "keras": FrameworkSpec(
        ("tensorflow-cpu==2.21.0", "keras==3.15.1"),
        env=(("KERAS_BACKEND", "tensorflow"), ("TF_CPP_MIN_LOG_LEVEL", "2")),
    ),
    # PyPI's Linux torch wheels pull in the CUDA libraries (GBs); this index has CPU builds.
    "pytorch": FrameworkSpec(
        ("torch==2.13.0",), pip_args=("--extra-index-url", "https://download.pytorch.org/whl/cpu")
    ),
    "scikit-learn": FrameworkSpec(("scikit-learn==1.9.1",)),
    "statsmodels": FrameworkSpec(("statsmodels==0.15.0",)),
}
_ALIASES = {
    "tensorflow": "keras",
    "tf.keras": "keras",
    "torch": "pytorch",
    "sklearn": "scikit-learn",
}
_DEFAULT_FRAMEWORK = {"cnn": "keras", "ann": "keras", "regression": "scikit-learn"}
# Frameworks too large to install into an image that does not use them.
_HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "torch"}
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints")


def normalize_framework(framework: str | None, kind: str) -> str:
    """Map a framework name (or None, the kind's default) to a key of ``FRAMEWORKS``.

    Raises:
        MlopsError: for an unknown kind or framework, naming the allowed ones.
    """
    if kind not in KINDS:
        raise MlopsError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    name = (framework or _DEFAULT_FRAMEWORK[kind]).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in FRAMEWORKS:
        raise MlopsError(
            f"unknown framework {framework!r}; set model.yaml 'framework' to one of {', '.join(FRAMEWORKS)}"
        )
    return name


def base_image_from_settings(base_image: str | None = None) -> str:
    """The base image: the argument, else the pinned default.

    The CLI fills the argument from ``--base-image`` or ``$MLOPS_BASE_IMAGE``
    (``pipeline.config.environment.BASE_IMAGE``).
    """
    return base_image or DEFAULT_BASE_IMAGE


def render_dockerfile(
    kind: str,
    framework: str | None,
    *,
    model_name: str = "model",
    base_image: str | None = None,
    model_requirements: bool = False,
) -> str:
    """Render ``dockerfiles/<kind>.Dockerfile.j2``.

    Args:
        kind: ``cnn``, ``ann`` or ``regression``.
        framework: a ``FRAMEWORKS`` key or alias; None takes the kind's default.
        model_name: names the model folder in the image and the labels.
        base_image: the ``FROM`` image; see ``base_image_from_settings``.
        model_requirements: whether the context holds ``requirements-model.txt``.

    Returns:
        The Dockerfile text. The commit is not in it: it is the ``MLOPS_COMMIT`` build arg.
    """
    framework = normalize_framework(framework, kind)
    spec = FRAMEWORKS[framework]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(DOCKERFILES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # a Dockerfile, not HTML
    )
    try:
        template = env.get_template(f"{kind}.Dockerfile.j2")
    except jinja2.TemplateNotFound:
        raise MlopsError(f"{DOCKERFILES}/{kind}.Dockerfile.j2: missing; reinstall mlops") from None
    return template.render(
        kind=kind,
        framework=framework,
        model_name=model_name,
        model_dir=f"{MODEL_DIR_IN_IMAGE}/{model_name}",
        base_image=base_image_from_settings(base_image),
        framework_packages=spec.packages,
        framework_pip_args=spec.pip_args,
        framework_env=spec.env,
        model_requirements=model_requirements,
    )


def project_requirements(framework: str, project_root: Path = PROJECT_ROOT) -> list[str]:
    """The pipeline's pinned dependencies from pyproject.toml, less unused big frameworks."""
    pyproject = project_root / "pyproject.toml"
    if not pyproject.is_file():
        raise MlopsError(f"{pyproject}: missing; `mlops build` needs the project's source checkout")
    deps: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    keep = {p.split("==")[0].lower() for p in FRAMEWORKS[framework].packages}
    return [d for d in deps if _dist_name(d) not in _HEAVY - keep]


def _dist_name(requirement: str) -> str:
    for stop in "=<>!~[;@ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def model_requirements(model_dir: Path, listed: Iterable[str] = ()) -> list[str]:
    """``model.yaml``'s ``requirements`` then the lines of the folder's requirements.txt."""
    lines = list(listed)
    extra = model_dir / "requirements.txt"
    if extra.is_file():
        for line in extra.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                lines.append(line)
    return lines


def assemble_context(
    dest: Path,
    model_dir: Path,
    kind: str,
    framework: str | None,
    base_image: str | None = None,
    project_root: Path = PROJECT_ROOT,
) -> str:
    """Write a complete build context into ``dest`` and return its content hash.

    Args:
        dest: an empty folder for the context.
        model_dir: the model folder (holding model.yaml).
        kind: ``cnn``, ``ann`` or ``regression``.
        framework: a ``FRAMEWORKS`` key or alias; None takes the kind's default.
        base_image: the ``FROM`` image; see ``base_image_from_settings``.
        project_root: the checkout whose ``pipeline/`` and pyproject.toml go in.

    Raises:
        MlopsError: when model.yaml is invalid, or the kind or framework is unknown.
    """
    manifest = load_manifest(model_dir)
    framework = normalize_framework(framework, kind)
    extra = model_requirements(model_dir, manifest.requirements)
    dest.mkdir(parents=True, exist_ok=True)
    dockerfile = render_dockerfile(
        kind,
        framework,
        model_name=manifest.name,
        base_image=base_image,
        model_requirements=bool(extra),
    )
    (dest / "Dockerfile").write_text(dockerfile)
    project = project_requirements(framework, project_root)
    (dest / "requirements-project.txt").write_text("\n".join(project) + "\n")
    if extra:
        (dest / "requirements-model.txt").write_text("\n".join(extra) + "\n")
    shutil.copytree(project_root / "pipeline", dest / "pipeline", ignore=_SKIP)
    shutil.copy2(project_root / "pyproject.toml", dest / "pyproject.toml")
    readme = project_root / "README.md"
    if readme.is_file():
        shutil.copy2(readme, dest / "README.md")
    else:  # pyproject names it as the readme; a missing one fails the package build
        (dest / "README.md").write_text("mlops pipeline\n")
    shutil.copytree(model_dir, dest / "model", ignore=_SKIP)
    return context_hash(dest)


def context_hash(context: Path) -> str:
    """SHA-256 over every file's relative path, executable bit and bytes (not its mtime)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(bytes.fromhex(file_digest(path)))
    return digest.hexdigest()
