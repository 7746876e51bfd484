"""Keep the tune stage alive: restart it from its last checkpoint when it dies.

A run that ends on its own (0: goal met, 3: goal not met, 2: bad input, 130: stopped by
Ctrl-C) is final; anything else (killed by a signal, out of memory, a crash) is restarted,
up to ``max_restarts`` times with exponential backoff. The restarted ``mlops tune`` resumes its study (see
``pipeline/tune/study.py``) and records the restart in MLflow; it learns it is a restart from
``MLOPS_RESTARTS`` and ``MLOPS_RESTART_REASON``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ExitCode
from pipeline.execute.runners import Runner

# 130: the tune was stopped by Ctrl-C (interrupts.py): the user asked for it, so no restart.
FINAL_CODES = (ExitCode.OK, ExitCode.USAGE, ExitCode.GOAL_NOT_MET, 130)


def describe_exit(code: int) -> str:
    """``137`` -> ``killed by SIGKILL (exit 137)``; ``1`` -> ``crashed (exit 1)``."""
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name} (exit {code})"
        except ValueError:
            pass
    if code == ExitCode.USAGE:
        return f"stopped on bad input (exit {code})"
    return f"crashed (exit {code})"


@dataclass
class Attempt:
    """One start of the supervised command."""

    exit_code: int
    seconds: float


@dataclass
class SupervisedResult:
    """How the supervised command ended, and every start it took."""

    exit_code: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        """Starts after the first."""
        return max(0, len(self.attempts) - 1)


class Supervisor:
    """Runs ``mlops <args>`` through a runner and restarts it when it dies.

    Args:
        runner: where the command runs (local subprocess or container).
        max_restarts: restarts allowed after the first start.
        backoff: seconds before the first restart; doubled each time, capped at ``max_backoff``.
        on_restart: called with (restart number, exit code) before each restart (an e-mail).
        log: one line per event.
    """

    def __init__(
        self,
        runner: Runner,
        max_restarts: int = 3,
        backoff: float = 2.0,
        max_backoff: float = 60.0,
        on_restart: Callable[[int, int], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.runner, self.max_restarts = runner, max_restarts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.on_restart, self.log = on_restart, log

    def run(self, args: list[str], env: dict[str, str], workdir: Path) -> SupervisedResult:
        """Run until the command ends on its own or the restarts are spent."""
        result = SupervisedResult(exit_code=ExitCode.FAILURE)
        delay = self.backoff
        reason = ""
        for attempt in range(self.max_restarts + 1):
            extra = {"MLOPS_RESTARTS": str(attempt), "MLOPS_RESTART_REASON": reason} if attempt else {}
            started = time.monotonic()
            code = self.runner.run(args, {**env, **extra}, workdir)
            result.attempts.append(Attempt(code, time.monotonic() - started))
            result.exit_code = code
            if code in FINAL_CODES:
                return result
            reason = describe_exit(code)
            if attempt == self.max_restarts:
                self.log(f"supervisor: tune {reason}; {self.max_restarts} restart(s) spent, giving up")
                return result
            self.log(
                f"supervisor: tune {reason}; restart {attempt + 1}/{self.max_restarts} in {delay:g}s, "
                "resuming from the last checkpoint"
            )
            if self.on_restart is not None:
                self.on_restart(attempt + 1, code)
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        return result
