"""Local workers: ``mlops tune --workers N`` runs N - 1 helper processes on the command's own study.

Why: a trial of a dense head on cached features is small layers and many short steps; one
process keeps about one core busy with TensorFlow's per-step work and Python between trials.
Two processes on one study finish the same search sooner on 2 cores (bench/README.md, "Two
workers on one study"). The study's storage already shares trials, the goal and the budget
between workers (README "Scaled out"); ``pipeline/sqlite_locks.py`` makes the default SQLite
study safe to share.

How: a helper runs ``python -m pipeline.tune.worker_process`` with the model folder and
the command's resolved settings on its standard input, and runs the search part of ``mlops
tune`` (``pipeline.tune.search.help_search``) on the same study and MLflow parent run; its
lines are relayed to the command's output, each after ``worker K:``. It scores, logs,
registers and mails nothing: the command does that once its search ends. Helpers start before
the command loads its data, so their start-up (imports, data, features from the shared cache)
overlaps the command's. Processes, not threads: a model's ``train`` may set global state
(seeds, Keras' session), and two trials in one interpreter would share it.

When the command's search ends (goal met, budget spent, an error, Ctrl-C), every helper still
running gets SIGTERM: the trial it was running keeps its checkpoint and is queued for retry,
as after Ctrl-C, so a later run of the same command resumes it and nothing is lost.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from pipeline.config.settings import TuneSettings

# How long a helper has to leave after SIGTERM (it records its interrupted trial) before it is killed.
STOP_GRACE_SECONDS = 60.0
# Exit codes that need no remark: done (goal met or not), or stopped by our SIGTERM or a Ctrl-C.
_EXPECTED = {0, 3, 130, 143, -signal.SIGTERM, -signal.SIGINT}


@dataclass
class Helpers:
    """The helper processes of one command, and the threads relaying their lines."""

    log: Callable[[str], None]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    relays: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM every helper still running, wait for each to leave, report any that failed."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for number, process in enumerate(self.processes, start=2):
            try:
                code = process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
                self.log(f"worker {number}: killed, {STOP_GRACE_SECONDS:g} s after SIGTERM; its trial is retried")
            if code not in _EXPECTED:
                self.log(f"worker {number}: ended with exit code {code}; its finished trials are in the study")
        for relay in self.relays:
            relay.join(timeout=5)
        self.processes.clear()


def start_helpers(model_dir: Path, settings: TuneSettings, log: Callable[[str], None]) -> Helpers:
    """Start ``settings.workers - 1`` helpers on the study ``settings`` name (none for 1 worker)."""
    helpers = Helpers(log)
    count = settings.workers - 1
    if count < 1:
        return helpers
    # TensorFlow takes a GPU's whole memory by default: with it, the second process could not start.
    env = {**os.environ, "TF_FORCE_GPU_ALLOW_GROWTH": "true", "PYTHONUNBUFFERED": "1"}
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # this process: before it imports TensorFlow
    order = pickle.dumps((model_dir, replace(settings, workers=1)))
    for number in range(2, count + 2):
        command = [sys.executable, "-m", "pipeline.tune.worker_process"]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(order)
        process.stdin.close()
        relay = threading.Thread(target=_relay, args=(process.stdout, f"worker {number}: ", log), daemon=True)
        relay.start()
        helpers.processes.append(process)
        helpers.relays.append(relay)
    log(f"workers: {settings.workers} on this study (this process and {count} helper(s), their lines marked)")
    return helpers


def _relay(stream: IO[bytes], prefix: str, log: Callable[[str], None]) -> None:
    """Show a helper's lines as they come, marked as its own."""
    for raw in stream:
        log(prefix + raw.decode(errors="replace").rstrip())
