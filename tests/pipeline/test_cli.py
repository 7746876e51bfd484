"""The CLI edge: a usage mistake is click's short message and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli import MLOPS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tune", "models/diabetes_regression", "extra"], "Got unexpected extra argument(s) (extra)"),
        (["status", "--no-such-flag"], "No such option: --no-such-flag"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
    ],
)
def test_a_usage_mistake_is_one_message_and_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run([*MLOPS, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
