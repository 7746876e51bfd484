"""Ctrl-C and SIGTERM as a clean stop, not a crash.

Both signals raise ``Interrupted`` (a ``KeyboardInterrupt``, so Optuna fails the running
trial and re-raises it) in the main thread. The first signal starts the stop; any signal
after it is ignored, so the short clean-up that follows (closing MLflow runs, queueing the
interrupted trial for retry) cannot itself be cut in half. The command then exits with the
shell's convention for a signal, 128 + its number: 130 for SIGINT, 143 for SIGTERM.

Typer turns any ``KeyboardInterrupt`` into exit 130, so the signal and the line to show are
kept here (``received``) for the CLI's entry point::

    install()
    code = app(standalone_mode=False)   # tune: except KeyboardInterrupt -> clean up, stopped(line)
    if received() is not None:
        print(received().message); sys.exit(exit_code(received()))
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_stopping = False
_received: Interrupted | None = None


class Interrupted(KeyboardInterrupt):
    """The user (Ctrl-C) or a process manager (SIGTERM) asked us to stop.

    Args:
        signum: the signal received.
        message: the one line to show (set by whoever cleaned up and knows what was kept).
    """

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None) -> None:
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.message = message


def _raise(signum: int, frame: FrameType | None) -> None:
    global _stopping, _received
    if _stopping:
        return  # already stopping: let the clean-up finish
    _stopping = True
    _received = Interrupted(signum)
    raise _received


def install() -> None:
    """Turn SIGINT and SIGTERM into ``Interrupted`` (main thread only; a SIGINT ignored by the shell stays so)."""
    global _stopping, _received
    if threading.current_thread() is not threading.main_thread():
        return
    _stopping, _received = False, None
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # e.g. `mlops tune ... &` in a script
        signal.signal(signal.SIGINT, _raise)
    signal.signal(signal.SIGTERM, _raise)


def stopped(interrupt: KeyboardInterrupt, message: str) -> Interrupted:
    """Record the line to show for ``interrupt`` once the clean-up is done; returns it to re-raise."""
    global _stopping, _received
    _stopping = True  # a plain KeyboardInterrupt (no handler installed) ends the same way
    signum = int(getattr(interrupt, "signum", signal.SIGINT))
    _received = Interrupted(signum, message)
    return _received


def received() -> Interrupted | None:
    """The stop signal received by this process, if any (with its line once ``stopped`` was called)."""
    return _received


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number: 130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))
