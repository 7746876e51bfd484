"""What one SQLite commit costs on a folder's disk: rollback journal against write-ahead log.

Why ``pipeline/sqlite_wal.py`` puts our stores in WAL mode: a search commits to Optuna's
SQLite storage at every epoch and MLflow's dozens of times a trial. Each mode gets a fresh
database in ``--dir`` and times ``--commits`` single-row insert-and-commit transactions (as
Optuna's ``set_trial_intermediate_value`` makes), interleaved over ``--repeats`` rounds.

Run: ``.venv/bin/python -m bench.sqlite_commit --dir runs`` (a second or so; use the folder
your ``--runs-dir`` is on: the cost is the disk's fsync). ``--optuna`` also times what a
30-epoch head trial asks of Optuna's storage (ask, 9 parameters, 3 attributes, a report and a
pruning check per epoch, tell: about 80 commits), with no training, in each journal mode.
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


def optuna_trial_seconds(folder: Path, journal: str, trials: int = 5, epochs: int = 30) -> float:
    """Seconds a head trial's storage calls take on a fresh SQLite study in ``journal`` mode."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        path = Path(scratch) / "optuna.db"
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute(f"PRAGMA journal_mode={journal}")
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5)  # the search's "median"
        study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
        started = time.perf_counter()
        for _ in range(trials):
            trial = study.ask()
            for name in "abcdefghi":
                trial.suggest_float(name, 0.0, 1.0)
            for name in ("worker", "mlflow_run_id", "seed"):
                trial.set_user_attr(name, 1)
            for epoch in range(epochs):
                trial.report(0.5 + epoch / 100, epoch)
                trial.should_prune()
            study.tell(trial, 0.8)
        seconds = (time.perf_counter() - started) / trials
        storage.engine.dispose()
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("."), help="a folder on the disk to measure")
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optuna", action="store_true", help="also time a head trial's Optuna storage calls")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(args.repeats):
        for name, (journal, synchronous) in MODES.items():
            times[name].append(commit_ms(args.dir, journal, synchronous, args.commits))
    print(f"{args.commits} commits x {args.repeats} rounds in {args.dir.resolve()} (median, range), ms a commit:")
    for name, values in times.items():
        print(f"  {name}: {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
    if args.optuna:
        trial_s: dict[str, list[float]] = {"DELETE": [], "WAL": []}
        for _ in range(args.repeats):  # interleaved, as above
            for journal, rounds in trial_s.items():
                rounds.append(optuna_trial_seconds(args.dir, journal))
        print("a 30-epoch head trial's Optuna storage calls (median of rounds, 5 trials a round), s a trial:")
        for journal, rounds in trial_s.items():
            print(f"  {journal}: {statistics.median(rounds):.3f} ({min(rounds):.3f}-{max(rounds):.3f})")


if __name__ == "__main__":
    main()
