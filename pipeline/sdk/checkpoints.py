"""Checkpoint files that a kill cannot leave half-written and that are never trusted unchecked.

A checkpoint is written to a temporary file, flushed to disk, and renamed over the old one;
the old one is first renamed to ``<stem>.previous<suffix>``, so there is always a last good
state to go back to. Each file carries a SHA-256 of its content (``frame`` for opaque bytes
such as a joblib pickle; ``array_digest`` inside an ``.npz``). Reading tries the latest file,
then the previous one: a truncated, empty or garbage file is reported in one line, set aside
as ``<name>.damaged`` and skipped, so a trial restarts from its last good checkpoint or from
scratch, never with a traceback.

Example::

    write_atomic(folder / "state.bin", frame(payload))
    payload = load_good(folder / "state.bin", unframe, log)   # None: start from scratch
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipeline import faults

T = TypeVar("T")
_MAGIC = b"mlops-checkpoint/sha256:"
# The least time between two writes of a trial's resume state (setting checkpoint_seconds): the
# most training a kill loses. A head's epoch is 10-120 ms and its checkpoint 2-50 ms.
DEFAULT_CHECKPOINT_SECONDS = 1.0


class DamagedCheckpoint(ValueError):
    """A checkpoint whose content does not match its checksum or its expected layout."""


def previous_of(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``latest.npz`` -> ``latest.previous.npz``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _flushed_temp(path: Path, data: bytes) -> Path:
    """``data`` in a temporary file beside ``path`` (parents created), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())  # the rename must not reach the disk before the bytes do
    return tmp


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one rename: a reader sees the old bytes or the new, never half.

    For files that are not checkpoints (a feature-cache entry, a queued message, a summary):
    no previous copy is kept and no fault point is passed.
    """
    os.replace(_flushed_temp(path, data), path)


def write_atomic(path: Path, data: bytes, keep_previous: bool = True) -> None:
    """Replace ``path`` by ``data`` in one rename, keeping the file it replaces as the previous one."""
    tmp = _flushed_temp(path, data)
    if keep_previous and path.exists():
        os.replace(path, previous_of(path))
    faults.point("checkpoint-write")  # between the renames: only *.previous and the temporary file
    os.replace(tmp, path)


def frame(payload: bytes) -> bytes:
    """``payload`` behind a header holding its SHA-256."""
    return _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def unframe(data: bytes) -> bytes:
    """The payload of a ``frame``d file.

    Raises:
        DamagedCheckpoint: when the header is missing or the checksum does not match.
    """
    if not data:
        raise DamagedCheckpoint("empty file")
    if not data.startswith(_MAGIC):
        raise DamagedCheckpoint("no checksum header")
    header, _, payload = data.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != header[len(_MAGIC) :]:
        raise DamagedCheckpoint("checksum mismatch")
    return payload


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over arrays' names, shapes, dtypes and bytes (what an ``.npz`` checkpoint stores)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def why(error: BaseException) -> str:
    """A short reason for the one-line report: ``BadZipFile: File is not a zip file``."""
    if isinstance(error, DamagedCheckpoint):
        return str(error)
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def load_good(path: Path, read: Callable[[bytes], T], log: Callable[[str], None]) -> T | None:
    """The latest checkpoint that ``read`` accepts: ``path``, else the previous one, else ``None``.

    Args:
        path: the latest checkpoint.
        read: turns a file's bytes into the state; raises (any exception) for a damaged file.
        log: gets one line per damaged file.
    """
    candidates = [path, previous_of(path)]
    for index, candidate in enumerate(candidates):
        try:
            data = candidate.read_bytes()
        except FileNotFoundError:
            continue
        try:
            return read(data)
        except Exception as error:  # a damaged file can fail any way its parser does: never trust it
            fallback = "its previous checkpoint" if index == 0 and candidates[1].exists() else "scratch"
            log(f"checkpoint {candidate}: damaged ({why(error)}); restarting the trial from {fallback}")
            os.replace(candidate, candidate.with_name(candidate.name + ".damaged"))
    return None


RESUME_STATE = "latest.npz"  # the epoch-by-epoch state a killed trial resumes from (``keras.fastfit``)


def tidy_finished(folder: Path, *, pruned: bool) -> None:
    """Remove what a finished trial's checkpoint folder no longer needs.

    A pruned trial's weights are never used again: the whole folder goes. A complete trial
    keeps its best epoch's weights but not its resume state (``latest.npz`` and the one
    before it), which only a trial that has yet to finish needs.
    """
    if pruned:
        shutil.rmtree(folder, ignore_errors=True)
        return
    latest = folder / RESUME_STATE
    for path in (latest, previous_of(latest)):
        path.unlink(missing_ok=True)
