"""Diabetes progression regression: a searched scikit-learn estimator behind a StandardScaler.

The data ships inside scikit-learn (``load_diabetes``: 442 patients, ten baseline
measurements, disease progression one year later), so no download is needed. ``prepare``
splits it once per study, stratified on target quantiles so the small validation and test
splits span the whole range. A trial fits ridge, elastic net or an RBF support-vector
regressor in one go and reports ``val_rmse``. The fitted pipeline is checkpointed (joblib,
with a checksum) so a retried trial reuses it instead of fitting again.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk import (
    Evaluation,
    ExportedModel,
    MlopsError,
    StudyContext,
    TrainResult,
    TrialContext,
    example_ids,
    fingerprint,
    frame,
    load_good,
    split_fractions,
    three_way_split,
    unframe,
    with_example_ids,
    write_atomic,
)

ESTIMATORS = ("ridge", "elasticnet", "svr")
CHECKPOINT = "estimator.joblib"
_DEFAULTS: dict[str, Any] = {
    "estimator": "ridge",
    "alpha": 1.0,
    "l1_ratio": 0.5,
    "C": 1.0,
    "gamma": "scale",
    "epsilon": 0.1,
}


@dataclass
class DiabetesData:
    """Per-split features and targets, and the options every trial shares.

    Attributes:
        features: split name -> ``(n, 10)`` baseline measurements.
        targets: split name -> ``(n,)`` disease progression.
        feature_names: the columns' names.
        ids: split name -> each patient's identity (``example_ids`` of the measurements and target).
    """

    features: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    feature_names: list[str]
    ids: dict[str, np.ndarray] = field(default_factory=dict)


def split(
    targets: np.ndarray, val_fraction: float, test_fraction: float, bins: int, seed: int
) -> dict[str, np.ndarray]:
    """Indices of a train / validation / test split, stratified on ``bins`` target quantiles."""

    def strata(index: np.ndarray) -> np.ndarray | None:
        if bins < 2:
            return None
        values = targets[index]
        return np.digitize(values, np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))

    return three_way_split(len(targets), val_fraction, test_fraction, seed, strata)


def _options(ctx: StudyContext) -> tuple[float, float, int]:
    """``data.val_fraction``, ``data.test_fraction`` and ``data.stratify_bins``, checked at the edge."""
    where = ctx.manifest.path
    val_fraction, test_fraction = split_fractions(ctx.data, where)
    bins = ctx.data.get("stratify_bins", 5)
    if not isinstance(bins, int) or not 1 <= bins <= 20:
        raise MlopsError(
            f"{where}: data.stratify_bins must be a whole number from 1 (no stratification) to 20, not {bins!r}"
        )
    return val_fraction, test_fraction, bins


def prepare(ctx: StudyContext) -> DiabetesData:
    """Load the diabetes data and split it with the study's seed."""
    from sklearn.datasets import load_diabetes

    val_fraction, test_fraction, bins = _options(ctx)
    bunch = load_diabetes(scaled=False)
    features = bunch.data.astype(np.float64)
    targets = bunch.target.astype(np.float64)
    parts = split(targets, val_fraction, test_fraction, bins, ctx.seed)
    ids = example_ids(np.column_stack([features, targets]))
    ctx.facts.update(
        {
            "data_fingerprint": fingerprint(features, targets),
            "n_examples": len(targets),
            "n_train": len(parts["train"]),
            "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
        }
    )
    ctx.log(
        f"diabetes: {len(parts['train'])} train, {len(parts['val'])} validation, {len(parts['test'])} test patients"
    )
    return DiabetesData(
        features={name: features[index] for name, index in parts.items()},
        targets={name: targets[index] for name, index in parts.items()},
        feature_names=list(bunch.feature_names),
        ids={name: ids[index] for name, index in parts.items()},
    )


def build_pipeline(params: dict[str, Any]) -> Any:
    """StandardScaler followed by the estimator ``params["estimator"]`` names.

    Raises:
        ValueError: naming an unknown estimator and the allowed ones.
    """
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    name = params["estimator"]
    if name == "ridge":
        estimator: Any = Ridge(alpha=float(params["alpha"]))
    elif name == "elasticnet":
        estimator = ElasticNet(alpha=float(params["alpha"]), l1_ratio=float(params["l1_ratio"]), max_iter=10_000)
    elif name == "svr":
        gamma = params["gamma"] if params["gamma"] == "scale" else float(params["gamma"])
        estimator = SVR(C=float(params["C"]), gamma=gamma, epsilon=float(params["epsilon"]))
    else:
        raise ValueError(f"estimator {name!r} is unknown; allowed: {', '.join(ESTIMATORS)}")
    return Pipeline([("scale", StandardScaler()), ("model", estimator)])


def _scores(pipeline: Any, data: DiabetesData) -> dict[str, float]:
    """Training RMSE, validation RMSE and validation R² of a fitted pipeline."""
    from sklearn.metrics import r2_score, root_mean_squared_error

    val_pred = pipeline.predict(data.features["val"])
    return {
        "rmse": float(root_mean_squared_error(data.targets["train"], pipeline.predict(data.features["train"]))),
        "val_rmse": float(root_mean_squared_error(data.targets["val"], val_pred)),
        "val_r2": float(r2_score(data.targets["val"], val_pred)),
    }


def _load_checkpoint(folder: Path, params: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any] | None:
    """The last good saved state of this trial, or ``None`` when there is none it can continue.

    The file's checksum is checked before it is unpickled; a damaged one is reported in one
    line and the previous checkpoint (or a fresh start) is used instead.
    """
    import joblib

    state = load_good(folder / CHECKPOINT, lambda data: joblib.load(io.BytesIO(unframe(data))), log)
    if not isinstance(state, dict) or state.get("identity") != params:
        return None  # none, or another configuration
    return state


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write atomically with a checksum, so a kill mid-write leaves the previous checkpoint intact."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(state, buffer)
    write_atomic(folder / CHECKPOINT, frame(buffer.getvalue()))


def train(data: DiabetesData, params: dict[str, Any], trial: TrialContext) -> TrainResult:
    """Fit one candidate and report ``rmse``, ``val_rmse`` and ``val_r2`` once (step 0).

    A retried trial whose checkpoint in ``trial.checkpoint_dir`` holds the same parameters
    reports the saved fit instead of fitting again.
    """
    params = {**_DEFAULTS, **params}
    state = _load_checkpoint(trial.checkpoint_dir, params, trial.log)
    if state is None:
        state = {
            "identity": params,
            "pipeline": build_pipeline(params),
            "done": 0,
            "history": {"rmse": [], "val_rmse": [], "val_r2": []},
        }
    _fit_once(data, state, trial)
    history = state["history"]
    return TrainResult(history["val_rmse"][-1], state["pipeline"], {k: list(v) for k, v in history.items()}, n_val=None)


def _record(state: dict[str, Any], metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        state["history"][name].append(value)


def _last(state: dict[str, Any]) -> dict[str, float]:
    return {name: values[-1] for name, values in state["history"].items()}


def _fit_once(data: DiabetesData, state: dict[str, Any], trial: TrialContext) -> None:
    """One fit (skipped when the checkpoint holds it), one report at step 0."""
    if state["done"] == 0:
        state["pipeline"].fit(data.features["train"], data.targets["train"])
        _record(state, _scores(state["pipeline"], data))
        state["done"] = 1
        _save_checkpoint(trial.checkpoint_dir, state)
    trial.report(0, _last(state))


def evaluate(data: DiabetesData, result: TrainResult) -> Evaluation:
    """RMSE of the chosen pipeline on the held-out test split (touched once, at the end)."""
    from sklearn.metrics import root_mean_squared_error

    truth = data.targets["test"]
    predicted = result.model.predict(data.features["test"])
    rmse = float(root_mean_squared_error(truth, predicted))
    return with_example_ids(Evaluation(rmse, len(truth), truth, predicted, None), data.ids)


def export(data: DiabetesData, result: TrainResult) -> ExportedModel:
    """The fitted scikit-learn pipeline: the ten raw baseline measurements in, progression out."""
    return ExportedModel("sklearn", result.model, data.features["test"][:2], ["scikit-learn==1.9.1"])
