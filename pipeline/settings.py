"""Run settings for ``mlops tune``, resolved in layers, later layers winning.

1. the model's ``model.yaml`` (its ``tune:`` section, and ``goal.target``),
2. the repository's ``mlops.yaml`` (its ``tune:`` section; found by walking up from the model),
3. environment variables ``MLOPS_<SETTING>`` (``MLOPS_MAX_TRIALS=20``),
4. command-line flags.

A value of the wrong type is an ``MlopsError`` naming the layer and the setting.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import MlopsError
from pipeline.feature_cache import DEFAULT_DIR

REPO_CONFIG = "mlops.yaml"
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")


@dataclass
class TuneSettings:
    """Everything that steers one search (not the model's own options)."""

    goal: float | None = None  # overrides model.yaml's goal.target
    goal_confidence: bool = False  # stop only when the Wilson lower bound reaches the goal
    max_trials: int = 40  # finished (complete or pruned) trials in the study
    timeout: float | None = 1800.0  # seconds for this invocation; None: no limit
    study_name: str | None = None  # default: model name + a hash of its data/params/space
    storage: str | None = None  # default: sqlite:///<runs_dir>/optuna.db
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
    experiment: str | None = None  # default: the model's name
    seed: int = 42
    pruner: str = "median"
    runs_dir: Path = Path("mlops-runs")
    cache_dir: Path = DEFAULT_DIR
    weights: str | None = None  # overrides params.weights
    register: bool = True  # register the best model when the goal is met
    max_retry: int = 3  # retries of a trial whose process died
    heartbeat_interval: int = 2
    grace_period: int = 10
    overrides: list[str] = field(default_factory=list)  # "data.source=lfw"

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL, defaulting to SQLite in the run folder."""
        return self.storage or f"sqlite:///{(self.runs_dir / 'optuna.db').resolve()}"

    @property
    def tracking(self) -> str:
        """The MLflow tracking URI."""
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns/mlflow.db"


_FIELDS = {f.name: f for f in dataclasses.fields(TuneSettings)}


def _coerce(name: str, value: Any, where: str) -> Any:
    """Turn a YAML or environment value into the setting's type."""
    kind = str(_FIELDS[name].type)
    if value is None:
        return None
    # "none" clears a numeric setting (--timeout none); for text settings it is a value (--weights none).
    nullish = ("", "null") if kind.startswith("str") else ("", "none", "null")
    if isinstance(value, str) and value.lower() in nullish and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("Path"):
            return Path(value).expanduser()
        if kind.startswith("list"):
            return list(value) if isinstance(value, list) else [str(value)]
        return str(value)
    except (TypeError, ValueError):
        raise MlopsError(f"{where}: setting '{name}' = {value!r} is not a valid {kind.split(' ')[0]}") from None


def _apply(settings: dict[str, Any], layer: dict[str, Any], where: str) -> None:
    for name, value in layer.items():
        if name not in _FIELDS:
            allowed = ", ".join(sorted(_FIELDS))
            raise MlopsError(f"{where}: unknown setting '{name}'; allowed: {allowed}")
        settings[name] = _coerce(name, value, where)


def find_repo_config(start: Path) -> Path | None:
    """The nearest ``mlops.yaml`` above ``start`` (or ``$MLOPS_CONFIG``), stopping at a Git root."""
    if os.environ.get("MLOPS_CONFIG"):
        return Path(os.environ["MLOPS_CONFIG"])
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / REPO_CONFIG).is_file():
            return folder / REPO_CONFIG
        if (folder / ".git").exists():
            return None
    return None


def read_repo_config(path: Path | None) -> dict[str, Any]:
    """The whole repository config (sections ``tune:``, ``notify:``), or ``{}``."""
    if path is None:
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise MlopsError(f"{path}: cannot be read as YAML ({error})") from None
    if not isinstance(doc, dict):
        raise MlopsError(f"{path}: must be a mapping with sections like 'tune:' and 'notify:'")
    return doc


def resolve_settings(
    manifest_tune: dict[str, Any],
    repo_config: dict[str, Any],
    flags: dict[str, Any],
    repo_config_path: Path | None = None,
    environ: dict[str, str] | None = None,
) -> TuneSettings:
    """Merge the four layers; ``flags`` holds only options the user actually passed."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    _apply(values, manifest_tune, "model.yaml tune")
    _apply(values, repo_config.get("tune") or {}, f"{repo_config_path or REPO_CONFIG} tune")
    env_layer = {name: environ[f"MLOPS_{name.upper()}"] for name in _FIELDS if f"MLOPS_{name.upper()}" in environ}
    for name, value in env_layer.items():
        values[name] = _coerce(name, value, f"environment MLOPS_{name.upper()}")
    _apply(values, {k: v for k, v in flags.items() if v is not None}, "command line")
    settings = TuneSettings(**values)
    if settings.pruner not in PRUNERS:
        raise MlopsError(f"setting pruner={settings.pruner!r} is unknown; use one of {', '.join(PRUNERS)}")
    if settings.max_trials < 1:
        raise MlopsError(f"setting max_trials={settings.max_trials}: must be at least 1")
    return settings


def apply_overrides(manifest: Any, settings: TuneSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's data and params options with ``--weights`` and ``--set a.b=v`` applied."""
    data, params = dict(manifest.data), dict(manifest.params)
    if settings.weights is not None and "weights" in params:  # only models that take weights
        params["weights"] = settings.weights
    for item in settings.overrides:
        key, sep, raw = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in ("data", "params") or not name:
            raise MlopsError(f"--set {item!r}: use --set data.NAME=VALUE or --set params.NAME=VALUE")
        (data if section == "data" else params)[name] = yaml.safe_load(raw)
    return data, params
