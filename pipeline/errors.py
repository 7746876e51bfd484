"""The one exception a user can cause, and how the CLI shows it."""

from __future__ import annotations


class MlopsError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable service.

    The message is one line that names the file or setting at fault and the fix. The CLI
    prints it (``error: ...``) and exits with ``exit_code``; it never shows a traceback.

    Args:
        message: one line naming what is wrong and how to fix it.
        exit_code: the process exit status the CLI uses (see ``ExitCode``).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExitCode:
    """Documented exit statuses of every ``mlops`` command."""

    OK = 0
    FAILURE = 1  # an unexpected crash (a bug): the traceback is shown
    USAGE = 2  # bad input or configuration: one ``error:`` line
    GOAL_NOT_MET = 3  # the search finished its budget without reaching the goal
    MODEL_FAILED = 4  # ``mlops run``: at least one model failed to build or tune
    NOT_DELIVERED = 5  # ``mlops notify``: a queued message is still in an outbox
