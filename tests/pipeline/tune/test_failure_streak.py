"""Three trials failing the same way in a row end the search with that reason, not a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from pipeline.errors import MlopsError
from pipeline.tune.failure_streak import REASON_ATTR, FailureStreak

STUB_YAML = """
name: stub
goal: {metric: val_accuracy, direction: maximize, target: 0.9}
metrics: [val_accuracy]
tune: {max_trials: 10, timeout: 600}
search_space:
  x: {type: float, low: 0.0, high: 1.0}
"""
STUB_PY = """
def prepare(ctx):
    return None


def train(data, params, trial):
    raise RuntimeError("boom")  # any exception fails its trial, not the whole search


def evaluate(data, result):
    raise AssertionError("never reached")
"""


def run(objective, streak: FailureStreak, n_trials: int = 10) -> optuna.Study:  # type: ignore[no-untyped-def]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(streak.watch(objective), n_trials=n_trials, callbacks=[streak], catch=(ValueError,))
    return study


def test_three_identical_failures_stop_the_study() -> None:
    streak = FailureStreak("models/stub")

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        raise ValueError("boom\nsecond line")

    study = run(objective, streak)
    assert len(study.trials) == 3
    assert [t.user_attrs[REASON_ATTR] for t in study.trials] == ["ValueError: boom"] * 3
    with pytest.raises(MlopsError) as error:
        streak.raise_if_stopped()
    assert str(error.value) == (
        "3 trials in a row failed with ValueError: boom; fix the model's code or search space in models/stub, "
        "then run again"
    )


def test_a_success_or_another_reason_resets_the_count() -> None:
    outcomes = iter(["a", "a", "ok", "a", "b", "a", "a", "ok", "a", "a"])

    def objective(trial: optuna.Trial) -> float:
        outcome = next(outcomes)
        if outcome == "ok":
            return 1.0
        raise ValueError(outcome)

    streak = FailureStreak()
    study = run(objective, streak)
    assert len(study.trials) == 10  # never three of one reason in a row
    streak.raise_if_stopped()  # nothing to raise
    assert streak.reason is None


@pytest.mark.slow
def test_tune_stops_after_three_identical_failures(tmp_path: Path) -> None:
    """The real CLI on a model whose train() always raises: exit 2 after exactly 3 failed trials."""
    model = tmp_path / "models" / "stub"
    model.mkdir(parents=True)
    (model / "model.yaml").write_text(STUB_YAML)
    (model / "model.py").write_text(STUB_PY)
    (tmp_path / "mlops.yaml").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env["MLOPS_CONFIG"] = str(tmp_path / "mlops.yaml")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlops"),
            "tune",
            str(model),
            "--storage",
            f"sqlite:///{tmp_path}/optuna.db",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: 3 trials in a row failed with RuntimeError: boom; fix the model's code or search space in {model}, "
        "then run again"
    ]
    assert done.stderr.count("Traceback (most recent call last)") == 1  # Optuna's, for the first failure only

    storage = f"sqlite:///{tmp_path}/optuna.db"
    (name,) = [n for n in optuna.get_all_study_names(storage) if not n.endswith(".parent")]
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("stub")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [r.info.status for r in parents] == ["FAILED"]
    assert sorted(r.info.status for r in trials) == ["FAILED"] * 3
