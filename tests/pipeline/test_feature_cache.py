from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.feature_cache import FeatureCache, fingerprint


def test_computes_once_then_hits(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"features": np.arange(6, dtype=np.float32).reshape(2, 3)}

    parts = {"data": "abc", "weights": "w", "input_size": 64}
    first, hit1 = cache.get_or_compute(parts, compute)
    second, hit2 = cache.get_or_compute(dict(reversed(parts.items())), compute)
    assert (hit1, hit2) == (False, True)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["features"], second["features"])
    assert cache.path(cache.key(parts)).with_suffix(".json").exists()


def test_other_parts_miss_and_damaged_entries_are_recomputed(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    make = lambda: {"x": np.ones(2)}  # noqa: E731
    cache.get_or_compute({"input_size": 64}, make)
    assert cache.get_or_compute({"input_size": 96}, make)[1] is False
    cache.path(cache.key({"input_size": 64})).write_bytes(b"not an npz")
    arrays, hit = cache.get_or_compute({"input_size": 64}, make)
    assert hit is False and arrays["x"].tolist() == [1.0, 1.0]


def test_fingerprint_tracks_content() -> None:
    a = np.zeros((2, 2), np.uint8)
    b = a.copy()
    assert fingerprint(a) == fingerprint(b)
    b[0, 0] = 1
    assert fingerprint(a) != fingerprint(b)
