"""``mlops promote`` / ``mlops rollback``, and the gate inside real ``mlops tune`` runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import root_mean_squared_error

from pipeline.sdk.contract import StudyContext, load_plugin
from pipeline.tracking import promotion
from tests.cli import MLOPS, tune_in
from tests.conftest import ROOT
from tests.pipeline.tracking.test_promotion import register


def mlops(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    return subprocess.run(
        [*MLOPS, *args], cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def aliases(uri: str, name: str) -> dict[str, int]:
    return {k: int(v) for k, v in MlflowClient(tracking_uri=uri).get_registered_model(name).aliases.items()}


def test_promote_and_rollback_by_hand(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    v1, v2 = register(uri, "hand", 1.0), register(uri, "hand", 2.0)
    done = mlops(tmp_path, "promote", "hand", str(v1), "--tracking-uri", uri)
    assert done.returncode == 0, done.stderr
    done = mlops(tmp_path, "promote", "hand", str(v2), "--tracking-uri", uri)
    assert done.stdout.strip() == f"hand/{v2} is now the champion (previous: hand/{v1})"
    assert aliases(uri, "hand") == {"champion": v2, "previous": v1}

    done = mlops(tmp_path, "rollback", "hand", MLFLOW_TRACKING_URI=uri)  # where `mlops tune` reads it too
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hand: champion is hand/{v1} again (previous: hand/{v2})"
    assert aliases(uri, "hand") == {"champion": v1, "previous": v2}

    missing = mlops(tmp_path, "rollback", "nobody", "--tracking-uri", uri)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: no registered model 'nobody' in {uri}; check the name (model.yaml name:) and --tracking-uri"
    ]


@pytest.mark.slow
def test_tune_keeps_the_champion_against_a_challenger_and_force_promote_overrides(tmp_path: Path) -> None:
    """Two real searches of diabetes_regression on different test splits (seeds), then a forced rerun.

    The second run's challenger must beat the champion by 1000 RMSE: it cannot, so the
    champion stays, scored again on the patients of the second run's test split that it never
    trained on (its own split was another).
    """
    model, uri = ROOT / "models" / "diabetes_regression", f"sqlite:///{tmp_path}/mlflow.db"
    easy = ["--goal", "1000", "--max-trials", "1"]
    tune_in(tmp_path, model, *easy, "--seed", "1", expect=0)
    assert aliases(uri, "diabetes_regression") == {"champion": 1}

    done, summary = tune_in(tmp_path, model, *easy, "--seed", "2", "--promote-margin", "1000", expect=0)
    assert "model: registered diabetes_regression/2 (alias challenger)" in done.stdout
    assert aliases(uri, "diabetes_regression") == {"champion": 1, "challenger": 2}
    decision = summary["promotion"]
    assert (decision["verdict"], decision["champion_version"], decision["champion_scored"]) == ("kept", 1, "unseen")
    # The champion, loaded from the registry, on seed 2's test patients outside seed 1's train and
    # validation splits, scored here independently:
    plugin = load_plugin(model)
    manifest = plugin.manifest
    first, data = (plugin.prepare(StudyContext(manifest, manifest.data, {}, seed, tmp_path / "c")) for seed in (1, 2))
    never = ~np.isin(data.ids["test"], np.concatenate([first.ids["train"], first.ids["val"]]))
    assert decision["compared_n"] == int(never.sum()) and 0 < never.sum() < len(never)
    mlflow.set_tracking_uri(uri)  # as Tracker does in `mlops tune`
    champion = promotion.load_model("models:/diabetes_regression/1")
    expected = root_mean_squared_error(data.targets["test"][never], champion.predict(data.features["test"][never]))
    assert decision["champion_value"] == pytest.approx(float(expected))
    assert decision["challenger_value"] == summary["best"]["test_value"]

    done, summary = tune_in(tmp_path, model, *easy, "--seed", "2", "--force-promote", expect=0)
    assert summary["promotion"]["verdict"] == "forced"
    assert "model: registered diabetes_regression/2 (alias champion)" in done.stdout
    assert aliases(uri, "diabetes_regression") == {"champion": 2, "previous": 1}
