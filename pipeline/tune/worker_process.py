"""A helper process of ``mlops tune --workers N`` (started by ``pipeline/tune/workers.py``; not a command).

Its own module, not ``workers``: ``python -m`` runs a module the package has not imported yet.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time


def main() -> None:
    """The search on the study the command names, then exit; 143 (130) when the command stops it."""
    from pipeline import heap
    from pipeline.errors import MlopsError
    from pipeline.tune import interrupts
    from pipeline.tune.search import help_search

    interrupts.install()  # the command's SIGTERM ends the running trial cleanly, queued for retry
    heap.enable_for_process()
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    model_dir, settings = pickle.load(sys.stdin.buffer)  # written by start_helpers: our own parent
    try:
        help_search(model_dir, settings, log=print)
    except KeyboardInterrupt as stop:  # the command ended the search (or Ctrl-C): it says what was kept
        sys.exit(interrupts.exit_code(stop))
    except MlopsError as error:
        print(f"error: {error}")
        sys.exit(error.exit_code)


def _stop_when_orphaned(parent: int, poll: float = 1.0) -> None:
    """SIGTERM this helper once its command is gone (``kill -9``: it could not stop us itself).

    Otherwise it would search on beside the command's restart (the supervisor's) and its helpers.
    """
    while os.getppid() == parent:
        time.sleep(poll)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
