from __future__ import annotations

import pytest

from pipeline.tune.confidence import wilson_interval


def test_perfect_score_on_80_images_is_not_certainty() -> None:
    low, high = wilson_interval(1.0, 80)
    assert high == 1.0
    assert low == pytest.approx(0.9542, abs=1e-3)


def test_known_value_matches_textbook() -> None:
    # p = 0.9 on n = 100: Wilson 95% is about (0.826, 0.945).
    low, high = wilson_interval(0.9, 100)
    assert low == pytest.approx(0.8256, abs=1e-3)
    assert high == pytest.approx(0.9448, abs=1e-3)


def test_interval_narrows_with_more_examples() -> None:
    small = wilson_interval(0.9, 50)
    large = wilson_interval(0.9, 5000)
    assert small[1] - small[0] > large[1] - large[0]
    assert wilson_interval(0.5, 0) == (0.0, 1.0)
