"""What a registered model trained on, so that a later gate scores it only on examples it never saw.

A champion registered by a study with another seed, or on data that have grown since, trained
on images that now sit in this study's test split: scored there, it looks better than it is
(measured: a champion at test accuracy 0.957 on its own split scored 0.987 on another seed's
split of the same LFW-62 photos) and a new model is hardly ever promoted. So the identities
of the examples a model trained and was selected on (``Evaluation.fit_ids``) are logged with
its run, and the gate compares champion and challenger on the test examples outside them.

The record is a text artifact (one identity per line, sorted) and a run tag with its count
and SHA-256, checked when read back: a record that does not match is not trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk.contract import Evaluation

SEEN_ARTIFACT = "mlops/seen_examples.txt"
TAG_SEEN = "mlops.seen_examples"  # on the model's run: "<count> <sha256 of the artifact>"
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def record(client: Any, run_id: str, fit_ids: Sequence[str]) -> None:
    """Log the identities a model trained and was selected on with its run (idempotent)."""
    text = "\n".join(sorted(set(fit_ids))) + "\n"
    client.log_text(run_id, text, SEEN_ARTIFACT)
    count = text.count("\n")
    client.set_tag(run_id, TAG_SEEN, f"{count} {hashlib.sha256(text.encode()).hexdigest()}")


def read(client: Any, run_id: str | None) -> tuple[frozenset[str] | None, str]:
    """The identities recorded with ``run_id``, or ``None`` and why not."""
    if not run_id:
        return None, "the version names no run"
    try:
        tag = client.get_run(run_id).data.tags.get(TAG_SEEN)
    except Exception as error:  # MlflowException: the run was deleted, or the store moved
        return None, f"its run {run_id} cannot be read ({type(error).__name__})"
    if not tag:
        return None, "no record of the examples it trained on (registered before the record, or its model gives no ids)"
    with tempfile.TemporaryDirectory(prefix="mlops-seen-") as folder, _quiet_download():
        try:
            path = Path(client.download_artifacts(run_id, SEEN_ARTIFACT, folder))
            text = path.read_text()
        except Exception as error:  # MlflowException, OSError: a missing or unreadable artifact
            return None, f"its record of the examples it trained on is unreadable ({type(error).__name__})"
    count, _, digest = tag.partition(" ")
    if hashlib.sha256(text.encode()).hexdigest() != digest or str(text.count("\n")) != count:
        return None, f"its record of the examples it trained on does not match its checksum ({SEEN_ARTIFACT})"
    return frozenset(text.split()), ""


@contextlib.contextmanager
def _quiet_download() -> Iterator[None]:
    """No progress bar for one small file in the middle of the search's output."""
    before = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = before


def scores_on_unseen(
    metric: str, champion: Evaluation, challenger: Evaluation, keep: np.ndarray
) -> tuple[float, float]:
    """Both models' ``metric`` on the test examples ``keep`` marks (those the champion never saw).

    Args:
        metric: the goal's metric (``val_accuracy``).
        champion, challenger: the two models' evaluations on the same test split.
        keep: one flag per test example, in the order of ``challenger.ids``.

    Returns:
        ``(champion's value, challenger's value)``.

    Raises:
        ValueError: why they cannot be compared there (the labels differ, or the metric
            cannot be recomputed from labels and predictions).
    """
    if not np.array_equal(np.asarray(champion.y_true), np.asarray(challenger.y_true)):
        raise ValueError("its labels of this test split differ from the challenger's")
    # Recomputing the whole split's value first checks that labels and predictions are what evaluate scored.
    whole = metric_on(metric, challenger.y_true, challenger.y_pred, np.ones_like(keep))
    theirs, mine = (metric_on(metric, one.y_true, one.y_pred, keep) for one in (champion, challenger))
    if theirs is None or mine is None or whole is None or not math.isclose(whole, challenger.value, abs_tol=1e-6):
        raise ValueError(f"{metric} cannot be recomputed on the test examples it never trained on")
    return theirs, mine


def metric_on(metric: str, y_true: Any, y_pred: Any, keep: np.ndarray) -> float | None:
    """The goal's metric on the examples ``keep`` marks, from labels and predictions; ``None`` if unknown.

    Known: accuracy (predicted labels), and the regression errors RMSE, MSE, MAE and R².
    """
    name = metric.lower().removeprefix("val_").removeprefix("test_")
    truth, predicted = np.asarray(y_true)[keep], np.asarray(y_pred)[keep]
    if len(truth) == 0 or truth.shape != predicted.shape:
        return None
    if name in ("accuracy", "acc"):
        return float(np.mean(truth == predicted))
    error = truth.astype(float) - predicted.astype(float)
    if name in ("rmse", "root_mean_squared_error"):
        return float(math.sqrt(np.mean(error**2)))
    if name in ("mse", "mean_squared_error"):
        return float(np.mean(error**2))
    if name in ("mae", "mean_absolute_error"):
        return float(np.mean(np.abs(error)))
    if name in ("r2", "r_squared"):
        spread = float(np.sum((truth - truth.mean()) ** 2))
        return 1.0 - float(np.sum(error**2)) / spread if spread > 0 else None
    return None
