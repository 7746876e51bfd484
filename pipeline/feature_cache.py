"""A content-addressed, on-disk cache for features that do not depend on a trial.

A frozen convolutional base maps an image to the same vector in every trial, so its output
is computed once per (data content, backbone, weights, input size, preprocessing) and reused
by every trial and every later run. The key is the SHA-256 of those parts; the entry is an
``.npz`` written atomically beside a JSON note saying what it was computed from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlops" / "features"


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


class FeatureCache:
    """Arrays stored under the hash of what they were computed from.

    Args:
        root: the cache folder (created on first write).

    Example::

        cache = FeatureCache(tmp_path)
        arrays, hit = cache.get_or_compute({"data": fp, "weights": w}, lambda: {"x": features})
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """The content address of ``parts`` (order-independent)."""
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / key[:2] / f"{key}.npz"

    def get_or_compute(
        self, parts: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], bool]:
        """Return the cached arrays for ``parts``, computing and storing them on a miss.

        Returns:
            The arrays and whether they came from the cache.
        """
        key = self.key(parts)
        path = self.path(key)
        if path.exists():
            try:
                with np.load(path) as data:
                    return {name: data[name] for name in data.files}, True
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged entry is recomputed, never trusted
        arrays = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)  # concurrent workers may race; both write the same content
        path.with_suffix(".json").write_text(json.dumps(dict(parts), indent=2, sort_keys=True, default=str))
        return arrays, False
