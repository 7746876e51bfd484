"""Stop a search whose trials keep failing the same way.

A trial that raises is recorded as FAIL and the search goes on: right for a rare numerical
blow-up, wasteful for a broken model, which would fail every trial until the timeout. So
the objective is wrapped to note why a trial failed, and a callback stops the study once
``limit`` trials in a row (of this worker) failed with the same reason::

    streak = FailureStreak("models/face_vgg16")
    study.optimize(streak.watch(objective), callbacks=[streak], catch=(ValueError,))
    streak.raise_if_stopped(on_stop=lambda: tracker.finish(parent_id, "FAILED"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.errors import MlopsError

REASON_ATTR = "fail_reason"  # a trial's user attribute: "ValueError: boom"
LIMIT = 3
_OPTUNA_LOGGER = "optuna.study._optimize"  # logs each failed trial, with its traceback


def failure_reason(error: BaseException) -> str:
    """``ValueError: boom``: the exception's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class _TracebackOnce(logging.Filter):
    """Let Optuna show a failure's traceback the first time only: the same one thrice is noise."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            reason = failure_reason(record.exc_info[1])
            if reason in self.shown:
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} (traceback above)"
            self.shown.add(reason)
        return True


class FailureStreak:
    """An ``optimize`` callback that stops the study after ``limit`` identical failures in a row.

    Args:
        where: the model folder, named in the message.
        limit: consecutive failed trials with one reason that end the search.

    Attributes:
        reason: the repeated failure (``ValueError: boom``) once the study was stopped, else ``None``.
    """

    def __init__(self, where: str = "the model folder", limit: int = LIMIT) -> None:
        self.where = where
        self.limit = limit
        self.reason: str | None = None
        self._last: str | None = None
        self._count = 0
        self._once = _TracebackOnce()

    def watch(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """``objective``, recording on the trial why it failed (Optuna keeps only the state).

        While watched, Optuna prints a failure's traceback only the first time it occurs.
        """
        logging.getLogger(_OPTUNA_LOGGER).addFilter(self._once)

        def watched(trial: optuna.Trial) -> Any:
            try:
                return objective(trial)
            except optuna.TrialPruned:
                raise
            except Exception as error:
                trial.set_user_attr(REASON_ATTR, failure_reason(error))
                raise

        return watched

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Called by Optuna after each of this worker's trials."""
        reason = trial.user_attrs.get(REASON_ATTR) if trial.state == TrialState.FAIL else None
        if reason is None:  # a success, a pruned trial, or a failure we know nothing about
            self._last, self._count = None, 0
            return
        self._count = self._count + 1 if reason == self._last else 1
        self._last = reason
        if self._count >= self.limit:
            self.reason = reason
            study.stop()

    def raise_if_stopped(self, on_stop: Callable[[], None] | None = None) -> None:
        """After ``optimize``: when the streak stopped the study, run ``on_stop`` and raise.

        Raises:
            MlopsError: one line with the repeated reason.
        """
        logging.getLogger(_OPTUNA_LOGGER).removeFilter(self._once)
        if self.reason is None:
            return
        if on_stop is not None:
            on_stop()
        raise MlopsError(
            f"{self.limit} trials in a row failed with {self.reason}; fix the model's code or "
            f"search space in {self.where}, then run again"
        )
