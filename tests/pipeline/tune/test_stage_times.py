"""Where a search's time goes: ``StageClock`` laps and the model's own feature time split out."""

from __future__ import annotations

from pipeline.tune.stage_times import StageClock


def clock_with(seconds: dict[str, float]) -> StageClock:
    clock = StageClock()
    clock.seconds = dict(seconds)
    return clock


def test_features_are_split_out_of_prepare_and_listed_where_they_ran() -> None:
    clock = clock_with({"setup": 1.0, "prepare": 30.0, "search": 40.0, "finish": 5.0})
    clock.split_features({"features_seconds": 25.0})
    assert clock.seconds == {"setup": 1.0, "prepare": 5.0, "features": 25.0, "search": 40.0, "finish": 5.0}
    assert list(clock.seconds) == ["setup", "prepare", "features", "search", "finish"]
    assert clock.line() == "time: setup 1.0s, prepare 5.0s, features 25.0s, search 40.0s, finish 5.0s"


def test_a_feature_time_above_prepare_is_capped_and_a_model_without_one_keeps_prepare_whole() -> None:
    clock = clock_with({"setup": 1.0, "prepare": 3.0, "search": 2.0})
    clock.split_features({"features_seconds": 9.0})  # measured with another clock: never more than prepare
    assert clock.seconds["features"] == 3.0 and clock.seconds["prepare"] == 0.0
    plain = clock_with({"setup": 1.0, "prepare": 3.0})
    plain.split_features({})
    assert plain.seconds == {"setup": 1.0, "prepare": 3.0}
