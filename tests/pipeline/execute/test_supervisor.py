"""The supervisor against real processes: a stand-in ``mlops`` that dies, then finishes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from pipeline.execute.runners import LocalRunner
from pipeline.execute.supervisor import Supervisor, describe_exit

# Dies by SIGKILL on its first two starts, then exits with the code in argv[1].
FLAKY = """
import os, signal, sys
count = int(os.environ.get("MLOPS_RESTARTS", "0"))
print("start", count, os.environ.get("MLOPS_RESTART_REASON", "-"), flush=True)
if count < 2:
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(sys.argv[1]))
"""


def flaky_runner(tmp_path: Path) -> tuple[LocalRunner, io.StringIO]:
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    out = io.StringIO()
    return LocalRunner(out=out, entrypoint=[sys.executable, str(script)]), out


def test_restarts_until_the_command_ends_on_its_own(tmp_path: Path) -> None:
    runner, out = flaky_runner(tmp_path)
    restarts: list[tuple[int, int]] = []
    lines: list[str] = []
    supervisor = Supervisor(
        runner, max_restarts=3, backoff=0.01, on_restart=lambda n, c: restarts.append((n, c)), log=lines.append
    )
    result = supervisor.run(["3"], {}, tmp_path)
    assert result.exit_code == 3 and result.restarts == 2
    assert restarts == [(1, 137), (2, 137)]
    assert "start 2 killed by SIGKILL (exit 137)" in out.getvalue()  # the reason reaches the restarted run
    assert lines[0].startswith("supervisor: tune killed by SIGKILL (exit 137); restart 1/3")


def test_gives_up_after_the_bound(tmp_path: Path) -> None:
    runner, _ = flaky_runner(tmp_path)
    lines: list[str] = []
    result = Supervisor(runner, max_restarts=1, backoff=0.01, log=lines.append).run(["0"], {}, tmp_path)
    assert result.exit_code == 137 and result.restarts == 1
    assert "1 restart(s) spent, giving up" in lines[-1]


def test_bad_input_is_not_retried(tmp_path: Path) -> None:
    script = tmp_path / "usage.py"
    script.write_text("import sys; sys.exit(2)")
    runner = LocalRunner(out=io.StringIO(), entrypoint=[sys.executable, str(script)])
    result = Supervisor(runner, max_restarts=3, backoff=0.01, log=lambda line: None).run([], {}, tmp_path)
    assert result.exit_code == 2 and result.restarts == 0
    assert describe_exit(1) == "crashed (exit 1)"
    assert describe_exit(2) == "stopped on bad input (exit 2)"


def test_a_tune_stopped_by_ctrl_c_is_not_restarted(tmp_path: Path) -> None:
    """130 is ``mlops tune``'s clean stop after Ctrl-C: the user asked for it; 143 (SIGTERM) is restarted."""
    script = tmp_path / "stopped.py"
    script.write_text("import sys; sys.exit(int(sys.argv[1]))")
    runner = LocalRunner(out=io.StringIO(), entrypoint=[sys.executable, str(script)])
    stopped = Supervisor(runner, max_restarts=2, backoff=0.01, log=lambda line: None).run(["130"], {}, tmp_path)
    terminated = Supervisor(runner, max_restarts=2, backoff=0.01, log=lambda line: None).run(["143"], {}, tmp_path)
    assert (stopped.exit_code, stopped.restarts) == (130, 0)
    assert (terminated.exit_code, terminated.restarts) == (143, 2)
