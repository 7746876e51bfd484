"""What Python's cycle collector costs an ``mlops`` command, with and without ``pipeline/heap.py``.

Runs ``mlops ARGS`` in a child process whose collections are timed (``gc.callbacks``), and
times, from outside, the gap between the child's last line and its exit (the final collection
and module teardown). ``--plain`` runs the same command as before ``pipeline/heap.py``: no
paused imports, nothing frozen. Both rows interleaved ``--repeats`` times.

Run (a warm one-trial search, the feature cache filled by an earlier run):
``source scripts/offline-env.sh && .venv/bin/python -m bench.collector --repeats 2 -- tune
models/face_vgg16 --weights W --set data.source=lfw --set data.input_size=96 --goal 0.95
--cache-dir C --runs-dir R --storage sqlite:///R/optuna.db --tracking-uri sqlite:///R/mlflow.db``
(each run gets a new ``--study-name``; with a warm start on, every run after the first is one
trial).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid

CHILD = """
import atexit, gc, importlib, json, sys, time
totals = {"full_n": 0, "full_s": 0.0, "all_n": 0, "all_s": 0.0}
started = [0.0]
def timer(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
        return
    took = time.perf_counter() - started[0]
    totals["all_n"] += 1
    totals["all_s"] += took
    if info["generation"] == 2:
        totals["full_n"] += 1
        totals["full_s"] += took
gc.callbacks.append(timer)
atexit.register(lambda: print("COLLECTOR " + json.dumps(totals), flush=True))  # runs last: first in
from pipeline import heap
if PLAIN:
    heap.enable_for_process = lambda: None
    heap.preload = lambda modules: [importlib.import_module(m) for m in modules]
from pipeline.cli import main
sys.argv = ["mlops", *sys.argv[1:]]
main()
"""


def run_once(args: list[str], plain: bool) -> dict[str, float]:
    """One child run: its collections, its wall time and its last-line-to-exit gap."""
    study = ["--study-name", f"collector-{uuid.uuid4().hex[:8]}"] if args and args[0] == "tune" else []
    code = CHILD.replace("PLAIN", str(plain))
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args, *study], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    totals: dict[str, float] = {}
    last_line = started
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("COLLECTOR "):
            totals = json.loads(line.removeprefix("COLLECTOR "))
            continue
        last_line = time.perf_counter()
    returncode = child.wait()
    ended = time.perf_counter()
    return {**totals, "wall_s": ended - started, "exit_s": ended - last_line, "returncode": returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("mlops_args", nargs=argparse.REMAINDER, help="after --: the mlops command line")
    args = parser.parse_args()
    command = args.mlops_args[1:] if args.mlops_args[:1] == ["--"] else args.mlops_args
    for repeat in range(args.repeats):
        for plain in (True, False):
            row = run_once(command, plain)
            label = "before heap.py" if plain else "with heap.py  "
            print(
                f"{label} run {repeat + 1}: {row['wall_s']:5.1f}s in all, exit code {row['returncode']}; "
                f"full collections {row.get('full_n', 0):.0f} in {row.get('full_s', 0):.2f}s, all "
                f"{row.get('all_n', 0):.0f} in {row.get('all_s', 0):.2f}s; last line to exit {row['exit_s']:.2f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
