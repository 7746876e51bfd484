"""``mlops status`` as a real subprocess: one-line errors (exit 2), and ``--watch`` ended by Ctrl-C (exit 0)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from tests.cli import MLOPS
from tests.pipeline.stub_model import environment


def finished_study(tmp_path: Path) -> str:
    """A study ``s`` with two complete trials (10 s and 30 s), no worker alive; its storage URL."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    start = datetime(2026, 1, 1, 12, 0, 0)
    for value, seconds in ((0.5, 10), (0.75, 30)):
        trial = create_trial(value=value, params={"x": value}, distributions={"x": FloatDistribution(0, 1)})
        trial.datetime_start, trial.datetime_complete = start, start + timedelta(seconds=seconds)
        study.add_trial(trial)
    return url


def test_a_missing_study_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = finished_study(tmp_path)
    done = subprocess.run(
        [*MLOPS, "status", "--study", "t", "--storage", url], capture_output=True, text=True, env=environment()
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: no study 't' in {url} (studies there: s); pass --study NAME, or run `mlops tune MODEL_DIR` first"
    ]


def test_watch_redraws_until_ctrl_c_and_exits_0(tmp_path: Path) -> None:
    url = finished_study(tmp_path)
    command = [*MLOPS, "status", "--study", "s", "--storage", url, "--max-trials", "4", "--watch", "--interval", "0.2"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if sum(line.startswith("study     s in") for line in lines) >= 2:  # redrawn at least once
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=30)
    reader.join(timeout=5)
    assert process.returncode == 0, stderr
    assert stderr == ""  # no traceback, no "interrupted" line: Ctrl-C is how a watch ends
    first = lines[: lines.index("\n")]
    assert first == [
        f"study     s in {url}\n",
        "state     interrupted (no trial running; 2 of 4 finished, goal unknown: `mlops tune` continues it)\n",
        "trials    2 complete, 0 pruned, 0 failed, 0 running, 0 waiting; 2 of max 4 finished\n",
        "best      value 0.7500 (trial 1)\n",
        "time      30s since 2026-01-01T12:00:00\n",
        "left      ~40s (2 trials x median 20s; the goal may end it sooner; a run's --timeout may stop it first)\n",
    ]
