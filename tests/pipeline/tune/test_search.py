"""``mlops tune`` end to end: a real search on Olivetti with the real face-pretrained weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FACE_WEIGHTS, ROOT

MODEL = ROOT / "models" / "face_vgg16"


def mlops(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in ``cwd`` (where mlflow.db, mlops-runs/ and the cache go)."""
    full_env = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tune_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "tune",
        str(MODEL),
        "--weights",
        str(FACE_WEIGHTS),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--max-trials",
        "6",
        *extra,
    ]


def nested_runs(tmp_path: Path, parent_id: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("face_vgg16")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_search_meets_goal_registers_champion_and_reuses_the_cache(offline_env: dict, tmp_path: Path) -> None:
    first = mlops(tune_args(tmp_path, "--goal", "0.9"), tmp_path, offline_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "goal met: best val_accuracy" in first.stdout
    assert "test accuracy:" in first.stdout
    assert "features: 400 images through VGG16" in first.stdout

    summary = json.loads((tmp_path / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
    assert summary["goal_met"] is True and summary["registered_model"] == "face_vgg16/1"
    assert summary["best"]["value"] >= 0.9 and 0.0 < summary["best"]["test_value"] <= 1.0
    low, high = summary["best"]["interval"]
    assert low < summary["best"]["value"] <= high
    assert {"Optimization history", "Learning curves", "Confusion matrix"} <= set(summary["plots"])

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("face_vgg16", "champion")
    assert champion.run_id == summary["best"]["mlflow_run_id"]
    runs = nested_runs(tmp_path, summary["mlflow_parent_run_id"])
    assert len(runs) == summary["trials_total"]
    assert all(run.info.status == "FINISHED" for run in runs)
    assert {run.data.tags["optuna.trial_number"] for run in runs} == {str(i) for i in range(summary["trials_total"])}

    second = mlops(tune_args(tmp_path, "--goal", "0.9", "--study-name", "again"), tmp_path, offline_env)
    assert second.returncode == 0, second.stderr
    assert "features: reused from the cache" in second.stdout
    assert "through VGG16" not in second.stdout


def test_unreachable_goal_is_an_honest_failure(offline_env: dict, tmp_path: Path) -> None:
    result = mlops(
        # Unreachable: the Wilson lower bound of an accuracy stays below 1.
        tune_args(tmp_path, "--goal", "1", "--goal-confidence", "--max-trials", "2", "--set", "data.input_size=32"),
        tmp_path,
        offline_env,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "goal NOT met" in result.stdout
    summary = json.loads((tmp_path / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
    assert summary["goal_met"] is False and summary["registered_model"] is None
    assert summary["trials_complete"] + summary["trials_pruned"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "/no/such.h5"], "weights file /no/such.h5 not found"),
        (["--set", "data.source=mnist"], "data.source='mnist' is unknown"),
        (["--pruner", "magic"], "pruner='magic' is unknown"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(offline_env: dict, tmp_path: Path, args: list[str], message: str) -> None:
    result = mlops(
        ["tune", str(MODEL), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *args], tmp_path, offline_env
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_same_study_again_with_a_higher_goal_continues_it(offline_env: dict, tmp_path: Path) -> None:
    """A second run of one study with another goal adds trials to it (params are write-once in MLflow)."""
    args = tune_args(tmp_path, "--set", "data.input_size=32", "--study-name", "faces", "--max-trials", "1")
    first = mlops([*args, "--goal", "0.5"], tmp_path, offline_env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = mlops([*args[:-2], "--max-trials", "2", "--goal", "1", "--goal-confidence"], tmp_path, offline_env)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "1 finished trial(s) so far" in second.stdout
    summary = json.loads((tmp_path / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
    assert summary["trials_complete"] + summary["trials_pruned"] == 2
