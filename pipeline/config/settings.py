"""Run settings for ``mlops tune``, resolved in layers, later layers winning.

1. the model's ``model.yaml`` (its ``tune:`` section, and ``goal.target``),
2. the repository's ``mlops.yaml`` (its ``tune:`` section; found by walking up from the model),
3. environment variables ``MLOPS_<SETTING>`` (``MLOPS_MAX_TRIALS=20``),
4. command-line flags.

The environment is the ``Environment`` snapshot the CLI took (``pipeline.config.environment``):
it also gives the defaults that depend on the machine, ``tracking_uri`` from
``$MLFLOW_TRACKING_URI``, ``cache_dir`` under ``$XDG_CACHE_HOME`` and ``commit`` from the CI
server's ``$GIT_COMMIT`` / ``$GITHUB_SHA``. Nothing here reads ``os.environ``.

A value of the wrong type or out of range is an ``MlopsError`` naming the layer and the
setting; ``check_settings`` also proves the run and cache folders can be written, before
any data is loaded or any run opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.environment import CI_COMMIT_NAMES, MLFLOW_TRACKING_URI, Environment
from pipeline.config.yaml_file import load_yaml
from pipeline.errors import MlopsError
from pipeline.sdk.checkpoints import DEFAULT_CHECKPOINT_SECONDS
from pipeline.sdk.feature_cache import DEFAULT_SHARD_SIZE, default_dir

REPO_CONFIG = "mlops.yaml"
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


@dataclass(frozen=True)
class StagedSpec:
    """A staged (cost-aware) search: cheap values of one int parameter first (``tune.staged``).

    Attributes:
        param: the search space's int parameter whose cap rises stage by stage, from its
            ``low`` (cheapest) to its ``high``.
        stall_trials: finished (complete or pruned) trials in a row without a new best value that open the next stage.
        seed_with: values that replace the best trial's in a stage's seeded trial: parameters
            the cheap stage never used (a fine-tuning learning rate drawn for a head-only
            trial is noise, not a choice), set to a value known to work.
    """

    param: str
    stall_trials: int = 6
    seed_with: dict[str, Any] = field(default_factory=dict)


STAGED_EXAMPLE = "staged: {param: fine_tune_blocks, stall_trials: 6, seed_with: {fine_tune_learning_rate: 1.0e-5}}"
FIRST_TRIALS_EXAMPLE = "first_trials: [{n_layers: 0, optimizer: adam, learning_rate: 0.003}]"


@dataclass
class TuneSettings:
    """Everything that steers one search (not the model's own options)."""

    goal: float | None = None  # overrides model.yaml's goal.target
    goal_confidence: bool = False  # stop only when the Wilson lower bound reaches the goal
    max_trials: int = 40  # finished (complete or pruned) trials in the study
    timeout: float | None = 1800.0  # seconds for this invocation; None: no limit
    study_name: str | None = None  # default: model name + a hash of its data/params/space
    storage: str | None = None  # default: sqlite:///<runs_dir>/optuna.db
    tracking_uri: str | None = None  # resolve_settings: $MLFLOW_TRACKING_URI; else sqlite:///mlruns/mlflow.db
    experiment: str | None = None  # default: the model's name
    seed: int = 42
    pruner: str = "median"
    runs_dir: Path = Path("mlops-runs")
    cache_dir: Path = field(default_factory=default_dir)  # resolve_settings: under $XDG_CACHE_HOME
    weights: str | None = None  # overrides params.weights
    register: bool = True  # register the best model when the goal is met
    warm_start: bool = True  # a new study first tries earlier studies' best on the same data (tune/warm_start.py)
    # The promotion gate (pipeline/tracking/promotion.py): how much better on the test split
    # (goal metric units) a new model must be to replace the champion; or skip the comparison.
    promote_margin: float = 0.0
    force_promote: bool = False
    max_retry: int = 3  # retries of a trial whose process died
    # The least time between two checkpoint writes of a trial: the most training a kill may lose
    # (0: after every epoch).
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    heartbeat_interval: int = 2
    grace_period: int = 10
    feature_shard_size: int = DEFAULT_SHARD_SIZE  # images per shard of a resumable feature extraction
    # Processes searching the study at once: this one and workers - 1 helpers (pipeline/tune/workers.py).
    workers: int = 1
    overrides: list[str] = field(default_factory=list)  # "data.source=lfw"
    # Set by the supervisor (MLOPS_RESTARTS, MLOPS_RESTART_REASON) when it restarts a dead tune.
    restarts: int = 0
    restart_reason: str = ""
    # The commit a run records when its model folder is in no Git checkout (a container);
    # resolve_settings: the CI server's $GIT_COMMIT or $GITHUB_SHA.
    commit: str | None = None
    # Heads first, fine-tuning when heads stall (pipeline/tune/staged.py); None: one flat search.
    staged: StagedSpec | None = None
    # Parameters the first trials of a new study take, before the sampler draws (the model's
    # known-good starting points; keys left out are drawn): pipeline/tune/first_trials.py.
    first_trials: tuple[dict[str, Any], ...] = ()
    # Where each setting that was set came from ("--goal", "MLOPS_GOAL", "mlops.yaml tune.goal"),
    # so a bad value's message names the place to fix it. Not a setting itself.
    origin: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def source(self, name: str) -> str:
        """Where setting ``name`` came from, for messages; ``default`` when nobody set it."""
        return self.origin.get(name, "default")

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL, defaulting to SQLite in the run folder."""
        return self.storage or f"sqlite:///{(self.runs_dir / 'optuna.db').resolve()}"

    @property
    def tracking(self) -> str:
        """The MLflow tracking URI: the setting, else ``DEFAULT_TRACKING_URI``."""
        return self.tracking_uri or DEFAULT_TRACKING_URI


_FIELDS = {f.name: f for f in dataclasses.fields(TuneSettings) if f.name != "origin"}


def _coerce(name: str, value: Any, where: str) -> Any:
    """Turn a YAML or environment value into the setting's type."""
    kind = str(_FIELDS[name].type)
    if value is None:
        return None
    # "none" clears a numeric setting (--timeout none); for text settings it is a value (--weights none).
    nullish = ("", "null") if kind.startswith("str") else ("", "none", "null")
    if isinstance(value, str) and value.lower() in nullish and "None" in kind:
        return None
    if kind.startswith("StagedSpec"):
        return _staged(value, where)
    if kind.startswith("tuple[dict"):
        return _first_trials(value, where)
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


def _staged(value: Any, where: str) -> StagedSpec:
    """``tune.staged`` from a mapping (YAML), or from its YAML text (``MLOPS_STAGED``)."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = None
    if not isinstance(value, dict) or not isinstance(value.get("param"), str) or not value["param"]:
        raise MlopsError(f"{where}: setting 'staged' = {value!r} needs an int search parameter; use {STAGED_EXAMPLE}")
    unknown = sorted(set(value) - {"param", "stall_trials", "seed_with"})
    if unknown:
        raise MlopsError(
            f"{where}: setting 'staged' has unknown key(s) {', '.join(map(str, unknown))}; use {STAGED_EXAMPLE}"
        )
    stall = value.get("stall_trials", StagedSpec.stall_trials)
    if isinstance(stall, bool) or not isinstance(stall, int) or stall < 1:
        raise MlopsError(
            f"{where}: setting staged.stall_trials = {stall!r} must be a whole number of at least 1 "
            f"(finished trials without a new best before the next stage opens); e.g. {STAGED_EXAMPLE}"
        )
    seed_with = value.get("seed_with") or {}
    if not isinstance(seed_with, dict) or not all(isinstance(k, str) for k in seed_with):
        raise MlopsError(
            f"{where}: setting staged.seed_with = {seed_with!r} must map search parameters to values; "
            f"e.g. {STAGED_EXAMPLE}"
        )
    return StagedSpec(value["param"], stall, dict(seed_with))


def _first_trials(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """``tune.first_trials`` from a list of mappings (YAML), or from its YAML text (``MLOPS_FIRST_TRIALS``)."""
    if isinstance(value, str):
        with contextlib.suppress(yaml.YAMLError):  # not YAML: reported as the text it is
            value = yaml.safe_load(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(entry, dict) and entry and all(isinstance(key, str) for key in entry) for entry in value
    ):
        raise MlopsError(
            f"{where}: setting 'first_trials' = {value!r} must be a list of mappings of search parameters "
            f"to values; use {FIRST_TRIALS_EXAMPLE}"
        )
    return tuple(dict(entry) for entry in value)


def check_first_trials(space: Any, settings: TuneSettings) -> None:
    """Check every ``settings.first_trials`` entry against the model's search space (a ``SearchSpace``).

    Raises:
        MlopsError: naming the entry and key: not a search parameter, or a value outside its range or choices.
    """
    for index, entry in enumerate(settings.first_trials):
        space.given_params(entry, f"setting first_trials[{index}] (from {settings.source('first_trials')})")


def check_staged(space: Any, settings: TuneSettings) -> None:
    """Check ``settings.staged`` against the model's search space (a ``SearchSpace``).

    Raises:
        MlopsError: when its ``param`` is not a plain int parameter of the space.
    """
    spec = settings.staged
    if spec is None:
        return
    where = f"setting staged.param={spec.param!r} (from {settings.source('staged')})"
    param = next((p for p in space.params if p.name == spec.param), None)
    if param is None:
        names = ", ".join(p.name for p in space.params)
        raise MlopsError(
            f"{where}: the search space has no parameter {spec.param!r} (it has: {names}); "
            f"fix the name or add it to search_space as {{type: int, low: 0, high: 2}}"
        )
    if param.type != "int" or param.per_layer:
        what = f"a per-layer {param.type}" if param.per_layer else f"a {param.type}"
        raise MlopsError(
            f"{where}: {spec.param!r} is {what} parameter; staging needs a plain int one "
            f"(search_space {spec.param}: {{type: int, low: 0, high: 2}})"
        )
    for name, value in spec.seed_with.items():
        where = f"setting staged.seed_with.{name}={value!r} (from {settings.source('staged')})"
        _check_seed_value(space, name, value, spec.param, where)


def _check_seed_value(space: Any, name: str, value: Any, staged: str, where: str) -> None:
    """A ``seed_with`` value must be one the search space itself could draw (never the staged parameter's)."""
    param = next((p for p in space.params if p.name == name), None)
    if param is None or param.per_layer or name == staged:
        names = ", ".join(p.name for p in space.params if not p.per_layer and p.name != staged)
        raise MlopsError(f"{where}: not a plain parameter of the search space; use one of: {names}")
    if param.type == "categorical":
        if value not in param.choices:
            raise MlopsError(f"{where}: not one of its choices {list(param.choices)}; pick one of them")
        return
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (param.type == "int" and float(value) != int(value)):
        example = int(param.low or 0) if param.type == "int" else param.low
        raise MlopsError(f"{where}: must be a{'n int' if param.type == 'int' else ' number'}; e.g. {example}")
    if not float(param.low or 0) <= float(value) <= float(param.high or 0):
        raise MlopsError(f"{where}: outside its search range [{param.low:g}, {param.high:g}]; pick a value inside it")


def _apply(settings: dict[str, Any], origin: dict[str, str], layer: dict[str, Any], where: str, label: Any) -> None:
    for name, value in layer.items():
        if name not in _FIELDS:
            allowed = ", ".join(sorted(_FIELDS))
            raise MlopsError(f"{where}: unknown setting '{name}'; allowed: {allowed}")
        settings[name] = _coerce(name, value, where)
        origin[name] = label(name)


def find_repo_config(start: Path, config_path: Path | None = None) -> Path | None:
    """The nearest ``mlops.yaml`` above ``start``, stopping at a Git root.

    Args:
        start: the model folder (or repository) to search upwards from.
        config_path: the file to use instead, when given (``Environment.config_path``,
            from ``$MLOPS_CONFIG``).
    """
    if config_path is not None:
        return config_path
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
    doc = load_yaml(path) or {}
    if not isinstance(doc, dict):
        raise MlopsError(f"{path}: must be a mapping with sections like 'tune:' and 'notify:'")
    return doc


def resolve_settings(
    manifest_tune: dict[str, Any],
    repo_config: dict[str, Any],
    flags: dict[str, Any],
    repo_config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    manifest_path: Path | None = None,
) -> TuneSettings:
    """Merge the four layers; ``flags`` holds only options the user actually passed.

    Args:
        manifest_tune: ``model.yaml``'s ``tune:`` section.
        repo_config: the whole ``mlops.yaml`` (its ``tune:`` section counts).
        flags: the command-line options the user passed.
        repo_config_path: where ``mlops.yaml`` was read, for messages.
        environ: the environment snapshot (``Environment.from_os()`` at the CLI); None: no
            environment layer and the machine-independent defaults.
        manifest_path: where ``model.yaml`` was read, for messages.
    """
    environ = Environment(environ)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    repo, model = str(repo_config_path or REPO_CONFIG), str(manifest_path or "model.yaml")
    _apply(values, origin, manifest_tune, f"{model} tune", lambda n: f"{model} tune.{n}")
    _apply(values, origin, repo_config.get("tune") or {}, f"{repo} tune", lambda n: f"{repo} tune.{n}")
    env_layer = {name: environ[f"MLOPS_{name.upper()}"] for name in _FIELDS if f"MLOPS_{name.upper()}" in environ}
    for name, value in env_layer.items():
        values[name] = _coerce(name, value, f"environment MLOPS_{name.upper()}")
        origin[name] = f"MLOPS_{name.upper()}"
    passed = {k: v for k, v in flags.items() if v is not None}
    _apply(values, origin, passed, "command line", lambda n: "--" + n.replace("_", "-"))
    _machine_defaults(values, origin, environ)
    settings = TuneSettings(**values, origin=origin)
    if settings.pruner not in PRUNERS:
        raise MlopsError(f"setting pruner={settings.pruner!r} is unknown; use one of {', '.join(PRUNERS)}")
    _check_ranges(settings)
    return settings


def _machine_defaults(values: dict[str, Any], origin: dict[str, str], environ: Environment) -> None:
    """Fill the settings no layer set whose default depends on the environment."""
    if values.get("tracking_uri") is None and environ.tracking_uri:
        values["tracking_uri"], origin["tracking_uri"] = environ.tracking_uri, MLFLOW_TRACKING_URI
    if values.get("commit") is None and environ.ci_commit:
        source = next(name for name in CI_COMMIT_NAMES if environ.get(name))
        values["commit"], origin["commit"] = environ.ci_commit, source
    if "cache_dir" not in values:  # still the default: under this user's cache home
        values["cache_dir"] = default_dir(environ.cache_home)


# Numeric settings and the rule each must satisfy; None (no limit) is allowed only for timeout.
_RANGES: dict[str, tuple[float, bool, str]] = {
    "timeout": (0.0, False, "must be more than 0 seconds, or none for no limit"),
    "max_trials": (1.0, True, "must be at least 1"),
    "max_retry": (0.0, True, "must be 0 or more"),
    "checkpoint_seconds": (0.0, True, "must be 0 (after every epoch) or more seconds"),
    "heartbeat_interval": (1.0, True, "must be at least 1 second"),
    "grace_period": (1.0, True, "must be at least 1 second"),
    "promote_margin": (0.0, True, "must be 0 or more (how much better a new model must be to become champion)"),
    "feature_shard_size": (1.0, True, "must be at least 1 image"),
    "workers": (1.0, True, "must be at least 1 (this process)"),
}


def _check_ranges(settings: TuneSettings) -> None:
    for name, (low, inclusive, rule) in _RANGES.items():
        value = getattr(settings, name)
        if value is None and name == "timeout":
            continue
        ok = value is not None and math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok:
            raise MlopsError(f"setting {name}={value!r} (from {settings.source(name)}) {rule}")
    if settings.heartbeat_interval >= settings.grace_period:
        raise MlopsError(
            f"setting grace_period={settings.grace_period} (from {settings.source('grace_period')}) must exceed "
            f"heartbeat_interval={settings.heartbeat_interval}, or live trials are taken for dead ones"
        )


def check_folders(settings: TuneSettings) -> None:
    """Prove ``runs_dir`` and ``cache_dir`` can be created and written, leaving no trace.

    A search that learns this only when it writes its first checkpoint has already loaded
    the data and opened its runs.

    Raises:
        MlopsError: naming the setting, where it came from and the folder.
    """
    for name in ("runs_dir", "cache_dir"):
        folder = Path(getattr(settings, name)).expanduser().absolute()
        # The nearest folder that exists gets a uniquely named probe: workers starting together
        # never collide, and nothing of the wanted folder is made or removed here.
        nearest = next(p for p in [folder, *folder.parents] if p.exists())
        try:
            if not nearest.is_dir():
                raise NotADirectoryError(f"{nearest} is a file")
            tempfile.TemporaryDirectory(dir=nearest, prefix=".mlops-probe-").cleanup()
        except OSError as error:
            raise MlopsError(
                f"setting {name}={folder} (from {settings.source(name)}) cannot be created or written "
                f"({error.strerror or error}); pick a writable folder"
            ) from None


def apply_overrides(manifest: Any, settings: TuneSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's data and params options with ``--weights`` and ``--set a.b=v`` applied.

    A name the model does not read is refused (a typo would otherwise be ignored), and so is
    a value of the wrong type. What the model reads is its ``accepts:`` declaration, or, where
    it declares none, the options its ``model.yaml`` lists.

    Raises:
        MlopsError: naming the ``--set`` item, the option and the allowed names or type.
    """
    data, params = dict(manifest.data), dict(manifest.params)
    accepts = getattr(manifest, "accepts", None)
    if settings.weights is not None and "weights" in params:  # only models that take weights
        params["weights"] = settings.weights
        if accepts is not None:
            accepts.check_one("params", "weights", settings.weights, settings.source("weights"))
    for item in settings.overrides:
        key, sep, raw = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in ("data", "params") or not name:
            raise MlopsError(f"--set {item!r}: use --set data.NAME=VALUE or --set params.NAME=VALUE")
        options = data if section == "data" else params
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise MlopsError(f"--set {item!r}: the value is not valid YAML; quote it, e.g. {key}='{raw}'") from None
        if accepts is not None and accepts.section(section) is not None:
            accepts.check_one(section, name, value, "--set")
        elif name not in options:
            known = ", ".join(sorted(options)) or "none"
            raise MlopsError(
                f"--set {item}: the model has no {section} option {name!r} (its model.yaml lists: {known}); "
                f"check the spelling or declare it in model.yaml {section}:"
            )
        options[name] = value
    return data, params
