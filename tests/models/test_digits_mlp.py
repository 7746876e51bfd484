"""``models/digits_mlp``: it can learn, it keeps the model contract, it resumes, it tunes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import MlopsError
from pipeline.sdk.contract import ModelPlugin, load_plugin
from tests.cli import tune_in
from tests.contract_helpers import Reports, study_context, trial_context

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "digits_mlp"
SMALL = {
    "n_layers": 1,
    "units": [32],
    "dropout": 0.0,
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 3e-3,
    "batch_size": 64,
    "epochs": 4,
}


@pytest.fixture(scope="module")
def plugin() -> ModelPlugin:
    """The model folder, loaded as the tuner loads it."""
    return load_plugin(MODEL_DIR)


@pytest.fixture(scope="module")
def data(plugin: ModelPlugin, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The prepared splits (seed 42)."""
    return plugin.prepare(study_context(plugin, tmp_path_factory.mktemp("cache")))


def test_prepare_splits_every_image_once_stratified(plugin: ModelPlugin, data: Any, tmp_path: Path) -> None:
    ctx = study_context(plugin, tmp_path)
    plugin.prepare(ctx)
    sizes = {name: len(labels) for name, labels in data.labels.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["val"] == sizes["test"] == 360
    for name in ("train", "val", "test"):
        assert data.features[name].shape == (sizes[name], 64)
        assert set(np.unique(data.labels[name])) == set(range(10))  # every digit in every split
    assert data.names == [str(d) for d in range(10)]
    assert ctx.facts["n_val"] == 360 and len(ctx.facts["data_fingerprint"]) == 64


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("scaling", "zscore", "data.scaling"),
        ("val_fraction", 1.5, "data.val_fraction"),
        ("test_fraction", "half", "data.test_fraction"),
    ],
)
def test_prepare_names_a_bad_data_option(
    plugin: ModelPlugin, tmp_path: Path, option: str, value: Any, named: str
) -> None:
    with pytest.raises(MlopsError, match=named):
        plugin.prepare(study_context(plugin, tmp_path, **{option: value}))


def test_overfits_one_small_batch(plugin: ModelPlugin, data: Any, tmp_path: Path) -> None:
    """32 images, trained on and scored on themselves: a model that can learn gets them all."""
    x, y = data.features["train"][:32], data.labels["train"][:32]
    tiny = dataclasses.replace(data, features={"train": x, "val": x}, labels={"train": y, "val": y}, patience=None)
    params = {**SMALL, "units": [64], "learning_rate": 1e-2, "batch_size": 32, "epochs": 60}
    result = plugin.train(tiny, params, trial_context(tmp_path / "ckpt", Reports()))
    assert result.history["loss"][-1] < 0.05
    assert result.history["accuracy"][-1] == 1.0
    assert result.value == 1.0


def test_train_reports_each_epoch_then_evaluate_and_export(plugin: ModelPlugin, data: Any, tmp_path: Path) -> None:
    reports = Reports()
    result = plugin.train(data, SMALL, trial_context(tmp_path / "ckpt", reports))
    assert reports.steps == [0, 1, 2, 3]
    assert all({"val_accuracy", "val_loss", "loss", "accuracy"} <= set(m) for _, m in reports.calls)
    assert result.value == max(result.history["val_accuracy"]) > 0.5
    assert result.n_val == 360
    assert (tmp_path / "ckpt" / "latest.npz").is_file() and (tmp_path / "ckpt" / "best.npz").is_file()

    evaluation = plugin.evaluate(data, result)
    assert evaluation.n == 360 and 0.5 < evaluation.value <= 1.0
    assert evaluation.labels == [str(d) for d in range(10)]
    assert evaluation.value == pytest.approx(float(np.mean(evaluation.y_true == evaluation.y_pred)))
    assert evaluation.ids is not None and evaluation.fit_ids is not None  # what the promotion gate compares
    assert (len(evaluation.ids), len(evaluation.fit_ids)) == (360, 1797 - 360)

    exported = plugin.export(data, result)
    assert exported.flavor == "keras" and exported.input_example.shape == (2, 64)
    assert any(r.startswith("keras") for r in exported.pip_requirements)
    probs = exported.model.predict(exported.input_example, verbose=0)  # raw pixels in, probabilities out
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_retried_trial_resumes_from_its_checkpoint(plugin: ModelPlugin, data: Any, tmp_path: Path) -> None:
    checkpoint = tmp_path / "trial-0000"
    first = Reports()
    plugin.train(data, {**SMALL, "epochs": 3}, trial_context(checkpoint, first))
    assert first.steps == [0, 1, 2]

    again = Reports()
    result = plugin.train(data, {**SMALL, "epochs": 6}, trial_context(checkpoint, again))
    assert again.steps[0] == 3 > 0  # picked up after the last saved epoch
    assert again.steps == [3, 4, 5]
    assert len(result.history["val_accuracy"]) == 6  # the history came back with the weights


@pytest.mark.slow  # a real search in a subprocess; train/evaluate/export are covered in-process above
def test_tune_cli_writes_a_summary(tmp_path: Path) -> None:
    """One real ``mlops tune`` of three trials toward an unreachable goal: exit 3, budget spent."""
    # A Wilson lower bound stays below 1, so the goal is never met and all three trials run.
    done, summary = tune_in(tmp_path, MODEL_DIR, "--max-trials", "3", "--goal", "1", "--goal-confidence", expect=3)
    assert summary["goal"]["metric"] == "val_accuracy" and summary["goal"]["direction"] == "maximize"
    assert summary["exit_code"] == done.returncode
    assert summary["trials_total"] == 3
    assert summary["best"]["interval"] is not None  # an accuracy gets its Wilson interval
    assert 0.0 < summary["best"]["test_value"] <= 1.0
    assert "Confusion matrix" in summary["plots"]
