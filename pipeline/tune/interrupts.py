"""Ctrl-C and SIGTERM as a clean stop, not a crash.

Both signals raise ``Interrupted`` (a ``KeyboardInterrupt``, so Optuna fails the running
trial and re-raises it) in the main thread. The first signal starts the stop; any signal
after it is ignored, so the short clean-up that follows (closing MLflow runs, queueing the
interrupted trial for retry) cannot itself be cut in half. The command then exits with the
shell's convention for a signal, 128 + its number: 130 for SIGINT, 143 for SIGTERM.

A signal that arrives while the main thread is inside a database call (SQLAlchemy, under
Optuna's storage and MLflow's store) or MLflow's file store waits until that call returns:
an SQL transaction cut between its statements leaves SQLAlchemy's session half-way (every
later call on it raises ``IllegalStateChangeError``, Optuna reports "An exception is raised
during the commit") and its SQLite connection holding a lock that stalls every other writer,
the heartbeat thread included; seen as a ``mlops tune`` that never exited after Ctrl-C,
about one stop in 300. A watcher thread re-sends the signal to the main thread once it has
left the call, so the stop is delayed by that call at most (its own timeout bounds it).

Typer turns any ``KeyboardInterrupt`` into exit 130, so the signal and the line to show are
kept here (``received``) for the CLI's entry point::

    install()
    code = app(standalone_mode=False)   # tune: except KeyboardInterrupt -> clean up, stopped(line)
    if received() is not None:
        print(received().message); sys.exit(exit_code(received()))
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType

# Code a signal must not cut in half: it holds a transaction, a lock or a half-written file.
_ATOMIC = ("sqlalchemy", "alembic", "mlflow.store.tracking.file_store", "mlflow.store.model_registry.file_store")

_stopping = False
_received: Interrupted | None = None
_deferred: int | None = None  # a signal waiting for the main thread to leave an atomic call
_handled = 0  # signals the handler has seen: the watcher re-sends only once its last one arrived


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
    global _stopping, _received, _deferred, _handled
    _handled += 1
    if _stopping:
        return  # already stopping: let the clean-up finish
    if _inside_atomic(frame):
        if _deferred is None:
            _deferred = signum
            threading.Thread(target=_resend_when_safe, args=(signum,), name="mlops-deferred-stop", daemon=True).start()
        return
    _stopping = True
    _received = Interrupted(_deferred or signum)
    _deferred = None
    raise _received


def _inside_atomic(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it runs code a signal must not interrupt (``_ATOMIC``)."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_ATOMIC):
            return True
        frame = frame.f_back
    return False


def _resend_when_safe(signum: int, poll: float = 0.005, patience: float = 0.1) -> None:
    """Re-send a deferred signal to the main thread until it arrives outside atomic code.

    A real signal (not ``_thread.interrupt_main``) so that a sleep or a blocking read the main
    thread is in when it gets there wakes up at once. One at a time, so a main thread busy in a
    long C call is not sent a stream of them; again after ``patience`` seconds unhandled, since
    one that lands just before the main thread enters a sleep is only handled when it wakes.
    """
    main = threading.main_thread()
    handled, sent = -1, 0.0  # the handler's count and the time when we last sent one
    # Until the stop is raised (or ``install`` starts afresh): never a signal nobody is waiting for.
    while _deferred is not None and not _stopping and main.is_alive() and main.ident is not None:
        if handled != _handled or time.monotonic() - sent > patience:
            frame = sys._current_frames().get(main.ident)
            if frame is not None and not _inside_atomic(frame):
                handled, sent = _handled, time.monotonic()
                signal.pthread_kill(main.ident, signum)
        time.sleep(poll)


def install() -> None:
    """Turn SIGINT and SIGTERM into ``Interrupted`` (main thread only; a SIGINT ignored by the shell stays so)."""
    global _stopping, _received, _deferred
    if threading.current_thread() is not threading.main_thread():
        return
    _stopping, _received, _deferred = False, None, None
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
