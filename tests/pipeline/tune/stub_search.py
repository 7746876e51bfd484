"""One search on the stub model, opened in-process: a real SQLite study and a real MLflow store.

What ``tune()`` does before its first trial, without the CLI, TensorFlow or a subprocess, so
the objective and the end of a search are tested in a second or two::

    study, run, printed = open_search(tmp_path, tracking_uri, target=0.1)
    objective = Objective(run)
    study.optimize(objective, n_trials=2)
    summary = finish_study(study, run, objective)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from pipeline.config.settings import TuneSettings
from pipeline.sdk.contract import load_plugin
from pipeline.tracking.tracker import Tracker
from pipeline.tune.search_run import SearchRun
from pipeline.tune.study import open_study
from tests.pipeline.stub_model import write_stub


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the session: creating its schema takes seconds, a test's runs do not."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def model_name(tmp_path: Path) -> str:
    """A model (and experiment) name of this test alone: tests share one tracking store."""
    return tmp_path.name.lower().replace("[", "-").replace("]", "")


def open_search(
    tmp_path: Path, tracking_uri: str, *, target: float = 1.0, epochs: int = 2, space: str = "", **data: Any
) -> tuple[optuna.Study, SearchRun, list[str]]:
    """The stub model's study ``s``, its search (with an open MLflow parent run), and what it prints.

    Args:
        tmp_path: where the study, the model folder and the run folder go.
        tracking_uri: the MLflow store.
        target: the goal ``val_accuracy >= target`` (the stub scores its ``x``, 0.5 to 0.9).
        epochs: epochs per trial.
        space: an extra search parameter (``write_stub``'s ``space``).
        data: extra prepared data (``fail=True``: every trial raises; ``constant=0.7``: every trial scores 0.7).
    """
    name = model_name(tmp_path)
    plugin = load_plugin(write_stub(tmp_path / "stub", epochs=epochs, target=target, name=name, space=space))
    settings = TuneSettings(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", runs_dir=tmp_path / "runs", pruner="none", seed=7
    )
    study, _ = open_study("s", plugin.manifest.goal.direction, settings)
    tracker = Tracker(tracking_uri, name)
    parent_id = tracker.parent_run(None, "s", {"model": name})
    run_dir = tmp_path / "runs" / name
    prepared = {"epochs": epochs, "sleep": 0.0, **data}
    lines: list[str] = []
    checkpoints = run_dir / "s" / "checkpoints"
    tags = {"git_commit": "abc"}
    run = SearchRun(plugin, prepared, plugin.manifest.goal, tracker, parent_id, run_dir, checkpoints, tags, settings)
    run.log = lines.append
    return study, run, lines
