"""``models/diabetes_regression``: it can learn, it keeps the model contract, it resumes, it tunes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import MlopsError
from pipeline.sdk.contract import ModelPlugin, TrialContext, load_plugin
from tests.cli import tune_in
from tests.contract_helpers import Reports, study_context, trial_context

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "diabetes_regression"


def rmse_trial(checkpoint_dir: Path, reports: Reports) -> TrialContext:
    """A trial as the tuner hands it to this model: a minimize goal on val_rmse."""
    return trial_context(checkpoint_dir, reports, goal_metric="val_rmse", direction="minimize")


@pytest.fixture(scope="module")
def plugin() -> ModelPlugin:
    """The model folder, loaded as the tuner loads it."""
    return load_plugin(MODEL_DIR)


@pytest.fixture(scope="module")
def data(plugin: ModelPlugin, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The prepared splits (seed 42)."""
    return plugin.prepare(study_context(plugin, tmp_path_factory.mktemp("cache")))


def test_prepare_splits_every_patient_once(plugin: ModelPlugin, data: Any) -> None:
    sizes = {name: len(targets) for name, targets in data.targets.items()}
    assert sum(sizes.values()) == 442
    assert sizes == {"train": 264, "val": 89, "test": 89}
    for name, size in sizes.items():
        assert data.features[name].shape == (size, 10)
    # Stratified on quintiles: each split's median sits near the whole set's.
    everything = np.concatenate(list(data.targets.values()))
    for targets in data.targets.values():
        assert abs(np.median(targets) - np.median(everything)) < 15


def test_model_yaml_goal_is_a_minimized_rmse(plugin: ModelPlugin) -> None:
    goal = plugin.manifest.goal
    assert (goal.metric, goal.direction) == ("val_rmse", "minimize")
    assert goal.reached(goal.target - 1) and not goal.reached(goal.target + 1)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("stratify_bins", 0, "data.stratify_bins"),
        ("val_fraction", 0.0, "data.val_fraction"),
        ("test_fraction", 0.8, "data.val_fraction \\+ data.test_fraction"),
    ],
)
def test_prepare_names_a_bad_data_option(
    plugin: ModelPlugin, tmp_path: Path, option: str, value: Any, named: str
) -> None:
    with pytest.raises(MlopsError, match=named):
        plugin.prepare(study_context(plugin, tmp_path, **{option: value}))


def test_overfits_one_small_batch(plugin: ModelPlugin, data: Any, tmp_path: Path) -> None:
    """32 patients, fitted and scored on themselves: a barely regularised RBF SVR nearly memorises them."""
    x, y = data.features["train"][:32], data.targets["train"][:32]
    tiny = dataclasses.replace(data, features={"train": x, "val": x}, targets={"train": y, "val": y})
    params = {"estimator": "svr", "C": 1.0e5, "gamma": 1.0, "epsilon": 0.1}
    result = plugin.train(tiny, params, rmse_trial(tmp_path / "ckpt", Reports()))
    assert result.value < 0.05 * float(np.std(y))  # the target's spread is ~75
    assert result.history["val_r2"][-1] > 0.99


def test_linear_model_reports_once_and_evaluates(plugin: ModelPlugin, data: Any, tmp_path: Path) -> None:
    reports = Reports()
    result = plugin.train(data, {"estimator": "ridge", "alpha": 1.0}, rmse_trial(tmp_path / "ckpt", reports))
    assert reports.steps == [0]
    assert set(reports.calls[0][1]) == {"rmse", "val_rmse", "val_r2"}
    assert result.value == reports.calls[0][1]["val_rmse"] and 40 < result.value < 70
    assert result.n_val is None  # no Wilson interval for an RMSE
    assert (tmp_path / "ckpt" / "estimator.joblib").is_file()

    evaluation = plugin.evaluate(data, result)
    assert evaluation.labels is None and evaluation.n == 89
    rmse = float(np.sqrt(np.mean((evaluation.y_true - evaluation.y_pred) ** 2)))
    assert evaluation.value == pytest.approx(rmse)
    assert evaluation.ids is not None and evaluation.fit_ids is not None  # what the promotion gate compares
    assert (len(evaluation.ids), len(evaluation.fit_ids)) == (89, 442 - 89)
    assert not set(evaluation.ids) & set(evaluation.fit_ids)

    exported = plugin.export(data, result)
    assert exported.flavor == "sklearn" and exported.input_example.shape == (2, 10)
    assert exported.model.predict(exported.input_example).shape == (2,)


@pytest.mark.parametrize("estimator", ["ridge", "elasticnet", "svr"])
def test_every_searched_estimator_exports_in_a_format_mlflow_accepts(
    plugin: ModelPlugin, data: Any, tmp_path: Path, estimator: str
) -> None:
    """MLflow 3 logs scikit-learn models with skops, which refuses types it does not trust."""
    import skops.io

    choices = next(p.choices for p in plugin.manifest.search_space.params if p.name == "estimator")
    assert estimator in choices
    result = plugin.train(data, {"estimator": estimator}, rmse_trial(tmp_path, Reports()))
    assert 40 < result.value < 80
    exported = plugin.export(data, result)
    assert skops.io.get_untrusted_types(data=skops.io.dumps(exported.model)) == []


def test_retried_linear_trial_reuses_its_fitted_estimator(
    plugin: ModelPlugin, data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {"estimator": "elasticnet", "alpha": 0.1, "l1_ratio": 0.5}
    first = plugin.train(data, params, rmse_trial(tmp_path, Reports()))

    def no_refit(*_: Any) -> Any:
        raise AssertionError("a retried trial must load its checkpoint, not build a new estimator")

    monkeypatch.setattr(plugin.module, "build_pipeline", no_refit)
    reports = Reports()
    again = plugin.train(data, params, rmse_trial(tmp_path, reports))
    assert reports.steps == [0] and again.value == first.value


@pytest.mark.slow  # ~25 s; train/evaluate/export are covered in-process above
def test_tune_cli_writes_a_summary(tmp_path: Path) -> None:
    """One real ``mlops tune`` of three trials toward an unreachable goal: exit 3, budget spent."""
    done, summary = tune_in(tmp_path, MODEL_DIR, "--max-trials", "3", "--goal", "1", expect=3)  # val_rmse <= 1
    assert summary["goal"]["metric"] == "val_rmse" and summary["goal"]["direction"] == "minimize"
    assert summary["exit_code"] == done.returncode
    assert summary["trials_total"] == 3
    assert summary["best"]["interval"] is None  # no Wilson interval for an RMSE
    assert summary["best"]["test_value"] > 0
    assert "Test predictions" in summary["plots"]
