"""Crash safety for real: SIGKILL ``mlops tune`` mid-trial, run it again, lose nothing.

Slow (the face model, twice); ``test_search.py::test_a_trial_whose_process_died_is_retried_from_its_checkpoint``
covers the same recovery in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT

MODEL = ROOT / "models" / "face_vgg16"


def command(tmp_path: Path) -> list[str]:
    # An unreachable goal and no early stopping or pruning: every trial runs all its epochs.
    return [
        *MLOPS,
        "tune",
        str(MODEL),
        "--weights",
        str(FACE_WEIGHTS),
        "--goal",
        "1",
        "--goal-confidence",  # unreachable: a Wilson lower bound stays below 1
        "--max-trials",
        "4",
        "--pruner",
        "none",
        "--set",
        "params.patience=null",
        "--set",
        "data.input_size=32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]


def kill_mid_trial(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], int]:
    """Start the search; SIGKILL it once a second trial has checkpointed an epoch."""
    process = subprocess.Popen(
        command(tmp_path), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    checkpoints = tmp_path / "mlops-runs" / "face_vgg16"
    victim = None
    while time.monotonic() < deadline and process.poll() is None and victim is None:
        if any(line.startswith("trial   0") for line in lines):
            running = [p for p in checkpoints.glob("*/checkpoints/trial-*/latest.npz") if "trial-0000" not in str(p)]
            if running:
                victim = int(running[0].parent.name.split("-")[1])
                os.kill(process.pid, signal.SIGKILL)
        time.sleep(0.005)
    process.wait(timeout=30)
    reader.join(timeout=5)
    assert victim is not None, "never saw a second trial running:\n" + "".join(lines)
    assert process.returncode == -signal.SIGKILL
    return lines, victim


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_finishes_the_study(offline_env: dict, tmp_path: Path) -> None:
    env = {**os.environ, **offline_env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env["MLOPS_CHECKPOINT_SECONDS"] = "0"  # a write after every epoch: these trials last under a second
    before, victim = kill_mid_trial(tmp_path, env)
    storage = f"sqlite:///{tmp_path / 'mlops-runs' / 'optuna.db'}"
    name = next(n for n in optuna.get_all_study_names(storage) if not n.endswith(".parent"))
    completed_before = {
        t.number: t.value
        for t in optuna.load_study(study_name=name, storage=storage).trials
        if t.state == TrialState.COMPLETE
    }
    assert completed_before, "".join(before)

    again = subprocess.run(command(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 3, again.stdout + again.stderr  # the goal is unreachable: an honest "not met"
    assert f"trial(s) {victim} died with their process" in again.stdout
    assert "(resumed at epoch" in again.stdout  # the interrupted trial went on from its checkpoint

    trials = optuna.load_study(study_name=name, storage=storage).trials
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    assert [t.number for t in by_state[TrialState.FAIL]] == [victim]
    assert len(by_state[TrialState.COMPLETE]) == 4
    assert {n: v for n, v in ((t.number, t.value) for t in trials) if n in completed_before} == completed_before
    retry = [t for t in by_state[TrialState.COMPLETE] if t.system_attrs.get("failed_trial") == victim]
    assert len(retry) == 1 and retry[0].params == by_state[TrialState.FAIL][0].params

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("face_vgg16")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1  # the restart re-opened the same parent run
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert len(children) == len(by_state[TrialState.COMPLETE])  # one run per trial, none counted twice
    resumed = [r for r in children if r.data.tags.get("optuna.retry_of") == str(victim)]
    assert len(resumed) == 1
    history = client.get_metric_history(resumed[0].info.run_id, "epoch_val_accuracy")
    assert sorted(m.step for m in history) == list(range(len(history)))  # every epoch once, from 0
