"""Fault injection (issue 10): SIGKILL ``mlops tune`` at 10 seeded moments of one search.

Each round runs the same real ``mlops tune`` command with ``MLOPS_FAULT_AT=POINT:HIT``
(``pipeline/faults.py``): the process SIGKILLs itself the HIT-th time it reaches POINT.
The plan is drawn from ``random.Random(SEED)`` but built so every round reaches its point:

1. ``extract:1`` and ``cache-write:1`` (seeded order): only a run whose feature cache misses
   reaches them, so they come first; the second also meets the damaged entry the first
   ``cache-write`` kill left (an ``.npz`` without its note).
2. six rounds of ``epoch``, ``checkpoint-write`` and ``mlflow-log`` (each at least once,
   seeded hits) under an unreachable goal (a Wilson lower bound never reaches 1) and a trial
   budget no round can spend: every round is still searching when its point comes.
3. ``register:1`` (the best model logged, not registered) and ``register:2`` (registration
   claimed, registry not written) under a goal the study meets (val_accuracy >= 0.5).

Then one clean run must finish (exit 0), and the stores must agree.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT

MODEL = ROOT / "models" / "face_vgg16"
SEED = 20261202
UNREACHABLE = ("--goal", "1", "--goal-confidence")  # a Wilson lower bound stays below 1
REACHABLE = ("--goal", "0.5", "--no-goal-confidence")  # met by the study's best trial
MAX_TRIALS = 40  # more than the mid-search rounds can finish (at most 6 x 5 trials)
N_CLASSES = 40  # Olivetti: 40 people

Round = tuple[str, int, tuple[str, ...]]


def fault_plan(rng: random.Random) -> list[Round]:
    """Ten (point, hit, goal) rounds, each certain to reach its point.

    Mid-search hits stay low enough to come within a handful of trials: a fresh trial reports
    at least six epochs (median pruner warm-up 5, early-stopping patience 10, 10+ epochs) and
    writes a checkpoint per epoch; every trial closes its MLflow run once.
    """
    first = ["extract", "cache-write"]
    rng.shuffle(first)
    middle = ["epoch", "checkpoint-write", "mlflow-log", *rng.choices(["epoch", "checkpoint-write", "mlflow-log"], k=3)]
    rng.shuffle(middle)
    highest = {"epoch": 30, "checkpoint-write": 30, "mlflow-log": 3}
    return [
        *((point, 1, UNREACHABLE) for point in first),
        *((point, rng.randint(1, highest[point]), UNREACHABLE) for point in middle),
        ("register", 1, REACHABLE),
        ("register", 2, REACHABLE),
    ]


def tune(tmp_path: Path, env: dict[str, str], goal: tuple[str, ...], fault: str | None) -> subprocess.CompletedProcess:
    command = [
        *MLOPS,
        "tune",
        str(MODEL),
        "--weights",
        str(FACE_WEIGHTS),
        *goal,
        "--max-trials",
        str(MAX_TRIALS),
        "--set",
        "data.input_size=32",
        "--storage",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    round_env = {**env, "MLOPS_FAULT_AT": fault} if fault else env
    return subprocess.run(command, cwd=tmp_path, env=round_env, capture_output=True, text=True, timeout=420)


def tail(done: subprocess.CompletedProcess) -> str:
    return f"\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_ten_seeded_sigkills_then_optuna_and_mlflow_agree(
    offline_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After 10 kills and one clean run, the study and the tracking store tell one story.

    "Agree" means: every COMPLETE or PRUNED Optuna trial names (``mlflow_run_id``) its own
    nested MLflow run, FINISHED, whose ``optuna.state`` tag is the trial's state and whose
    per-epoch curve has no epoch twice (a COMPLETE one: each epoch Optuna saw, from 0,
    once); the nested runs tagged COMPLETE (and PRUNED) are
    exactly as many as Optuna's COMPLETE (and PRUNED) trials; no run of the experiment is
    RUNNING; no two COMPLETE/PRUNED trials have the same parameters (a retry of a killed
    trial reuses its origin's parameters on purpose: it is that trial, resumed); one model
    version is registered, aliased ``champion``, from the best trial's run, and it loads
    and predicts the 40 people from preprocessed test images.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env.update({**offline_env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"})
    plan = fault_plan(random.Random(SEED))
    assert {p for p, _, _ in plan} >= {"extract", "cache-write", "epoch", "checkpoint-write", "mlflow-log", "register"}

    outputs = []
    for number, (point, hit, goal) in enumerate(plan, 1):
        started = time.perf_counter()
        done = tune(tmp_path, env, goal, f"{point}:{hit}")
        seconds = time.perf_counter() - started
        with capsys.disabled():  # progress in the CI log
            print(f"\nround {number:2d}: {point}:{hit} -> exit {done.returncode} in {seconds:.1f}s")
        assert done.returncode == -signal.SIGKILL, f"round {number} ({point}:{hit}) was not killed" + tail(done)
        assert "Traceback" not in done.stderr, f"round {number}" + tail(done)
        outputs.append(done)
    cache_kill = next(i for i, (point, _, _) in enumerate(plan) if point == "cache-write")
    assert "damaged (no checksum note); recomputing" in outputs[cache_kill + 1].stdout, tail(outputs[cache_kill + 1])

    started = time.perf_counter()
    final = tune(tmp_path, env, REACHABLE, None)
    with capsys.disabled():
        print(f"\nclean run -> exit {final.returncode} in {time.perf_counter() - started:.1f}s")
    assert final.returncode == 0, tail(final)
    assert "Traceback" not in final.stderr, tail(final)

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    (name,) = [n for n in optuna.get_all_study_names(storage) if "." not in n]  # the rest are claim markers
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert any(t.state == TrialState.FAIL for t in trials), "no kill left a trial to retry"
    _check_parameters(trials, finished)
    _check_mlflow(tmp_path, finished, trials)
    first_met = min((t for t in trials if t.state == TrialState.COMPLETE and t.value >= 0.5), key=lambda t: t.number)
    _check_champion(tmp_path, offline_env, first_met.user_attrs["mlflow_run_id"])


def _check_parameters(trials: list[Any], finished: list[Any]) -> None:
    """No parameters drawn twice; each retry carries its origin's parameters."""
    drawn = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(drawn)) == len(drawn), [(t.number, t.params) for t in finished]
    by_number = {t.number: t for t in trials}
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert retries
    for retry in retries:
        origin = by_number[retry.system_attrs["failed_trial"]]
        assert retry.params == origin.params, (retry.number, origin.number)


def _check_mlflow(tmp_path: Path, finished: list[Any], trials: list[Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("face_vgg16")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1  # every rerun re-opened the study's one parent run
    nested = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert len(nested) == len(runs) - 1

    run_ids = [t.user_attrs.get("mlflow_run_id") for t in finished]
    assert len(set(run_ids)) == len(run_ids), "two finished trials share an MLflow run"
    for trial, run_id in zip(finished, run_ids, strict=True):
        run = nested[run_id]
        assert run.info.status == "FINISHED", (trial.number, run.info.status)
        assert run.data.tags.get("optuna.state") == trial.state.name, (trial.number, run.data.tags)
        steps = sorted(m.step for m in client.get_metric_history(run_id, "epoch_val_accuracy"))
        assert len(steps) == len(set(steps)), f"trial {trial.number}: epochs logged twice: {steps}"
        if trial.state == TrialState.COMPLETE:  # its whole curve, from epoch 0
            assert steps == list(range(len(trial.intermediate_values))), (trial.number, steps)
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        in_optuna = sum(t.state == state for t in trials)
        in_mlflow = sum(r.data.tags.get("optuna.state") == state.name for r in nested.values())
        assert in_mlflow == in_optuna, f"{state.name}: {in_mlflow} MLflow runs, {in_optuna} Optuna trials"


def _check_champion(tmp_path: Path, offline_env: dict[str, str], best_run_id: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    from pipeline.sdk.contract import load_plugin

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    versions = client.search_model_versions("name = 'face_vgg16'")
    assert [v.run_id for v in versions] == [best_run_id]  # once, from the first trial that met the goal
    assert client.get_model_version_by_alias("face_vgg16", "champion").version == versions[0].version

    load_plugin(MODEL)  # makes the model's modules importable
    faces = __import__("mlops_models.face_vgg16.faces", fromlist=["load_faces"])
    images = faces.load_faces({"source": "olivetti", "input_size": 32, "data_home": offline_env["SCIKIT_LEARN_DATA"]})
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:  # the registered model names people in raw photos (models/face_vgg16/serving.py)
        model = mlflow.pyfunc.load_model("models:/face_vgg16@champion").unwrap_python_model()
    finally:
        mlflow.set_tracking_uri(previous)
    probabilities = np.asarray(model.probabilities(list(images.images[:5])))
    assert probabilities.shape == (5, N_CLASSES)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_a_failpoint_kills_at_its_armed_hit_and_is_inert_otherwise() -> None:
    script = (
        "from pipeline import faults\n"
        "import sys\n"
        "faults.arm(sys.argv[1])\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    faults.point('checkpoint-write')\n"
        "    faults.point('epoch')\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, "epoch:3"], capture_output=True, text=True, timeout=60)
    assert (killed.returncode, killed.stdout.split()) == (-signal.SIGKILL, ["0", "1", "2"])
    unarmed = subprocess.run([sys.executable, "-c", script, ""], capture_output=True, text=True, timeout=60)
    assert (unarmed.returncode, unarmed.stdout.split()) == (0, ["0", "1", "2", "3", "4"])


@pytest.mark.parametrize("spec", ["epoch", "epoch:0", "epoch:x", "nowhere:1"])
def test_a_bad_fault_spec_is_one_clear_error(spec: str) -> None:
    from pipeline import faults
    from pipeline.errors import MlopsError

    with pytest.raises(MlopsError, match="MLOPS_FAULT_AT=.*use NAME:N"):
        faults.arm(spec)
    faults.arm(None)
