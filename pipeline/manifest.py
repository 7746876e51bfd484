"""``model.yaml``: a model folder's manifest, read and checked at the edge.

Every mistake is an ``MlopsError`` naming the file and the key, so a typo never reaches a
study or a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import MlopsError
from pipeline.search_space import SearchSpace
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

    @property
    def folder(self) -> Path:
        """The model folder holding the manifest."""
        return self.path.parent


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MlopsError(f"{where} must be a mapping (key: value lines), got {type(value).__name__}")
    return value


def _goal(raw: Any, path: Path) -> GoalSpec:
    goal = _mapping(raw, f"{path}: 'goal'")
    unknown = set(goal) - _GOAL_KEYS
    if unknown:
        raise MlopsError(f"{path}: unknown key 'goal.{sorted(unknown)[0]}'; allowed: {', '.join(sorted(_GOAL_KEYS))}")
    direction = goal.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise MlopsError(f"{path}: goal.direction must be 'maximize' or 'minimize', not {direction!r}")
    try:
        target = float(goal.get("target", 0.9))
    except (TypeError, ValueError):
        raise MlopsError(f"{path}: goal.target must be a number, not {goal.get('target')!r}") from None
    return GoalSpec(
        metric=str(goal.get("metric", "val_accuracy")),
        direction=direction,
        target=target,
        confidence=bool(goal.get("confidence", False)),
    )


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
    return ModelManifest(
        path=path,
        name=name,
        kind=kind,
        framework=doc.get("framework"),
        entrypoint=str(doc.get("entrypoint", "model.py")),
        description=str(doc.get("description", "")),
        goal=_goal(doc.get("goal"), path),
        tune=_mapping(doc.get("tune"), f"{path}: 'tune'"),
        data=_mapping(doc.get("data"), f"{path}: 'data'"),
        params=_mapping(doc.get("params"), f"{path}: 'params'"),
        search_space=SearchSpace.parse(doc.get("search_space"), f"{path}: search_space"),
        requirements=list(requirements),
    )


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
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MlopsError(f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})") from None
    return parse_manifest(raw, path)
