"""``model.yaml``: a model folder's manifest, read and checked at the edge.

Every mistake is an ``MlopsError`` naming the file and the key, so a typo never reaches a
study or a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.option_schema import Accepts
from pipeline.config.search_space import SearchSpace
from pipeline.config.yaml_file import load_yaml
from pipeline.errors import MlopsError
from pipeline.summary import GoalSpec

MANIFEST = "model.yaml"
KINDS = ("cnn", "ann", "regression")
_TOP_KEYS = {
    "name",
    "kind",
    "framework",
    "entrypoint",
    "description",
    "goal",
    "tune",
    "data",
    "params",
    "search_space",
    "requirements",
    "metrics",
    "accepts",
}
_GOAL_KEYS = {"metric", "direction", "target", "confidence"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class ModelManifest:
    """A parsed ``model.yaml``.

    Attributes:
        path: the manifest file.
        name: the model's name (registered-model name, image name).
        kind: ``cnn``, ``ann`` or ``regression`` when the manifest overrides classification.
        framework: framework override (``keras``, ``pytorch``, ``scikit-learn``, ...).
        entrypoint: the Python file exposing ``prepare``, ``train`` and ``evaluate``.
        goal: the metric, its direction and the target.
        tune: defaults for run settings (``max_trials``, ``timeout``, ``seed``, ...).
        data: data options, passed to the model's ``prepare`` untouched.
        params: fixed model options (weights, input size, ...), passed untouched.
        search_space: the hyperparameters Optuna searches.
        requirements: extra pip requirements the model's container needs.
        metrics: the goal metrics the model can be judged on: ``train`` reports them every
            epoch and returns the goal's one as its value. Empty: not declared, not checked.
        accepts: the ``data``/``params`` options and hyperparameters the model reads, with
            types and allowed values (``pipeline.config.option_schema``).
    """

    path: Path
    name: str
    goal: GoalSpec
    search_space: SearchSpace
    kind: str | None = None
    framework: str | None = None
    entrypoint: str = "model.py"
    description: str = ""
    tune: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    accepts: Accepts = field(default_factory=Accepts)

    @property
    def folder(self) -> Path:
        """The model folder holding the manifest."""
        return self.path.parent

    @property
    def entry(self) -> Path:
        """The entry file, resolved (symlinks too) and checked to lie inside the model folder.

        Raises:
            MlopsError: naming ``model.yaml`` and ``entrypoint`` when it points outside.
        """
        return _entry_inside(self.path, self.entrypoint)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MlopsError(f"{where} must be a mapping (key: value lines), got {type(value).__name__}")
    return value


def _text(doc: dict[str, Any], key: str, path: Path, default: str | None) -> str | None:
    value = doc.get(key, default)
    if value is not None and not isinstance(value, str):
        raise MlopsError(f"{path}: {key} must be a string, not {value!r}")
    return value


def _entry_inside(path: Path, entrypoint: str) -> Path:
    """``entrypoint`` resolved under ``path``'s folder; the code a run imports stays in that folder."""
    folder = path.parent.resolve()
    relative = Path(entrypoint)
    if relative.is_absolute() or ".." in relative.parts:
        raise MlopsError(f"{path}: entrypoint {entrypoint!r} must be a file inside the model folder, like model.py")
    entry = (folder / relative).resolve()
    if not entry.is_relative_to(folder):
        raise MlopsError(
            f"{path}: entrypoint {entrypoint!r} is a link to {entry}, outside the model folder; "
            "put the file in the model folder"
        )
    return entry


def _metrics(raw: Any, path: Path) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw or not all(isinstance(m, str) and m for m in raw):
        raise MlopsError(f"{path}: metrics must be a list of metric names the model reports, like [val_accuracy]")
    return list(raw)


def _goal(raw: Any, path: Path) -> GoalSpec:
    goal = _mapping(raw, f"{path}: 'goal'")
    unknown = set(goal) - _GOAL_KEYS
    if unknown:
        raise MlopsError(f"{path}: unknown key 'goal.{sorted(unknown)[0]}'; allowed: {', '.join(sorted(_GOAL_KEYS))}")
    direction = goal.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise MlopsError(f"{path}: goal.direction must be 'maximize' or 'minimize', not {direction!r}")
    target = goal.get("target", 0.9)
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        raise MlopsError(f"{path}: goal.target must be a number, not {target!r}")
    metric, confidence = goal.get("metric", "val_accuracy"), goal.get("confidence", False)
    if not isinstance(metric, str) or not metric:
        raise MlopsError(f"{path}: goal.metric must be a metric name like val_accuracy, not {metric!r}")
    if not isinstance(confidence, bool):
        raise MlopsError(f"{path}: goal.confidence must be true or false, not {confidence!r}")
    spec = GoalSpec(metric=metric, direction=direction, target=float(target), confidence=confidence)
    problem = spec.problem()
    if problem:
        raise MlopsError(f"{path}: goal: {problem}")
    return spec


def parse_manifest(raw: Any, path: Path) -> ModelManifest:
    """Check and convert a loaded ``model.yaml`` document.

    Args:
        raw: the YAML document.
        path: where it came from (for messages and the model folder).

    Raises:
        MlopsError: on any unknown key, wrong type or missing field, naming it.
    """
    doc = _mapping(raw, str(path))
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise MlopsError(f"{path}: unknown key '{sorted(unknown)[0]}'; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = doc.get("name") or path.parent.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise MlopsError(f"{path}: name {name!r} must be lowercase letters, digits, '_', '-' or '.'")
    kind = doc.get("kind")
    if kind is not None and kind not in KINDS:
        raise MlopsError(f"{path}: kind {kind!r} is unknown; use one of {', '.join(KINDS)} or omit it")
    requirements = doc.get("requirements") or []
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise MlopsError(f"{path}: requirements must be a list of pip requirement strings")
    entrypoint = _text(doc, "entrypoint", path, "model.py") or "model.py"
    _entry_inside(path, entrypoint)
    manifest = ModelManifest(
        path=path,
        name=name,
        kind=kind,
        framework=_text(doc, "framework", path, None),
        entrypoint=entrypoint,
        description=_text(doc, "description", path, "") or "",
        goal=_goal(doc.get("goal"), path),
        tune=_mapping(doc.get("tune"), f"{path}: 'tune'"),
        data=_mapping(doc.get("data"), f"{path}: 'data'"),
        params=_mapping(doc.get("params"), f"{path}: 'params'"),
        search_space=SearchSpace.parse(doc.get("search_space"), f"{path}: search_space"),
        requirements=list(requirements),
        metrics=_metrics(doc.get("metrics"), path),
        accepts=Accepts.parse(doc.get("accepts"), f"{path}: accepts"),
    )
    _check_contract(manifest)
    return manifest


def _check_contract(manifest: ModelManifest) -> None:
    """The manifest's own goal, options and search space against what the model declares."""
    path = manifest.path
    if manifest.metrics and manifest.goal.metric not in manifest.metrics:
        raise MlopsError(
            f"{path}: goal.metric {manifest.goal.metric!r} is not a metric this model reports; "
            f"use one of {', '.join(manifest.metrics)}"
        )
    manifest.accepts.check("data", manifest.data, str(path))
    manifest.accepts.check("params", manifest.params, str(path))
    manifest.search_space.check_against(manifest.accepts.search_space, f"{path}: search_space")


def load_manifest(model_dir: Path) -> ModelManifest:
    """Read ``<model_dir>/model.yaml``.

    Raises:
        MlopsError: when the folder or file is missing, or the YAML is malformed.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MlopsError(f"{model_dir}: no such model folder; pass a folder under models/")
    path = model_dir / MANIFEST
    if not path.is_file():
        raise MlopsError(f"{path}: missing; every model folder needs a {MANIFEST} (see README)")
    return parse_manifest(load_yaml(path), path)
