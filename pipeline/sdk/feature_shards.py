"""Sharded feature extraction: resumable after a kill, shared by workers, published whole.

A backbone over a large data set takes minutes; a kill must not throw that away, and two
workers starting on one cache must not both do it. So the rows (images) are cut into shards
of ``shard_size``, and each shard is an entry of its own under ``<key>.shards/`` beside the
final entry: an ``.npz`` and its checksum note, each written by one rename, named by its row
range (``00000256-00000512.npz``) so workers with different shard sizes never mix rows.

A worker claims a shard with a non-blocking ``flock`` on the shard's ``.lock`` file: it skips
shards another worker holds, computes the rest, then waits for the held ones (a shard whose
worker died is free again and computed by whoever gets it). When every shard is there, the
shards are concatenated into the final entry, in exactly the format and bytes of
``FeatureCache.get_or_compute`` (``npz_bytes`` is deterministic), published by rename, and
the shard folder is removed.

Locking: shard work holds the final entry's lock shared, publishing holds it exclusive. So
the shard folder is never removed under a worker, and a worker that sees the entry published
stops and reads it. Nobody waits for the entry lock while holding a shard lock: no deadlock.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import faults
from pipeline.sdk.feature_cache import DamagedEntry, Expected, FeatureCache, entry_lock

ComputeShard = Callable[[int, int], dict[str, np.ndarray]]  # (start, stop) -> rows start:stop of each array


@dataclass
class Extraction:
    """The outcome of a sharded extraction.

    Attributes:
        arrays: the whole arrays (the published entry's content).
        hit: the entry was published before this call: nothing computed or assembled here.
        path: the published entry.
        shards: shards in all.
        computed: the (1-based) numbers of the shards this process computed.
        images: rows this process computed.
        seconds: time this process spent in ``compute_shard``.
    """

    arrays: dict[str, np.ndarray]
    hit: bool
    path: Path
    shards: int
    computed: list[int] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0


class _Shard(Enum):
    DONE = "done"  # stored and checked (by us now, or found)
    HELD = "held"  # another worker holds its lock
    PUBLISHED = "published"  # the whole entry appeared: stop


class ShardedExtraction:
    """One extraction of ``total`` rows into ``cache`` under the key of ``parts``.

    Args:
        cache: the feature cache (its folder and its ``log``).
        parts: what the arrays are computed from (the key).
        total: rows in all.
        compute_shard: makes rows ``start:stop`` of every array.
        expect: shapes of the whole arrays; ``None`` in a shape: any length.
        shard_size: rows per shard (at least 1).
        label: what its log lines start with (``features``, ``align``).

    Example::

        result = ShardedExtraction(cache, key, len(images), lambda a, b: {"x": f(images[a:b])}, None, 256).run()
    """

    def __init__(
        self,
        cache: FeatureCache,
        parts: Mapping[str, Any],
        total: int,
        compute_shard: ComputeShard,
        expect: Expected | None,
        shard_size: int,
        label: str = "features",
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, not {shard_size}")
        self.cache, self.parts, self.total, self.label = cache, parts, total, label
        self.compute_shard, self.expect, self.log = compute_shard, expect, cache.log
        self.key = cache.key(parts)
        self.path = cache.path(self.key)
        self.folder = self.path.with_name(f"{self.key}.shards")
        starts = range(0, total, shard_size)
        self.ranges = [(start, min(start + shard_size, total)) for start in starts] or [(0, 0)]
        self.result = Extraction({}, False, self.path, len(self.ranges))

    def run(self) -> Extraction:
        """The published arrays: read, or computed shard by shard (resuming), then published."""
        arrays = self._published_entry()
        if arrays is not None:
            self.result.arrays, self.result.hit = arrays, True
            return self.result
        self._announce()
        while True:  # a pass ends published, or with a shard gone again (damaged, removed): go on
            arrays = self._publish() if self._work_through_shards() else self._published_entry()
            if arrays is not None:
                self.result.arrays = arrays
                return self.result

    def shard_path(self, index: int) -> Path:
        """Where shard ``index`` (0-based) is stored."""
        start, stop = self.ranges[index]
        return self.folder / f"{start:08d}-{stop:08d}.npz"

    def _announce(self) -> None:
        found = sum(1 for i in range(len(self.ranges)) if _complete(self.shard_path(i)))
        size = self.ranges[0][1] - self.ranges[0][0]
        there = f"; {found} already there, resuming" if found else ""
        self.log(f"{self.label}: extracting {self.key[:12]} in {len(self.ranges)} shard(s) of {size} images{there}")

    def _work_through_shards(self) -> bool:
        """Compute every free shard, then wait for the held ones; False when another worker published."""
        held = []
        for index in range(len(self.ranges)):
            outcome = self._shard(index, block=False)
            if outcome is _Shard.PUBLISHED:
                return False
            if outcome is _Shard.HELD:
                held.append(index)
        for index in held:
            self.log(f"{self.label}: shard {index + 1}/{len(self.ranges)} is being computed by another worker; waiting")
            if self._shard(index, block=True) is _Shard.PUBLISHED:
                return False
        return True

    def _shard(self, index: int, block: bool) -> _Shard:
        """Claim shard ``index``; compute and store it unless it is already there."""
        with entry_lock(self.path, exclusive=False):  # a publisher (exclusive) waits for us
            if _complete(self.path):
                return _Shard.PUBLISHED
            self.folder.mkdir(parents=True, exist_ok=True)
            with _claimed(self.shard_path(index).with_suffix(".lock"), block) as claimed:
                if not claimed:
                    return _Shard.HELD
                if self._read_shard(index) is None:
                    self._compute(index)
                return _Shard.DONE

    def _compute(self, index: int) -> None:
        start, stop = self.ranges[index]
        began = time.perf_counter()
        arrays = self.compute_shard(start, stop)
        for name, array in arrays.items():
            if array.shape[:1] != (stop - start,):
                raise ValueError(f"compute_shard({start}, {stop}) made {name} of shape {array.shape}: not one row each")
        seconds = time.perf_counter() - began
        faults.point("extract")  # a shard computed, not yet cached
        self.cache.write_entry(self.shard_path(index), {"key": self.key, "rows": [start, stop]}, arrays)
        self.result.computed.append(index + 1)
        self.result.images += stop - start
        self.result.seconds += seconds
        rate = (stop - start) / seconds if seconds > 0 else float("inf")
        self.log(f"{self.label}: shard {index + 1}/{len(self.ranges)} ({stop}/{self.total} images) {rate:.0f} img/s")

    def _read_shard(self, index: int) -> dict[str, np.ndarray] | None:
        """Shard ``index``'s arrays, or None when missing or damaged (said in one line)."""
        path = self.shard_path(index)
        if not path.exists() and not path.with_suffix(".json").exists():
            return None
        start, stop = self.ranges[index]
        expect = {name: (stop - start, *shape[1:]) for name, shape in (self.expect or {}).items()}
        try:
            arrays = self.cache.read_entry(path, expect)
            if any(array.shape[:1] != (stop - start,) for array in arrays.values()):
                raise DamagedEntry(f"not {stop - start} rows")
            return arrays
        except Exception as error:  # any parser error: never trust it
            reason = error if isinstance(error, DamagedEntry) else f"{type(error).__name__}: {error}"
            first = str(reason).splitlines()[0] if str(reason) else type(error).__name__
            self.log(f"{self.label}: shard {index + 1}/{len(self.ranges)} damaged ({first}); recomputing")
            return None

    def _publish(self) -> dict[str, np.ndarray] | None:
        """Concatenate the shards into the entry and remove them; None when one is missing."""
        with entry_lock(self.path, exclusive=True):  # no shard is being written now
            if _complete(self.path):  # another worker was first
                return self.cache.read_entry(self.path, self.expect)
            shards = [self._read_shard(index) for index in range(len(self.ranges))]
            if any(shard is None for shard in shards):
                return None
            found = [shard for shard in shards if shard is not None]
            arrays = {name: np.concatenate([shard[name] for shard in found]) for name in found[0]}
            FeatureCache.check(arrays, self.expect)  # a compute that disagrees with expect: a bug, stop
            self.cache.write_entry(self.path, self.parts, arrays)
            shutil.rmtree(self.folder, ignore_errors=True)
        count = len(self.ranges)
        self.log(f"{self.label}: published {self.key[:12]} ({self.total} images, {count} shards) at {self.path}")
        return arrays

    def _published_entry(self) -> dict[str, np.ndarray] | None:
        """The published entry's arrays; a damaged one is said, removed, and None returned."""
        if not self.path.exists() and not self.path.with_suffix(".json").exists():
            return None
        try:
            with entry_lock(self.path, exclusive=False):
                return self.cache.read_entry(self.path, self.expect)
        except Exception as error:  # a damaged file fails any way its parser does: never trust it
            reason = error if isinstance(error, DamagedEntry) else f"{type(error).__name__}: {error}"
            self.log(f"feature cache: entry {self.key[:12]} damaged ({str(reason).splitlines()[0]}); recomputing")
        with entry_lock(self.path, exclusive=True):
            with contextlib.suppress(Exception):  # another worker may have just published a good one
                return self.cache.read_entry(self.path, self.expect)
            # Out of the way, so that "the entry exists" means "published" to every worker.
            for stale in (self.path, self.path.with_suffix(".json")):
                stale.unlink(missing_ok=True)
        return None


def _complete(path: Path) -> bool:
    """An entry (or shard) whose ``.npz`` and note are both there (checked when read)."""
    return path.exists() and path.with_suffix(".json").exists()


@contextlib.contextmanager
def _claimed(lock_path: Path, block: bool) -> Iterator[bool]:
    """Hold ``lock_path`` exclusively; yields False when ``block`` is off and another holds it."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
