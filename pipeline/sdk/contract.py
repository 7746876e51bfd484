"""The model contract: what a ``models/<name>/`` plug-in exposes and what it is handed.

A model's entry file (``model.py`` unless ``model.yaml`` says otherwise) defines three
functions, and optionally two more::

    def prepare(ctx: StudyContext) -> Data: ...            # once per study
    def train(data, params, trial: TrialContext) -> TrainResult: ...
    def evaluate(data, result: TrainResult) -> Evaluation: ...   # the test split, once
    def export(data, result: TrainResult) -> ExportedModel: ...  # optional
    def prepare_features(ctx: StudyContext) -> None: ...         # optional: ``mlops features``

``prepare`` loads and splits the data and does every expensive step that does not depend
on a trial's parameters. ``train`` builds and fits one candidate, calling
``trial.report(epoch, metrics)`` after every epoch (it raises ``optuna.TrialPruned`` for a
hopeless trial) and keeping resumable state in ``trial.checkpoint_dir``. Adding a model
touches no pipeline code. ``prepare_features`` fills the feature cache ahead of a search
(``mlops features``, e.g. for a new backbone) with what ``prepare`` would compute; a model
without cached features leaves it out.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from pipeline.config.manifest import ModelManifest, load_manifest
from pipeline.errors import MlopsError
from pipeline.sdk.checkpoints import DEFAULT_CHECKPOINT_SECONDS
from pipeline.sdk.feature_cache import DEFAULT_SHARD_SIZE
from pipeline.summary import Direction

Flavor = Literal["keras", "sklearn", "pyfunc"]  # the MLflow flavour a model is logged with


class ReportFn(Protocol):
    """Called by a model after each epoch with that epoch's metrics."""

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None: ...


@dataclass
class StudyContext:
    """What ``prepare`` gets: the manifest's options with run overrides applied.

    Attributes:
        manifest: the parsed ``model.yaml``.
        data: data options (``model.yaml``'s ``data`` with ``--set data.x=...`` applied).
        params: fixed model options (``params`` with ``--weights`` and ``--set`` applied).
        seed: the study's seed; splits and initialisations derive from it.
        cache_dir: root of the content-addressed feature cache.
        log: prints one progress line for the user.
        feature_shard_size: images per shard of a sharded feature extraction (setting
            ``feature_shard_size``).
        facts: what ``prepare`` learned (counts, fingerprints), logged as tags of the MLflow run.
        notes: what the report (e-mail, CI summary) must tell a person about the data, a
            sentence each, e.g. how many photos were skipped and why.
    """

    manifest: ModelManifest
    data: dict[str, Any]
    params: dict[str, Any]
    seed: int
    cache_dir: Path
    log: Callable[[str], None] = print
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    feature_shard_size: int = DEFAULT_SHARD_SIZE


@dataclass
class TrialContext:
    """What ``train`` gets besides the sampled parameters.

    Attributes:
        number: the Optuna trial number.
        seed: a seed for this trial (the same again when the trial is retried).
        report: call once per finished epoch; may raise ``optuna.TrialPruned``.
        checkpoint_dir: resumable state; a retried trial gets the folder of the trial it retries.
        goal_metric: the metric ``report`` must include, e.g. ``val_accuracy``.
        direction: ``maximize`` or ``minimize``.
        log: prints one line for the user (e.g. a damaged checkpoint set aside).
        checkpoint_seconds: the least time between two checkpoint writes (setting
            ``checkpoint_seconds``): the most training a killed trial may lose; 0 writes
            after every epoch.
    """

    number: int
    seed: int
    report: ReportFn
    checkpoint_dir: Path
    goal_metric: str = "val_accuracy"
    direction: Direction = "maximize"
    log: Callable[[str], None] = print
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS


@dataclass
class TrainResult:
    """One fitted candidate.

    Attributes:
        value: the goal metric on the validation split (of the best epoch kept).
        model: the fitted model object (what ``evaluate`` and ``export`` use).
        history: per-epoch metrics, name -> list (learning curves).
        n_val: validation examples behind ``value`` (for the Wilson interval of an accuracy).
    """

    value: float
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    n_val: int | None = None


@dataclass
class Evaluation:
    """The chosen model scored once on the held-out test split.

    Attributes:
        value: the goal's metric on the test split (``test_accuracy`` for ``val_accuracy``).
        n: test examples.
        y_true, y_pred: labels and predictions (a confusion matrix for classifiers).
        labels: class names in label order; ``None`` for regression.
        ids: each test example's identity (``example_ids``), in the order of ``y_true``.
        fit_ids: the identities of these data's train and validation examples: what a model
            chosen on them has seen. With ``ids``, a later promotion gate on a different
            split scores this model only on test examples it never saw.
    """

    value: float
    n: int
    y_true: Any = None
    y_pred: Any = None
    labels: list[str] | None = None
    ids: Sequence[str] | None = None
    fit_ids: Sequence[str] | None = None


@dataclass
class ExportedModel:
    """What gets logged to MLflow and registered.

    Attributes:
        flavor: ``keras``, ``sklearn`` or ``pyfunc`` (the MLflow flavour).
        model: the object to log; for ``pyfunc`` the path of a "models from code" file
            (it calls ``mlflow.models.set_model``; the face model's ``serving.py``).
        input_example: a small batch, for the signature (for ``pyfunc`` the signature is
            inferred by running the model on it; ``(example, params)`` adds a params schema).
        pip_requirements: what serving the model needs.
        trusted_types: for ``sklearn``: types skops may load beyond its defaults (MLflow 3
            saves scikit-learn models with skops, which refuses e.g. tree predictors).
        artifacts: for ``pyfunc``: name -> a file path, or a Keras model (saved as
            ``<name>.keras``); the code finds them in ``context.artifacts``.
        config: for ``pyfunc``: the model config (``context.model_config``), also logged as
            the model's metadata (label names, input size, ...).
        code_paths: for ``pyfunc``: Python files the model file imports, logged beside it
            (MLflow puts them on ``sys.path`` where it loads the model).
    """

    flavor: Flavor
    model: Any
    input_example: Any = None
    pip_requirements: list[str] = field(default_factory=list)
    trusted_types: list[str] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    code_paths: list[str] = field(default_factory=list)


class ModelModule(Protocol):
    """What a model's entry file defines; mypy checks each shipped model against it.

    A module satisfies a protocol through its functions (``tests/typecheck_models.py``
    assigns every ``models/*/model.py`` to a ``ModelModule`` and ``.ci/run`` runs mypy on it).
    ``export`` is optional and so not part of the protocol.
    """

    def prepare(self, ctx: StudyContext) -> Any:
        """Load and split the data once per study; do every trial-independent expensive step."""
        ...

    def train(self, data: Any, params: dict[str, Any], trial: TrialContext) -> TrainResult:
        """Fit one candidate, calling ``trial.report`` each epoch."""
        ...

    def evaluate(self, data: Any, result: TrainResult) -> Evaluation:
        """Score the chosen candidate once on the test split."""
        ...


@dataclass
class ModelPlugin:
    """A loaded model folder: its manifest and its entry module."""

    manifest: ModelManifest
    module: ModelModule

    def prepare(self, ctx: StudyContext) -> Any:
        """Run the model's ``prepare``."""
        return self.module.prepare(ctx)

    def train(self, data: Any, params: dict[str, Any], trial: TrialContext) -> TrainResult:
        """Run the model's ``train``."""
        return self.module.train(data, params, trial)

    def evaluate(self, data: Any, result: TrainResult) -> Evaluation:
        """Run the model's ``evaluate``."""
        return self.module.evaluate(data, result)

    def prepare_features(self, ctx: StudyContext) -> bool:
        """Run the model's ``prepare_features``; False when the model defines none (nothing to do)."""
        hook = getattr(self.module, "prepare_features", None)
        if not callable(hook):
            return False
        hook(ctx)
        return True

    def export(self, data: Any, result: TrainResult) -> ExportedModel:
        """Run the model's ``export``, or log the fitted object itself by its type."""
        if hasattr(self.module, "export"):
            return self.module.export(data, result)
        flavor: Flavor = "keras" if type(result.model).__module__.startswith("keras") else "sklearn"
        return ExportedModel(flavor=flavor, model=result.model)


_REQUIRED = ("prepare", "train", "evaluate")


def load_plugin(model_dir: Path) -> ModelPlugin:
    """Read a model folder's manifest and import its entry file as a package module.

    The folder is imported as the package ``mlops_models.<name>``, so its files may import
    each other relatively (``from .data import load_faces``).

    Raises:
        MlopsError: naming the file when the manifest is bad, the entry file is missing,
            its code does not parse or imports what is not installed, or it lacks one of
            ``prepare``, ``train``, ``evaluate``.
    """
    manifest = load_manifest(Path(model_dir))
    folder = manifest.folder.resolve()
    entry = manifest.entry  # resolved, and refused when it points outside the folder
    if not entry.is_file():
        raise MlopsError(f"{manifest.path}: entrypoint {manifest.entrypoint!r} not found in {folder}")
    package = f"mlops_models.{manifest.name.replace('-', '_').replace('.', '_')}"
    _ensure_package("mlops_models", None)
    _ensure_package(package, folder)
    module_name = f"{package}.{entry.stem}"
    spec = importlib.util.spec_from_file_location(module_name, entry)
    if spec is None or spec.loader is None:
        raise MlopsError(f"{entry}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (SyntaxError, ImportError) as error:
        # The pushed code itself is wrong: the same on every try, so a bad input (exit 2,
        # never restarted), not a crash.
        sys.modules.pop(module_name, None)
        raise MlopsError(_import_problem(entry, error)) from error
    missing = [name for name in _REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise MlopsError(f"{entry}: defines no {missing[0]}(); a model exposes prepare, train and evaluate")
    return ModelPlugin(manifest=manifest, module=module)


def _import_problem(entry: Path, error: SyntaxError | ImportError) -> str:
    """One line: where the model's code cannot be imported, and why."""
    if isinstance(error, SyntaxError):
        where = f"{error.filename or entry}:{error.lineno}" if error.lineno else str(entry)
        return f"{where}: {type(error).__name__}: {error.msg}; fix the model's code and push again"
    missing = f" (add {error.name} to the model's requirements)" if isinstance(error, ModuleNotFoundError) else ""
    return f"{entry}: cannot be imported: {type(error).__name__}: {error}{missing}"


def _ensure_package(name: str, folder: Path | None) -> None:
    """Register an (empty) package so relative imports inside a model folder resolve."""
    if name in sys.modules:
        return
    module = ModuleType(name)
    module.__path__ = [str(folder)] if folder else []
    sys.modules[name] = module
