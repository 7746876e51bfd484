"""A tiny model folder (numpy + scikit-learn, no TensorFlow) for real ``mlops tune`` subprocesses.

Its ``train`` runs ``params.epochs`` epochs of ``params.sleep`` seconds each, reports
``val_accuracy`` (= the sampled ``x``) after every epoch and checkpoints the epoch in
``state.json``, so a retried trial resumes after its last finished epoch. Every epoch is
appended to ``epochs.log`` in the trial's checkpoint folder (what the tests read). Prepared
data with ``fail: true`` makes every trial raise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODEL_PY = """
import json
import time

import numpy as np

from pipeline.sdk.contract import Evaluation, ExportedModel, TrainResult


def prepare(ctx):
    ctx.notes.extend(ctx.params.get("notes", []))  # what the report tells about the data
    if "fingerprint" in ctx.params:  # which data set it stands for (warm starts match on it)
        ctx.facts["data_fingerprint"] = ctx.params["fingerprint"]
    return dict(ctx.params)


def train(data, params, trial):
    from sklearn.dummy import DummyRegressor

    folder = trial.checkpoint_dir
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "state.json"
    start, history = 0, []
    if state.exists():
        saved = json.loads(state.read_text())
        start, history = saved["epoch"] + 1, saved["history"]
    if data.get("fail"):
        raise RuntimeError("boom")  # a broken model: the trial fails
    value = float(params["x"]) if data.get("constant") is None else float(data["constant"])
    for epoch in range(start, int(data["epochs"])):
        time.sleep(float(data["sleep"]))
        history.append(value)
        state.write_text(json.dumps({"epoch": epoch, "history": history}))
        with open(folder / "epochs.log", "a") as log:
            log.write(f"{trial.number} {epoch}\\n")
        trial.report(epoch, {"val_accuracy": value, "epoch_seconds": float(data["sleep"])})
    model = DummyRegressor(constant=value, strategy="constant").fit(np.zeros((2, 1)), np.zeros(2))
    return TrainResult(value, model, {"val_accuracy": history}, n_val=None)


def evaluate(data, result):
    return Evaluation(float(result.value), 1)


def export(data, result):
    return ExportedModel("sklearn", result.model, np.zeros((2, 1)), ["scikit-learn"])
"""


def write_stub(
    folder: Path,
    *,
    epochs: int = 2,
    sleep: float = 0.0,
    target: float = 1.0,
    name: str = "stub",
    notes: str = "[]",
    constant: float | None = None,
    tune: str = "",
    space: str = "",
) -> Path:
    """A model folder with the goal ``val_accuracy >= target``.

    1.0 is never met (``x`` stays below 0.9); 0.1 is met by any trial. ``notes`` (a YAML
    list) are what its ``prepare`` says about the data. ``constant``: every trial scores
    it (no trial after the first improves). ``tune`` (``", staged: {...}"``) and ``space``
    (``"blocks: {type: int, low: 0, high: 2}"``) add tune settings and a search parameter.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_PY)
    scored = "" if constant is None else f", constant: {constant}"
    (folder / "model.yaml").write_text(
        f"""name: {name}
kind: regression
framework: scikit-learn
goal: {{metric: val_accuracy, direction: maximize, target: {target}}}
tune: {{seed: 7, pruner: none, timeout: 300{tune}}}
params: {{epochs: {epochs}, sleep: {sleep}, notes: {notes}{scored}}}
search_space:
  x: {{type: float, low: 0.5, high: 0.9}}
  k: {{type: int, low: 1, high: 1000}}
{f"  {space}" if space else ""}
"""
    )
    return folder


def tune_command(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    """``mlops tune`` with every store (SQLite) and folder under ``tmp_path``."""
    return [
        str(Path(sys.executable).parent / "mlops"),
        "tune",
        str(model),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--storage",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def environment() -> dict[str, str]:
    """This environment without a developer's ``MLOPS_*``/``MLFLOW_*`` settings, unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_tune(tmp_path: Path, model: Path, *extra: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """Run ``mlops tune`` to its end."""
    return subprocess.run(
        tune_command(tmp_path, model, *extra),
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
