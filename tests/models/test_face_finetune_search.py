"""A real ``mlops tune`` of the face model that opens fine-tuning when its heads stall (marker ``slow``).

A copy of ``models/face_vgg16`` with a narrow head space (cheap trials) and
``staged: {param: fine_tune_blocks, stall_trials: 1}``: heads first; the first head that does
not beat the best opens block 5, seeded from the best head's parameters.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.cli import tune_in
from tests.conftest import FACE_WEIGHTS, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("offline")]  # offline: data and weights from ../shared

NARROW = {
    "n_layers": {"type": "int", "low": 1, "high": 1},
    "units": {"type": "int", "low": 32, "high": 64, "per_layer": "n_layers"},
    "dropout": {"type": "float", "low": 0.0, "high": 0.2},
    "activation": {"type": "categorical", "choices": ["relu"]},
    "optimizer": {"type": "categorical", "choices": ["adam"]},
    "learning_rate": {"type": "float", "low": 1.0e-3, "high": 3.0e-3, "log": True},
    "batch_size": {"type": "categorical", "choices": [64]},
    "epochs": {"type": "int", "low": 4, "high": 6},
    "fine_tune_blocks": {"type": "int", "low": 0, "high": 2},
    "fine_tune_learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-4, "log": True},
}


def staged_copy(folder: Path) -> Path:
    model = folder / "face_vgg16"
    shutil.copytree(ROOT / "models" / "face_vgg16", model, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = yaml.safe_load((model / "model.yaml").read_text())
    manifest["search_space"] = NARROW
    manifest["tune"]["staged"] = {"param": "fine_tune_blocks", "stall_trials": 1}
    del manifest["tune"]["first_trials"]  # linear heads, batch 32 and 80 epochs: outside NARROW (an error)
    manifest["params"].update({"warmup_epochs": 1, "fine_tune_epochs": 2, "feature_shift": 0})
    (model / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return model


def test_heads_first_then_block_5_seeded_from_the_best_head(tmp_path: Path) -> None:
    model = staged_copy(tmp_path)
    flags = ["--weights", str(FACE_WEIGHTS), "--set", "data.input_size=32", "--max-trials", "6", "--goal", "0.999"]
    done, summary = tune_in(tmp_path, model, *flags, "--pruner", "none", expect=3, timeout=1200)
    study = optuna.load_study(study_name=summary["study_name"], storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    blocks = [t.params["fine_tune_blocks"] for t in trials]
    opened = blocks.index(1)  # block 5 opens, and nothing before it fine-tuned
    assert set(blocks[:opened]) == {0}, blocks
    best_head = max((t for t in trials[:opened]), key=lambda t: t.value or 0.0)
    seeded = trials[opened]
    assert {k: v for k, v in seeded.params.items() if k != "fine_tune_blocks"} == {
        k: v for k, v in best_head.params.items() if k != "fine_tune_blocks"
    }
    line = f"staged: fine_tune_blocks <= 1 from trial {opened} "
    assert any(row.startswith(line) for row in done.stdout.splitlines()), done.stdout[-3000:]
    assert any("features: block4_pool extracted in " in row for row in done.stdout.splitlines())
    staged: dict[str, Any] = summary["staged"]
    assert staged["param"] == "fine_tune_blocks" and staged["opened"]["1"] == opened
    # Once every stage is open the sampler chooses freely, so heads may follow: count them all.
    assert staged["trials"] == {str(k): blocks.count(k) for k in sorted(set(blocks))}, (staged, blocks)
    assert staged["seconds"]["1"] > 0
    assert summary["trials_total"] == 6 and summary["registered_model"] is None  # the goal is out of reach


def test_fine_tune_blocks_fixed_at_0_keeps_every_trial_a_head(tmp_path: Path) -> None:
    # model.yaml: params.fine_tune_blocks is "fixed for every trial, instead of searched".
    model = staged_copy(tmp_path)
    flags = ["--weights", str(FACE_WEIGHTS), "--set", "data.input_size=32", "--set", "params.fine_tune_blocks=0"]
    done, summary = tune_in(tmp_path, model, *flags, "--max-trials", "4", "--goal", "0.999", expect=3, timeout=900)
    study = optuna.load_study(study_name=summary["study_name"], storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 4 and all("fine_tune_blocks" not in t.params for t in study.trials)
    rows = done.stdout.splitlines()
    assert "staged: off, fine_tune_blocks is fixed by params (one flat search)" in rows, done.stdout[-3000:]
    assert not any("_pool outputs" in row for row in rows)  # no block's inputs were ever extracted
    assert summary["staged"] is None
