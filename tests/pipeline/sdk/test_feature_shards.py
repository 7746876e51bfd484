"""Sharded feature extraction: resume after a crash, shared by workers, published byte-identical.

The unit tests use a cheap numpy compute; the slow ones run the real ``mlops features`` on the
face model, SIGKILL it mid-extraction, and start two workers on one cache.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.sdk.feature_cache import FeatureCache
from pipeline.sdk.feature_shards import Extraction, ShardedExtraction
from tests.conftest import FACE_WEIGHTS
from tests.pipeline.stub_model import environment, write_stub

ROOT = Path(__file__).resolve().parents[3]
PARTS = {"data": "d1", "backbone": "toy", "input_size": 8}
TOTAL, SIZE = 10, 3  # shards 0:3 3:6 6:9 9:10
SHARD_LINE = re.compile(r"^features: shard (\d+)/(\d+) \((\d+)/(\d+) images\) \d+ img/s$", re.MULTILINE)


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows start:stop of a toy feature matrix (row i is i, i/2) and of a label vector."""
    index = np.arange(start, stop, dtype=np.float32)
    return {"features": np.stack([index, index / 2], axis=1), "ids": np.arange(start, stop)}


class Counting:
    """A ``compute_shard`` that records its calls and can fail on one shard (a crash)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.crash_at = crash_at

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if start == self.crash_at:
            raise KeyboardInterrupt  # what a kill looks like to the shards written so far
        self.calls.append((start, stop))
        return rows(start, stop)


def extract(root: Path, compute, lines: list[str] | None = None, size: int = SIZE):
    cache = FeatureCache(root, log=(lines if lines is not None else []).append)
    return cache.get_or_compute_sharded(PARTS, TOTAL, compute, {"features": (TOTAL, 2)}, size)


def entry(root: Path) -> Path:
    return FeatureCache(root).path(FeatureCache.key(PARTS))


def test_an_interrupted_extraction_resumes_with_the_missing_shards_only(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path / "a", Counting(crash_at=6))  # shards 1 and 2 stored, 3 not
    assert not entry(tmp_path / "a").exists()  # nothing published while shards are missing
    lines: list[str] = []
    resumed = Counting()
    result = extract(tmp_path / "a", resumed, lines)
    assert resumed.calls == [(6, 9), (9, 10)]
    assert (result.hit, result.computed, result.images) == (False, [3, 4], 4)
    assert (
        lines[0]
        == f"features: extracting {FeatureCache.key(PARTS)[:12]} in 4 shard(s) of 3 images; 2 already there, resuming"
    )
    assert [m.group(1, 3) for m in SHARD_LINE.finditer("\n".join(lines))] == [("3", "9"), ("4", "10")]
    np.testing.assert_array_equal(result.arrays["features"], rows(0, TOTAL)["features"])
    # The published entry is the file of an uninterrupted run, byte for byte, and the shards are gone.
    extract(tmp_path / "b", Counting())
    assert entry(tmp_path / "a").read_bytes() == entry(tmp_path / "b").read_bytes()
    assert (
        entry(tmp_path / "a").with_suffix(".json").read_bytes()
        == entry(tmp_path / "b").with_suffix(".json").read_bytes()
    )
    assert not entry(tmp_path / "a").with_name(f"{FeatureCache.key(PARTS)}.shards").exists()


def test_the_published_entry_is_read_by_get_or_compute_and_never_recomputed(tmp_path: Path) -> None:
    extract(tmp_path, Counting())
    again = Counting()
    result = extract(tmp_path, again)
    assert (result.hit, again.calls, result.computed) == (True, [], [])
    arrays, hit = FeatureCache(tmp_path).get_or_compute(
        PARTS, lambda: pytest.fail("recomputed"), {"features": (TOTAL, 2)}
    )
    assert hit is True and arrays["ids"].tolist() == list(range(TOTAL))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:50]), "checksum mismatch"),
        (lambda p: p.with_suffix(".json").unlink(), "no checksum note"),  # killed between its two renames
    ],
)
def test_a_damaged_shard_is_said_in_one_line_and_recomputed(tmp_path: Path, damage, why: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path, Counting(crash_at=9))  # shards 1-3 stored
    extraction = ShardedExtraction(FeatureCache(tmp_path), PARTS, TOTAL, rows, None, SIZE)
    damage(extraction.shard_path(1))
    lines: list[str] = []
    resumed = Counting()
    result = extract(tmp_path, resumed, lines)
    assert resumed.calls == [(3, 6), (9, 10)]
    assert f"features: shard 2/4 damaged ({why}); recomputing" in lines
    np.testing.assert_array_equal(result.arrays["features"], rows(0, TOTAL)["features"])


def test_a_damaged_published_entry_is_said_and_extracted_again(tmp_path: Path) -> None:
    extract(tmp_path, Counting())
    good = entry(tmp_path).read_bytes()
    entry(tmp_path).write_bytes(b"\x00garbage")
    lines: list[str] = []
    again = Counting()
    result = extract(tmp_path, again, lines)
    assert lines[0] == f"feature cache: entry {FeatureCache.key(PARTS)[:12]} damaged (checksum mismatch); recomputing"
    assert len(again.calls) == 4 and result.hit is False
    assert entry(tmp_path).read_bytes() == good


def test_a_worker_skips_a_shard_another_holds_and_waits_for_it(tmp_path: Path) -> None:
    """Worker A is inside shard 1; worker B computes the others, then waits for A's, then reads."""
    inside, release, b_waits = threading.Event(), threading.Event(), threading.Event()
    computed: list[tuple[str, int]] = []

    def slow_first(start: int, stop: int) -> dict[str, np.ndarray]:
        computed.append(("a", start))
        if start == 0:
            inside.set()
            assert release.wait(60)
        return rows(start, stop)

    def b_compute(start: int, stop: int) -> dict[str, np.ndarray]:
        computed.append(("b", start))
        return rows(start, stop)

    def b_log(line: str) -> None:
        b_lines.append(line)
        if "another worker" in line:
            b_waits.set()

    a_lines: list[str] = []
    b_lines: list[str] = []
    results: dict[str, Extraction] = {}
    a = threading.Thread(target=lambda: results.update(a=extract(tmp_path, slow_first, a_lines)))
    a.start()
    assert inside.wait(60)
    cache_b = FeatureCache(tmp_path, log=b_log)
    b = threading.Thread(
        target=lambda: results.update(b=cache_b.get_or_compute_sharded(PARTS, TOTAL, b_compute, None, SIZE))
    )
    b.start()
    assert b_waits.wait(60)  # B did shards 2-4 and now waits on shard 1, which A still holds
    release.set()
    a.join(60)
    b.join(60)
    assert sorted(start for _, start in computed) == [0, 3, 6, 9]  # each shard once
    assert computed[0] == ("a", 0) and {w for w, s in computed if s != 0} == {"b"}
    assert sum(line.startswith("features: published") for line in a_lines + b_lines) == 1
    assert "features: shard 1/4 is being computed by another worker; waiting" in b_lines
    for name in ("a", "b"):
        np.testing.assert_array_equal(results[name].arrays["features"], rows(0, TOTAL)["features"])


def test_a_compute_that_returns_the_wrong_number_of_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"compute_shard\(0, 3\) made features of shape \(2, 2\): not one row each"):
        extract(tmp_path, lambda start, stop: rows(start, stop - 1))


# --- the real command --------------------------------------------------------------------------

MODEL = ROOT / "models" / "face_vgg16"


def features_command(cache: Path, *extra: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "mlops"),
        "features",
        str(MODEL),
        "--weights",
        str(FACE_WEIGHTS),
        "--set",
        "data.input_size=32",
        "--cache-dir",
        str(cache),
        "--feature-shard-size",
        "32",  # Olivetti's 400 faces: 13 shards
        *extra,
    ]


def shards_computed(output: str) -> list[int]:
    return [int(m.group(1)) for m in SHARD_LINE.finditer(output)]


def feature_entries(cache: Path) -> list[Path]:
    """The cache's feature entries (published or half-published): not the decoded faces' entry."""
    found = []
    for entry in cache.glob("*/*.npz"):
        note = entry.with_suffix(".json")
        if "faces" not in (json.loads(note.read_text())["parts"] if note.exists() else {}):
            found.append(entry)
    return found


def published(cache: Path) -> Path:
    (found,) = feature_entries(cache)
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, offline_env: dict[str, str]) -> Path:
    """The entry of one uninterrupted ``mlops features`` run."""
    cache = tmp_path_factory.mktemp("reference") / "cache"
    done = subprocess.run(
        features_command(cache), env={**environment(), **offline_env}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert shards_computed(done.stdout) == list(range(1, 14))
    return published(cache)


@pytest.mark.slow
def test_sigkill_mid_extraction_then_rerun_computes_only_the_missing_shards(
    tmp_path: Path, offline_env: dict[str, str], reference: Path
) -> None:
    cache, env = tmp_path / "cache", {**environment(), **offline_env}
    first = subprocess.Popen(features_command(cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list(cache.glob("*/*.shards/*.json")):  # the first shard is stored
            assert first.poll() is None, "exited before its first shard was stored"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    finally:
        first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not feature_entries(cache)  # killed before publishing: nothing half-published
    shard_dir = next(cache.glob("*/*.shards"))
    # A shard counts once its note is there (written after its .npz); shard n starts at 32 * (n - 1).
    stored = {int(note.stem.split("-")[0]) // 32 + 1 for note in shard_dir.glob("*.json")}
    assert stored  # at least the shard we waited for

    rerun = subprocess.run(features_command(cache), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"; {len(stored)} already there, resuming" in rerun.stdout
    assert shards_computed(rerun.stdout) == sorted(set(range(1, 14)) - stored)
    assert published(cache).read_bytes() == reference.read_bytes()
    assert not shard_dir.exists()


@pytest.mark.slow
def test_two_workers_on_one_cache_compute_each_shard_once(
    tmp_path: Path, offline_env: dict[str, str], reference: Path
) -> None:
    cache, env = tmp_path / "cache", {**environment(), **offline_env}
    workers = [
        subprocess.Popen(features_command(cache), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert sorted(shards_computed(outputs[0]) + shards_computed(outputs[1])) == list(range(1, 14)), outputs
    assert published(cache).read_bytes() == reference.read_bytes()


def test_features_refuses_a_shard_size_below_one_in_one_line(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub")
    command = [str(Path(sys.executable).parent / "mlops"), "features", str(model), "--cache-dir", str(tmp_path / "c")]
    done = subprocess.run(
        [*command, "--feature-shard-size", "0"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == "error: setting feature_shard_size=0 (from --feature-shard-size) must be at least 1 image\n"
    plain = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "stub: its model defines no prepare_features(); it caches no features, nothing to do\n"
