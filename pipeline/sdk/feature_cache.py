"""A content-addressed, on-disk cache for features that do not depend on a trial.

A frozen convolutional base maps an image to the same vector in every trial, so its output
is computed once per (data content, backbone, weights, input size, preprocessing) and reused
by every trial and every later run. The key is the SHA-256 of those parts; the entry is an
``.npz`` written atomically, then a JSON note saying what it was computed from, the SHA-256
of the ``.npz`` bytes and each array's shape and dtype. A read checks all of that (and the
shapes the caller expects): a truncated, empty, garbage or wrong-shaped entry is reported in
one line and recomputed, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import faults
from pipeline.sdk.checkpoints import replace_file

Expected = Mapping[str, Sequence[int | None]]  # array name -> shape, None for any length
CACHE_FOLDER = Path("mlops") / "features"  # under the user's cache home


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
                with _locked(path, exclusive=False):  # not while a worker writes the pair
                    return self._read(path, expect), True
            except Exception as error:  # a damaged file fails any way its parser does: never trust it
                reason = error if isinstance(error, DamagedEntry) else f"{type(error).__name__}: {error}"
                self.log(f"feature cache: entry {key[:12]} damaged ({str(reason).splitlines()[0]}); recomputing")
        arrays = compute()
        faults.point("extract")  # computed, not yet cached
        with _locked(path, exclusive=True):
            self._write(path, parts, arrays)
        return arrays, False

    def _read(self, path: Path, expect: Expected | None) -> dict[str, np.ndarray]:
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
        self._check(arrays, expect)
        return arrays

    @staticmethod
    def _check(arrays: Mapping[str, np.ndarray], expect: Expected | None) -> None:
        for name, shape in (expect or {}).items():
            if name not in arrays:
                raise DamagedEntry(f"no array {name!r}")
            found = arrays[name].shape
            if len(found) != len(shape) or any(e is not None and e != f for e, f in zip(shape, found, strict=True)):
                wanted = tuple("any" if e is None else e for e in shape)
                raise DamagedEntry(f"{name} has shape {found}, expected {wanted}")

    @staticmethod
    def _write(path: Path, parts: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """The ``.npz`` first, then its note: a note always describes a complete file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        data = buffer.getvalue()
        note = {
            "parts": dict(parts),
            "sha256": hashlib.sha256(data).hexdigest(),
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        }
        # Concurrent workers may race; both write the same content, each file in one rename.
        replace_file(path, data)
        faults.point("cache-write")  # the .npz without its note
        replace_file(path.with_suffix(".json"), json.dumps(note, indent=2, default=str).encode())


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[None]:
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
