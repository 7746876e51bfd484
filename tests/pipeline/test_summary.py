"""``GoalSpec``: which way is better, and when a goal is met; ``TuneSummary`` read back checked."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.errors import MlopsError
from pipeline.summary import GoalSpec, Promotion, TuneSummary


def test_better_follows_the_direction() -> None:
    accuracy = GoalSpec(metric="val_accuracy", direction="maximize", target=0.9)
    rmse = GoalSpec(metric="val_rmse", direction="minimize", target=50.0)
    assert accuracy.better(0.8, 0.7) and not accuracy.better(0.7, 0.8) and not accuracy.better(0.7, 0.7)
    assert rmse.better(40.0, 50.0) and not rmse.better(50.0, 40.0) and not rmse.better(40.0, 40.0)
    assert not accuracy.better(math.nan, 0.1) and not rmse.better(math.nan, 100.0)
    assert (accuracy.sign, rmse.sign) == (">=", "<=")


def test_reached_includes_the_target_and_never_a_nan() -> None:
    accuracy = GoalSpec(metric="val_accuracy", direction="maximize", target=0.9)
    rmse = GoalSpec(metric="val_rmse", direction="minimize", target=50.0)
    assert accuracy.reached(0.9) and accuracy.reached(0.95) and not accuracy.reached(0.89)
    assert rmse.reached(50.0) and rmse.reached(10.0) and not rmse.reached(50.1)
    assert not accuracy.reached(math.nan) and not rmse.reached(math.nan)


def test_with_confidence_the_lower_bound_of_an_accuracy_decides() -> None:
    goal = GoalSpec(metric="val_accuracy", direction="maximize", target=0.9, confidence=True)
    assert not goal.reached(0.95, lower_bound=0.85)
    assert goal.reached(0.95, lower_bound=0.9)
    assert goal.reached(0.95)  # no interval (too few examples known): the value itself
    rmse = GoalSpec(metric="val_rmse", direction="minimize", target=50.0, confidence=True)
    assert rmse.reached(40.0, lower_bound=60.0)  # an error has no interval: the value decides


@pytest.mark.parametrize(
    "content",
    ["", '{"model": "face_vgg16"', "[1, 2]", '{"model": "m"}', '{"goal": {"metric": "val_accuracy", "nope": 1}}'],
)
def test_a_summary_that_is_not_ours_is_one_clear_error(tmp_path: Path, content: str) -> None:
    """summary.json lies where the tune stage (pushed code) writes: read back, it is checked, not trusted."""
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(MlopsError) as error:
        TuneSummary.read(path)
    assert str(error.value).startswith(f"{path}: not a summary mlops tune wrote (")


def test_a_written_summary_reads_back_equal(tmp_path: Path) -> None:
    summary = TuneSummary(model="m", goal=GoalSpec("val_accuracy", "maximize", 0.9), goal_met=False, best=None)
    summary.write(tmp_path / "runs" / "summary.json")
    assert TuneSummary.read(tmp_path / "runs" / "summary.json") == summary
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["summary.json"]  # no temporary file left


def test_the_promotion_round_trips_and_an_older_summary_without_it_still_reads(tmp_path: Path) -> None:
    decision = Promotion("kept", "not better", "test_accuracy", 2, 0.9, (0.85, 0.94), 1, 0.92, (0.87, 0.95), "recorded")
    summary = TuneSummary(model="m", goal=GoalSpec(), goal_met=True, best=None, promotion=decision)
    summary.write(tmp_path / "summary.json")
    back = TuneSummary.read(tmp_path / "summary.json")
    assert back == summary and back.promotion is not None and back.promotion.champion_interval == (0.87, 0.95)
    assert back.promotion.headline == "champion v1 kept; v2 is the challenger" and not back.promotion.promoted

    older = json.loads(summary.to_json())
    del older["promotion"]  # written before the promotion gate existed
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert TuneSummary.read(tmp_path / "older.json").promotion is None

    older["promotion"] = {**asdict(decision), "verdict": "crowned"}
    (tmp_path / "bad.json").write_text(json.dumps(older))
    with pytest.raises(MlopsError, match="promotion verdict 'crowned' is unknown"):
        TuneSummary.read(tmp_path / "bad.json")
