"""Run the time-to-goal benchmark: every contender as its own process, one JSONL of results.

Each contender (``bench.floor``, ``bench.ours``, ``bench.kerastuner_contender``,
``bench.retrain_loop``) runs as a child process with the same data, split, weights, input
size, seed and wall-clock budget. The runner times the child from spawn to exit, reads its
peak RSS from ``os.wait4`` (that child and its own children, nothing else), kills it when
it overruns the budget by the grace period, samples the load average while it runs, and
appends one record to ``bench/results/<date>-<mode>.jsonl``; ``bench.report`` turns that file
into a Markdown table and plots.

Same conditions for all: each data set is loaded once before any timed run (scikit-learn's
LFW cache is written then, so no contender pays it), and the contenders run round-robin, one
round per repeat with its own search seed (seed + repeat): floor, ours cold, ours warm,
KerasTuner (random, Hyperband, on our cached features), the retrain loop; so the floor and
ours cold alternate (ABAB...) and share the machine's load.

Quick smoke run (Olivetti, minutes):  ``.venv/bin/python -m bench.run --quick``
Full run (hours on 2 cores):          ``nohup .venv/bin/python -m bench.run > bench.log 2>&1 &``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.data import DATASETS
from bench.env import REPO, BenchEnv, default_weights, machine_header
from bench.machine_peak import peak_record

RESULTS = REPO / "bench" / "results"
GRACE_SECONDS = 120.0  # past the budget: time to score on test and exit before a kill


def run_child(module: str, args: list[str], env: dict[str, str], budget: float, work: Path) -> dict[str, Any]:
    """Run ``python -m module args --result F``; return its result plus wall time and peak RSS."""
    result_path = work / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.json"
    log_path = result_path.with_suffix(".log")
    line = [sys.executable, "-m", module, *args, "--result", str(result_path)]
    load = LoadSampler()
    busy_before = cpu_busy_seconds()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(line, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        os.killpg(child.pid, signal.SIGKILL)

    timer = threading.Timer(budget + GRACE_SECONDS, kill)
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    load.stop()
    busy = cpu_busy_seconds() - busy_before
    child.returncode = os.waitstatus_to_exitcode(status)
    record: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {}
    wall = time.perf_counter() - started
    own = usage.ru_utime + usage.ru_stime  # the run's processes, its helpers and children included
    record.update(
        wall_s=wall,
        cpu_own_s=own,
        # What else ran meanwhile, in cores: the machine's busy CPU time less the run's own.
        others_cores=max(0.0, busy - own) / wall,
        peak_rss_mb=usage.ru_maxrss / 1024,
        returncode=child.returncode,
        killed=killed.is_set(),
        budget_s=budget,
        **load.fields(),
    )
    if child.returncode not in (0, 3) or killed.is_set():
        record["log_tail"] = log_path.read_text(errors="replace")[-1500:]
    record["goal_met"] = bool(record.get("goal_met"))
    return record


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class LoadSampler:
    """The 1-minute load average every few seconds while a run lasts (a thread)."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._done.wait(every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        """Take the last sample and end the thread."""
        self._done.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def fields(self) -> dict[str, Any]:
        """Load at start, highest, at end; ``overloaded`` when it rose above the core count.

        The run itself adds up to one per busy core, so only a load above the core count means
        something else was competing for the CPU.
        """
        cores = len(os.sched_getaffinity(0))
        highest = max(self.samples)
        return {
            "load_start": self.samples[0],
            "load_max": highest,
            "load_end": self.samples[-1],
            "overloaded": highest > cores,
        }


def warm_data(dataset: str, env: dict[str, str], size: int, seed: int) -> dict[str, Any]:
    """Load ``dataset`` once, untimed, so every timed run finds scikit-learn's cache written."""
    started = time.perf_counter()
    probe = f"from bench.data import load_split; load_split({dataset!r}, {size}, {seed})"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"loading {dataset} failed before the benchmark:\n{done.stderr[-1500:]}")
    return {"record": "warm-up", "dataset": dataset, "wall_s": time.perf_counter() - started}


class Runner:
    """Writes records to one JSONL file and prints one line per run."""

    def __init__(self, out: Path, env: BenchEnv, options: argparse.Namespace) -> None:
        self.out, self.env, self.options = out, env, options

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` and say what happened."""
        with open(self.out, "a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        if record.get("record") in ("header", "peak"):
            return
        best = record.get("best_val")
        shown = f"{best:.4f}" if isinstance(best, float) else "-"
        print(
            f"{record.get('contender', '?'):24s} {record.get('dataset', '')}@{record.get('goal', '')} "
            f"{record.get('wall_s', 0):8.1f}s  goal_met={record.get('goal_met')}  best_val={shown}  "
            f"rss={record.get('peak_rss_mb', 0):.0f}MB",
            flush=True,
        )

    def child(
        self,
        module: str,
        dataset: str,
        goal: float,
        extra: list[str] | None = None,
        fraction: float = 1.0,
        repeat: int = 0,
        **fields: Any,
    ) -> dict[str, Any]:
        """One contender run with the search seed ``seed + repeat``, recorded with ``fields``."""
        o = self.options
        seed = o.seed + repeat
        args = [
            "--dataset",
            dataset,
            "--goal",
            f"{goal:g}",
            "--seed",
            str(seed),
            "--budget-seconds",
            f"{o.budget_seconds:g}",
            "--weights",
            str(o.weights),
        ]
        args += (["--quick"] if o.quick else []) + (extra or [])
        if fraction < 1.0:
            args += ["--min-faces", "5"]
        record = run_child(module, args, self.env.env(fraction), o.budget_seconds, self.env.root)
        record.update(record="run", dataset=dataset, goal=goal, fraction=fraction, repeat=repeat, seed=seed, **fields)
        self.write(record)
        return record

    def ours(
        self,
        dataset: str,
        goal: float,
        cache: Path,
        work: Path,
        max_trials: int = 40,
        fraction: float = 1.0,
        profile: bool = False,
        warm_start: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """``bench.ours`` with a given cache and work folder (``warm_start``: mlops tune's own)."""
        extra = ["--cache-dir", str(cache), "--work-dir", str(work), "--max-trials", str(max_trials)]
        extra += (["--profile"] if profile else []) + ([] if warm_start else ["--no-warm-start"])
        return self.child("bench.ours", dataset, goal, extra, fraction, **fields)


CONTENDERS = {  # after the floor and ours, in each round: name -> (module, extra arguments)
    "kerastuner-random": ("bench.kerastuner_contender", ["--tuner", "random"]),
    "kerastuner-hyperband": ("bench.kerastuner_contender", ["--tuner", "hyperband"]),
    "kerastuner-cached": ("bench.kerastuner_cached", ["--tuner", "random"]),
    "retrain-loop": ("bench.retrain_loop", []),
}


def compare(runner: Runner, dataset: str, goals: list[float], repeats: int) -> None:
    """Per goal, ``repeats`` rounds of every contender, each round with its own seed.

    A round: the floor, ours cold then warm on the same cache (with its warm start from the cold
    study's best, then without), KerasTuner (random, Hyperband, on our cached features), the
    retrain loop. Then one profiled run of ours (warm).
    """
    env = runner.env
    runner.write(warm_data(dataset, env.env(), DATASETS[dataset], runner.options.seed))
    for goal in goals:
        for repeat in range(repeats):
            runner.write(peak_record())  # the GEMM peak once a round, under the round's load
            runner.child("bench.floor", dataset, goal, repeat=repeat)
            cache, work = env.scratch("cache"), env.scratch("work")
            runner.ours(dataset, goal, cache, work, repeat=repeat)
            runner.ours(dataset, goal, cache, work, repeat=repeat)  # warm: the cache and the cold study's best
            runner.ours(dataset, goal, cache, work, warm_start=False, repeat=repeat)  # the cache alone
            for name in runner.options.contenders:
                module, extra = CONTENDERS[name]
                runner.child(module, dataset, goal, extra, repeat=repeat)
        runner.ours(dataset, goal, cache, work, profile=True, role="profile")


def scaling(runner: Runner, dataset: str, fractions: list[float], trial_counts: list[int]) -> None:
    """Time against images (floor + ours cold per subset) and against trials (ours, warm)."""
    env = runner.env
    for fraction in fractions:
        runner.child("bench.floor", dataset, 0.9, fraction=fraction, role="scaling-images")
        runner.ours(dataset, 0.9, env.scratch("cache"), env.scratch("work"), fraction=fraction, role="scaling-images")
    cache = env.scratch("cache")
    runner.ours(dataset, 1.01, cache, env.scratch("work"), max_trials=1, role="warm-up")
    for count in trial_counts:
        runner.ours(dataset, 1.01, cache, env.scratch("work"), max_trials=count, role="scaling-trials")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Olivetti only, tiny budgets: minutes")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: lfw olivetti (quick: olivetti)")
    parser.add_argument(
        "--goals",
        nargs="+",
        type=float,
        default=None,
        help="goals for LFW (default 0.90 0.95); Olivetti always uses 0.90",
    )
    parser.add_argument("--budget-seconds", type=float, default=None, help="per contender (default 1800)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of every contender (default 3; quick 1)")
    parser.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure cost against images and trials (default: on unless --quick)",
    )
    parser.add_argument(
        "--contenders",
        nargs="*",
        choices=sorted(CONTENDERS),
        default=list(CONTENDERS),
        help="who runs beside the floor and ours in each round (default: all; none: the floor and ours only)",
    )
    parser.add_argument("--seed", type=int, default=42, help="round r searches with seed + r")
    parser.add_argument("--weights", type=Path, default=default_weights())
    parser.add_argument("--out", type=Path, default=None, help="JSONL file (default bench/results/...)")
    options = parser.parse_args(argv)
    options.datasets = options.datasets or (["olivetti"] if options.quick else ["lfw", "olivetti"])
    options.goals = options.goals or ([0.90] if options.quick else [0.90, 0.95])
    options.budget_seconds = options.budget_seconds or (300.0 if options.quick else 1800.0)
    options.repeats = options.repeats or (1 if options.quick else 3)
    options.scaling = (not options.quick) if options.scaling is None else options.scaling
    return options


def main(argv: list[str] | None = None) -> Path:
    """Run everything the options ask for; write the JSONL, the table and the plots."""
    options = parse(argv)
    if not options.weights.is_file():
        raise SystemExit(f"weights file {options.weights} not found; set BENCH_WEIGHTS or --weights")
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M")
    out = options.out or RESULTS / f"{stamp}-{'quick' if options.quick else 'full'}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = BenchEnv(options.seed)
    runner = Runner(out, env, options)
    command = [Path(sys.executable).name, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]
    runner.write(
        {
            **machine_header(command, options.weights),
            "mode": "quick" if options.quick else "full",
            "budget_s": options.budget_seconds,
            "repeats": options.repeats,
            "seed": options.seed,
        }
    )
    try:
        for dataset in options.datasets:
            compare(runner, dataset, options.goals if dataset == "lfw" else [0.90], options.repeats)
        if options.scaling:
            trial_counts = [2, 4] if options.quick else [5, 10, 20]
            fractions = [0.25, 0.5, 1.0]
            scaling(runner, "lfw" if "lfw" in options.datasets else options.datasets[0], fractions, trial_counts)
    finally:
        env.cleanup()
    from bench.report import build_report

    print(f"results: {out}\nreport: {build_report(out)}")
    return out


if __name__ == "__main__":
    main()
