from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.sdk.feature_cache import FeatureCache, fingerprint


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


def make_entry(tmp_path: Path) -> tuple[FeatureCache, list[str], dict, Path]:
    lines: list[str] = []
    cache = FeatureCache(tmp_path, log=lines.append)
    parts = {"data": "abc", "input_size": 64}
    cache.get_or_compute(parts, lambda: {"features": np.ones((4, 3), np.float32)})
    return cache, lines, parts, cache.path(cache.key(parts))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:60]), "checksum mismatch"),  # truncated
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"\x00garbage" * 20), "checksum mismatch"),
        (lambda p: p.with_suffix(".json").unlink(), "no checksum note"),  # written before this version
    ],
)
def test_a_damaged_entry_is_reported_in_one_line_and_recomputed(tmp_path: Path, damage, why: str) -> None:
    cache, lines, parts, path = make_entry(tmp_path)
    damage(path)
    fresh = {"features": np.full((4, 3), 2.0, np.float32)}
    arrays, hit = cache.get_or_compute(parts, lambda: fresh, expect={"features": (4, None)})
    assert hit is False and arrays["features"][0, 0] == 2.0
    assert lines == [f"feature cache: entry {cache.key(parts)[:12]} damaged ({why}); recomputing"]
    again, hit = cache.get_or_compute(parts, lambda: fresh, expect={"features": (4, None)})
    assert hit is True and again["features"][0, 0] == 2.0  # the rewritten entry is good


def test_a_cached_array_of_the_wrong_shape_is_never_trusted(tmp_path: Path) -> None:
    cache, lines, parts, path = make_entry(tmp_path)
    # A consistent entry (checksum and note agree) that does not fit: 4 rows cached, 5 images now.
    arrays, hit = cache.get_or_compute(parts, lambda: {"features": np.zeros((5, 3), np.float32)}, {"features": (5, 3)})
    assert hit is False and arrays["features"].shape == (5, 3)
    why = "features has shape (4, 3), expected (5, 3)"
    assert lines == [f"feature cache: entry {cache.key(parts)[:12]} damaged ({why}); recomputing"]


def test_an_entry_whose_arrays_differ_from_its_note_is_recomputed(tmp_path: Path) -> None:
    cache, lines, parts, path = make_entry(tmp_path)
    note = json.loads(path.with_suffix(".json").read_text())
    note["arrays"]["features"]["shape"] = [9, 3]
    path.with_suffix(".json").write_text(json.dumps(note))
    assert cache.get_or_compute(parts, lambda: {"features": np.ones((4, 3), np.float32)})[1] is False
    assert len(lines) == 1 and "differ from its note" in lines[0]


def test_an_entry_s_bytes_depend_only_on_its_arrays(tmp_path: Path) -> None:
    """Name order, no clock: a resumed extraction publishes the bytes of an uninterrupted one."""
    parts = {"data": "abc"}
    x, y = np.arange(6, dtype=np.float32).reshape(3, 2), np.arange(3)
    first, second = FeatureCache(tmp_path / "a"), FeatureCache(tmp_path / "b")
    first.get_or_compute(parts, lambda: {"y": y, "x": x})
    second.get_or_compute(parts, lambda: {"x": x, "y": y})
    path = first.path(first.key(parts))
    with zipfile.ZipFile(path) as archive:  # np.savez keeps the caller's order: y first in `first`
        assert [(i.filename, i.date_time) for i in archive.infolist()] == [
            ("x.npy", (1980, 1, 1, 0, 0, 0)),
            ("y.npy", (1980, 1, 1, 0, 0, 0)),
        ]
    assert path.read_bytes() == second.path(second.key(parts)).read_bytes()
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["x"], x)
