"""What one SQLite commit costs on a folder's disk: rollback journal against write-ahead log.

Why ``pipeline/sqlite_wal.py`` puts our stores in WAL mode: a search commits to Optuna's
SQLite storage at every epoch and MLflow's dozens of times a trial. Each mode gets a fresh
database in ``--dir`` and times ``--commits`` single-row insert-and-commit transactions (as
Optuna's ``set_trial_intermediate_value`` makes), interleaved over ``--repeats`` rounds.

Run: ``.venv/bin/python -m bench.sqlite_commit --dir runs`` (a second or so; use the folder
your ``--runs-dir`` is on: the cost is the disk's fsync).
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

MODES = {  # name -> (journal_mode, synchronous)
    "rollback journal, synchronous=FULL (SQLite's default)": ("DELETE", "FULL"),
    "WAL, synchronous=FULL (ours)": ("WAL", "FULL"),
    "WAL, synchronous=NORMAL (not durable at power loss)": ("WAL", "NORMAL"),
}


def commit_ms(folder: Path, journal: str, synchronous: str, commits: int) -> float:
    """Milliseconds per insert-and-commit in a new database in ``folder``."""
    with (
        tempfile.TemporaryDirectory(dir=folder) as scratch,
        contextlib.closing(sqlite3.connect(Path(scratch) / "bench.db")) as connection,
    ):
        connection.execute(f"PRAGMA journal_mode={journal}")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute("CREATE TABLE values_ (step INTEGER, value REAL)")
        connection.commit()
        started = time.perf_counter()
        for step in range(commits):
            connection.execute("INSERT INTO values_ VALUES (?, ?)", (step, step / commits))
            connection.commit()
        return (time.perf_counter() - started) / commits * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("."), help="a folder on the disk to measure")
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(args.repeats):
        for name, (journal, synchronous) in MODES.items():
            times[name].append(commit_ms(args.dir, journal, synchronous, args.commits))
    print(f"{args.commits} commits x {args.repeats} rounds in {args.dir.resolve()} (median, range), ms a commit:")
    for name, values in times.items():
        print(f"  {name}: {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
