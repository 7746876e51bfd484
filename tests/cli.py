"""Run the real ``mlops`` CLI from tests, with every store inside the test's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# The real ``mlops`` command in this Python (subprocess tests prefix their arguments with it).
MLOPS = [sys.executable, "-m", "pipeline.cli"]


def tune_in(
    tmp_path: Path, model_dir: Path, *extra: str, expect: int, timeout: int = 240
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``mlops tune MODEL_DIR`` with SQLite stores, runs and cache under ``tmp_path``.

    The environment's own ``MLOPS_*``/``MLFLOW_*`` settings are dropped so a developer's
    configuration cannot leak in. The run must exit with ``expect`` (0: goal met, 3: not
    met: pass a ``--goal`` that makes the outcome certain). Returns the finished process
    and the summary it wrote.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    command = [
        str(Path(sys.executable).parent / "mlops"),
        "tune",
        str(model_dir),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == expect, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "runs" / model_dir.name / "summary.json").read_text())
    return done, summary
