"""Failpoints: kill this process at a named moment, to prove a rerun recovers (a testing aid).

Like Optuna's test hooks or etcd's ``gofail`` failpoints, the pipeline marks the moments
where a crash is hardest to survive with ``point("name")``. Unarmed (always, outside the
fault-injection test) a point is one dictionary lookup and does nothing. ``arm`` is called
once, by the CLI entry point, with the environment variable ``MLOPS_FAULT_AT``;
``checkpoint-write:3`` then SIGKILLs the process the third time it reaches the point
``checkpoint-write``: no handler, no ``finally``, no flush runs, exactly like the OOM killer
or a pulled plug.

Points (where they sit):

- ``extract``: the frozen base's features are computed, not yet cached
  (``pipeline/sdk/feature_cache.py``).
- ``cache-write``: a feature-cache ``.npz`` is written, its checksum note not yet.
- ``epoch``: a trial has reported an epoch to Optuna (mid-trial; ``pipeline/tune/objective.py``).
- ``checkpoint-write``: between the two renames of a checkpoint write: the old checkpoint is
  already ``*.previous``, the new one still a temporary file (``pipeline/sdk/checkpoints.py``).
- ``mlflow-log``: a trial's params, metrics and state tag are logged, its run not yet closed.
- ``register``: hit 1 after the best model is logged, before it is registered; hit 2 after
  the registration is claimed, before the registry is written (``pipeline/tune/results.py``).

Example::

    MLOPS_FAULT_AT=checkpoint-write:3 mlops tune models/face_vgg16   # dies by SIGKILL (-9)
"""

from __future__ import annotations

import os
import signal

from pipeline.errors import MlopsError

POINTS = ("extract", "cache-write", "epoch", "checkpoint-write", "mlflow-log", "register")

_armed: dict[str, int] = {}  # point -> the hit that kills; empty: every point is a no-op
_hits: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """Arm one point from ``NAME:N`` (kill at its N-th hit); ``None`` or ``""`` disarms all.

    Raises:
        MlopsError: when ``spec`` names no known point or N is not a positive integer.
    """
    _armed.clear()
    _hits.clear()
    if not spec:
        return
    name, _, count = spec.strip().partition(":")
    hit = int(count) if count.isdigit() else 0
    if name not in POINTS or hit < 1:
        raise MlopsError(f"MLOPS_FAULT_AT={spec!r}: use NAME:N with N >= 1 and NAME one of {', '.join(POINTS)}")
    _armed[name] = hit


def point(name: str) -> None:
    """Mark a failpoint; SIGKILL this process when it is the armed point's armed hit."""
    if name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
