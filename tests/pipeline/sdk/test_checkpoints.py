"""Checkpoint files: atomic, checksummed, and a damaged one never trusted (pipeline/sdk/checkpoints.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.sdk.checkpoints import frame, load_good, previous_of, unframe, write_atomic
from pipeline.sdk.contract import load_plugin
from tests.contract_helpers import Reports, study_context, trial_context

ROOT = Path(__file__).resolve().parents[3]


def test_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    write_atomic(path, frame(b"one"))
    write_atomic(path, frame(b"two"))
    assert unframe(path.read_bytes()) == b"two"
    assert unframe(previous_of(path).read_bytes()) == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin", "state.previous.bin"]  # no temp left


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty file"),
        (b"random bytes", "no checksum header"),
        (frame(b"a payload")[:-3], "checksum mismatch"),  # truncated
    ],
)
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "state.bin"
    write_atomic(path, frame(b"good"))
    write_atomic(path, frame(b"newer"))
    path.write_bytes(content)
    lines: list[str] = []
    assert load_good(path, unframe, lines.append) == b"good"
    assert lines == [f"checkpoint {path}: damaged ({why}); restarting the trial from its previous checkpoint"]
    previous_of(path).write_bytes(b"")
    lines.clear()
    assert load_good(path, unframe, lines.append) is None  # nothing good left: from scratch
    assert lines == [f"checkpoint {previous_of(path)}: damaged (empty file); restarting the trial from scratch"]


@pytest.fixture(scope="module")
def diabetes() -> tuple[Any, Any]:
    plugin = load_plugin(ROOT / "models" / "diabetes_regression")
    return plugin, plugin.prepare(study_context(plugin, Path("/nonexistent-cache")))


def test_diabetes_restarts_a_trial_whose_checkpoint_is_damaged(diabetes: tuple[Any, Any], tmp_path: Path) -> None:
    plugin, data = diabetes
    params = {"estimator": "ridge", "alpha": 1.0}
    first = plugin.train(data, params, trial_context(tmp_path, Reports(), goal_metric="val_rmse"))
    (tmp_path / "estimator.joblib").write_bytes(b"\x80\x04garbage, not a pickle")
    lines: list[str] = []
    context = dataclasses.replace(trial_context(tmp_path, Reports(), goal_metric="val_rmse"), log=lines.append)
    again = plugin.train(data, params, context)
    assert again.value == pytest.approx(first.value)  # refitted from scratch: same data, same result
    assert lines == [
        f"checkpoint {tmp_path / 'estimator.joblib'}: damaged (no checksum header); restarting the trial from scratch"
    ]
