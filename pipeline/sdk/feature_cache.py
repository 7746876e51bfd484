"""A content-addressed, on-disk cache for features that do not depend on a trial.

A frozen convolutional base maps an image to the same vector in every trial, so its output
is computed once per (data content, backbone, weights, input size, preprocessing) and reused
by every trial and every later run. The key is the SHA-256 of those parts; the entry is an
``.npz`` written atomically, then a JSON note saying what it was computed from, the SHA-256
of the ``.npz`` bytes and each array's shape and dtype. A read checks all of that (and the
shapes the caller expects): a truncated, empty, garbage or wrong-shaped entry is reported in
one line and recomputed, never trusted.

The ``.npz`` bytes depend only on the arrays (members in name order, a fixed zip date),
so the same features give the same file on every machine and after any interruption. A
large extraction goes through ``get_or_compute_sharded`` (``pipeline.sdk.feature_shards``):
resumable shards, shared between workers, published as one entry of this same format.

Entries are never overwritten by a different computation: a new backbone or weights file is a
new key, so the old entry stays readable until nobody needs it (content addressing).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import faults
from pipeline.sdk.checkpoints import replace_file

if TYPE_CHECKING:
    from pipeline.sdk.feature_shards import ComputeShard, Extraction

Expected = Mapping[str, Sequence[int | None]]  # array name -> shape, None for any length
CACHE_FOLDER = Path("mlops") / "features"  # under the user's cache home
DEFAULT_SHARD_SIZE = 256  # images per shard of a sharded extraction (setting feature_shard_size)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can record: no clock in the bytes


def default_dir(cache_home: Path | None = None) -> Path:
    """The default cache folder, ``<cache_home>/mlops/features``.

    Args:
        cache_home: the user's cache folder (``Environment.cache_home``: ``$XDG_CACHE_HOME``
            or ``~/.cache``); None takes ``~/.cache``. The caller reads the environment, so
            importing this module reads none.
    """
    return (cache_home if cache_home is not None else Path.home() / ".cache") / CACHE_FOLDER


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes: the identity of a data set's content."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())  # a copy, but hashing dominates anyway
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (weights files are keyed by content, not by name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DamagedEntry(ValueError):
    """A cache entry that does not match its note or the caller's expected shapes."""


class FeatureCache:
    """Arrays stored under the hash of what they were computed from.

    Args:
        root: the cache folder (created on first write).
        log: gets the one line about a damaged entry.

    Example::

        cache = FeatureCache(tmp_path, log=ctx.log)
        arrays, hit = cache.get_or_compute({"data": fp, "weights": w}, lambda: {"x": features}, {"x": (400, 512)})
    """

    def __init__(self, root: Path, log: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.log = log

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """The content address of ``parts`` (order-independent)."""
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / key[:2] / f"{key}.npz"

    def get_or_compute(
        self,
        parts: Mapping[str, Any],
        compute: Callable[[], dict[str, np.ndarray]],
        expect: Expected | None = None,
    ) -> tuple[dict[str, np.ndarray], bool]:
        """Return the cached arrays for ``parts``, computing and storing them on a miss.

        Args:
            parts: what the arrays were computed from (the key).
            compute: makes the arrays on a miss.
            expect: shapes the arrays must have (``None`` in a shape: any length); an entry
                that differs is recomputed.

        Returns:
            The arrays and whether they came from the cache.
        """
        key = self.key(parts)
        path = self.path(key)
        if path.exists():
            try:
                with entry_lock(path, exclusive=False):  # not while a worker writes the pair
                    return self.read_entry(path, expect), True
            except Exception as error:  # a damaged file fails any way its parser does: never trust it
                reason = error if isinstance(error, DamagedEntry) else f"{type(error).__name__}: {error}"
                self.log(f"feature cache: entry {key[:12]} damaged ({str(reason).splitlines()[0]}); recomputing")
        arrays = compute()
        faults.point("extract")  # computed, not yet cached
        with entry_lock(path, exclusive=True):
            self.write_entry(path, parts, arrays)
        return arrays, False

    def get_or_compute_sharded(
        self,
        parts: Mapping[str, Any],
        total: int,
        compute_shard: ComputeShard,
        expect: Expected | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        label: str = "features",
    ) -> Extraction:
        """Like ``get_or_compute`` for ``total`` rows computed ``shard_size`` at a time.

        Each shard is stored as it is finished, so a killed extraction resumes from the last
        finished shard; workers sharing the cache folder split the shards between them and
        wait for each other's. The published entry is the same file ``get_or_compute`` reads.

        Args:
            parts: what the arrays are computed from (the key).
            total: rows in all (images).
            compute_shard: ``compute_shard(start, stop)`` makes rows ``start:stop`` of every array.
            expect: shapes of the whole arrays (``None``: any length).
            shard_size: rows per shard.
            label: what its progress lines start with (``features``, ``align``).

        Returns:
            The arrays, whether they were all in the cache, and what this process computed.
        """
        from pipeline.sdk.feature_shards import ShardedExtraction  # it builds on this module

        return ShardedExtraction(self, parts, total, compute_shard, expect, shard_size, label).run()

    def read_entry(self, path: Path, expect: Expected | None = None) -> dict[str, np.ndarray]:
        """The arrays of the entry (or shard) at ``path``, checked against its note and ``expect``.

        Raises:
            DamagedEntry: or any error of the ``.npz`` parser, for a file not to be trusted.
        """
        note_path = path.with_suffix(".json")
        if not note_path.exists():
            raise DamagedEntry("no checksum note")
        note = json.loads(note_path.read_text())
        data = path.read_bytes()
        if not isinstance(note, dict) or "sha256" not in note:
            raise DamagedEntry("no checksum in its note")
        if hashlib.sha256(data).hexdigest() != note["sha256"]:
            raise DamagedEntry("checksum mismatch" if data else "empty file")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        layout = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()}
        if layout != note.get("arrays"):
            raise DamagedEntry(f"arrays {layout} differ from its note")
        self.check(arrays, expect)
        return arrays

    @staticmethod
    def check(arrays: Mapping[str, np.ndarray], expect: Expected | None) -> None:
        """Raise ``DamagedEntry`` when ``arrays`` lack an expected array or differ in its shape."""
        for name, shape in (expect or {}).items():
            if name not in arrays:
                raise DamagedEntry(f"no array {name!r}")
            found = arrays[name].shape
            if len(found) != len(shape) or any(e is not None and e != f for e, f in zip(shape, found, strict=True)):
                wanted = tuple("any" if e is None else e for e in shape)
                raise DamagedEntry(f"{name} has shape {found}, expected {wanted}")

    @staticmethod
    def write_entry(path: Path, parts: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """The ``.npz`` first, then its note: a note always describes a complete file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = npz_bytes(arrays)
        note = {
            "parts": dict(parts),
            "sha256": hashlib.sha256(data).hexdigest(),
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        }
        # Concurrent workers may race; both write the same content, each file in one rename.
        replace_file(path, data)
        faults.point("cache-write")  # the .npz without its note
        replace_file(path.with_suffix(".json"), json.dumps(note, indent=2, sort_keys=True, default=str).encode())


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` of ``arrays`` whose bytes depend on nothing else.

    ``np.savez`` writes members in the caller's dict order and leaves their date and
    permissions to ``zipfile``'s defaults for a bare name; here the members go in name order,
    uncompressed, with an explicit date (1980-01-01) and mode, so equal arrays give equal
    bytes however they were gathered. ``np.load`` reads the result like any ``.npz``.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o600 << 16  # fixed permissions too (ZipInfo's default is 0)
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


@contextlib.contextmanager
def entry_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """Hold a lock beside ``path`` so an ``.npz`` and its note are read and written as a pair."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115  (closed below)
    except OSError:  # a read-only cache volume: reads stay checked by the checksum
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
