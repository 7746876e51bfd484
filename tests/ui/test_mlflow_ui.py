"""What users look at: the MLflow UI, rendered by headless Chromium, shows a search and its champion.

A real ``mlflow server`` (the ``mlflow_server`` fixture), two real ``mlops tune`` runs of the
diabetes model on one study (two trials that miss an impossible goal, then a goal they meet, so
the champion is registered), then Chromium loads the UI's pages and dumps the DOM its scripts
built. The assertions read only that DOM: MLflow's ``index.html`` holds no run or model names,
so every name found there was fetched and rendered by the UI itself. Skips without Chromium.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.pipeline.services import mlflow_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
MODEL = "diabetes_regression"
CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
# The UI opens in its GenAI mode unless the URL asks for model training (MLflow 3.17).
ML_MODE = "workflowType=machine_learning"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install -y --no-install-recommends chromium"),
]


def mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``mlops`` CLI of this interpreter's environment."""
    beside = Path(sys.executable).parent / "mlops"
    command = [str(beside)] if beside.is_file() else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def rendered(url: str, profile: Path, expect: Sequence[str]) -> str:
    """The DOM Chromium's scripts built for ``url`` (entities decoded).

    The UI fetches its data after it loads, so a busy machine may need a longer virtual-time
    budget: load again with more until every ``expect`` string is in it (or the budgets run out).
    """
    dom = ""
    for budget in (15_000, 30_000, 30_000, 60_000, 60_000):
        command = [
            str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-proxy-server", "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,800",
            f"--virtual-time-budget={budget}", "--dump-dom", url,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        dom = html.unescape(result.stdout)
        if all(text in dom for text in expect):
            break
    return dom


def test_the_ui_shows_the_search_runs_and_the_registered_champion(mlflow_server: str, tmp_path: Path) -> None:  # noqa: F811
    shutil.copytree(ROOT / "models" / MODEL, tmp_path / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    study = f"ui-{uuid.uuid4().hex[:8]}"  # the server is shared by the session: our parent run's name is unique
    tune = [MODEL, "--tracking-uri", mlflow_server, "--study-name", study, "--max-trials", "2"]
    tune += ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--runs-dir", str(tmp_path / "runs")]

    missed = mlops("tune", *tune, "--goal", "1", cwd=tmp_path)  # val_rmse <= 1: no trial meets it
    assert missed.returncode == 3, missed.stdout + missed.stderr
    met = mlops("tune", *tune, "--goal", "1000", cwd=tmp_path)  # the same study: met, so registered
    assert met.returncode == 0, met.stdout + met.stderr
    summary = json.loads((tmp_path / "runs" / MODEL / "summary.json").read_text())
    experiment, parent = summary["mlflow_experiment_id"], summary["mlflow_parent_run_id"]
    name, version = summary["registered_model"].split("/")
    assert summary["trials_total"] == 2
    trials = ["trial-0", "trial-1"]

    # The runs list sorted by the goal metric is flat: the parent run and both trials are rows.
    by_metric = f"orderByKey={quote('metrics.`val_rmse`')}&orderByAsc=true"
    runs_page = f"{mlflow_server}/#/experiments/{experiment}/runs?{ML_MODE}&{by_metric}"
    dom = rendered(runs_page, tmp_path / "profile-runs", [study, *trials])
    for run_name in (study, *trials):
        assert f">{run_name}<" in dom, f"{run_name} not rendered on {runs_page}"

    # The parent run's page lists its nested trials as child runs.
    parent_page = f"{mlflow_server}/#/experiments/{experiment}/runs/{parent}?{ML_MODE}"
    dom = rendered(parent_page, tmp_path / "profile-parent", [study, *trials])
    assert f">{study}<" in dom
    child_runs = dom[dom.index(">Child runs<") :]
    for trial in trials:
        assert f">{trial}<" in child_runs, f"{trial} not among the child runs on {parent_page}"

    # The registered model's page: our version's row carries the alias champion.
    model_page = f"{mlflow_server}/#/models/{name}?{ML_MODE}"
    dom = rendered(model_page, tmp_path / "profile-model", [f">Version {version}<", "champion"])
    row = dom[dom.index(f">Version {version}<") :]
    following = re.search(r">Version \d+<", row[1:])
    row = row[: following.start() + 1] if following else row
    assert re.search(r"@\s*champion<", row), f"version {version} has no alias champion on {model_page}"
