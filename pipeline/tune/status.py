"""``mlops status``: a read-only snapshot of a search, running or ended, from its Optuna storage.

The state is one of three, decided in this order:

- ``running``: a RUNNING trial is alive: its heartbeat (Optuna's, on the database clock) is
  within the grace period, and its worker, when it ran on this machine, still exists;
  between trials, the last trial's worker on this machine is alive or a trial ended within
  the grace period.
- ``finished``: the goal is met by a complete trial, or ``max_trials`` trials finished.
- ``interrupted``: neither: a trial was left RUNNING by a dead worker (its PID gone, or its
  heartbeat older than the grace period), or nothing runs with budget left and the goal
  unmet (killed between trials, or stopped by ``--timeout``); ``mlops tune`` continues it.

A study with no trial yet counts as running (its data is being prepared): the study
records no time of its own, so a search killed before its first trial looks the same.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from pipeline.summary import GoalSpec
from pipeline.tune.attributes import INTERVAL_ATTR, RESTARTS_ATTR, WORKER_ATTR
from pipeline.tune.readonly import heartbeat_ages
from pipeline.tune.sampling import FINISHED_STATES
from pipeline.tune.study import goal_met_trials, worker_id

State = Literal["running", "finished", "interrupted"]


@dataclass
class Best:
    """The best complete trial so far."""

    number: int
    value: float
    interval: tuple[float, float] | None = None  # Wilson 95%, for accuracy metrics


@dataclass
class SearchStatus:
    """What ``mlops status`` shows; ``asdict`` of it is the ``--json`` output."""

    study: str
    storage: str  # password redacted
    state: State
    reason: str  # how the state was decided, in words
    direction: str
    counts: dict[str, int]  # complete, pruned, failed, running, waiting
    finished: int  # complete + pruned: what ``max_trials`` counts
    max_trials: int
    goal: GoalSpec | None  # None: unknown (a study named without its model)
    goal_met: bool | None
    best: Best | None
    restarts: int
    started: str | None  # ISO time of the first trial's start (the workers' clock)
    elapsed_seconds: float  # first trial start to the last end, or to now while running
    median_trial_seconds: float | None  # of finished trials
    workers: int  # distinct workers of live trials
    eta_seconds: float | None  # (max_trials - finished) x median / workers; None when unknown or ended
    eta_note: str = field(default="the goal may end it sooner; a run's --timeout may stop it first")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``goal`` and ``best`` as objects or ``null``)."""
        return asdict(self)


def read_status(
    study: optuna.Study,
    storage: RDBStorage,
    storage_label: str,
    max_trials: int,
    goal: GoalSpec | None,
    grace_period: float,
    now: datetime | None = None,
) -> SearchStatus:
    """Snapshot ``study`` (opened read-only, ``pipeline.tune.readonly``).

    Args:
        study: the study.
        storage: its storage (for heartbeats).
        storage_label: the storage URL to show, password redacted.
        max_trials: the search's budget of finished trials.
        goal: the model's goal, or None when unknown.
        grace_period: seconds after which a heartbeat is stale (the ``grace_period`` setting).
        now: the current time on the workers' clock (Optuna stamps trials with local time).
    """
    now = now or datetime.now()
    trials = study.get_trials(deepcopy=False)
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    counts = {state.name.lower(): len(by_state[state]) for state in TrialState}
    finished = sum(counts[s.name.lower()] for s in FINISHED_STATES)
    met = goal_met_trials(study, goal) if goal is not None else None  # None: the goal is unknown
    durations = [_seconds(t) for t in trials if t.state in FINISHED_STATES and t.datetime_complete]
    median = statistics.median(durations) if durations else None

    running = by_state[TrialState.RUNNING]
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = {t.number: storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in running}
    ages = heartbeat_ages(storage, list(ids.values()))
    live = [t for t in running if _alive(t, ages.get(ids[t.number]), grace_period, median, now)[0]]
    state, reason = _decide(trials, running, live, ages, ids, met, finished, max_trials, grace_period, median, now)

    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    last = now if state == "running" else max(ends + starts, default=None)
    workers = len({str(t.user_attrs.get(WORKER_ATTR, t.number)) for t in live})
    remaining = max(0, max_trials - finished)
    eta = None
    if state != "finished" and median is not None:
        eta = remaining * median / max(1, workers)
    return SearchStatus(
        study=study.study_name,
        storage=storage_label,
        state=state,
        reason=reason,
        direction=study.direction.name.lower(),
        counts={
            "failed" if k == "fail" else k: counts[k] for k in ("complete", "pruned", "fail", "running", "waiting")
        },
        finished=finished,
        max_trials=max_trials,
        goal=goal,
        goal_met=bool(met) if met is not None else None,
        best=_best(study),
        restarts=int(study.user_attrs.get(RESTARTS_ATTR, 0)),
        started=min(starts).isoformat(timespec="seconds") if starts else None,
        elapsed_seconds=(last - min(starts)).total_seconds() if starts and last else 0.0,
        median_trial_seconds=median,
        workers=workers,
        eta_seconds=eta,
    )


def _decide(
    trials: list[FrozenTrial],
    running: list[FrozenTrial],
    live: list[FrozenTrial],
    ages: dict[int, float],
    ids: dict[int, int],
    met: list[FrozenTrial] | None,
    finished: int,
    max_trials: int,
    grace: float,
    median: float | None,
    now: datetime,
) -> tuple[State, str]:
    """The state and, in words, what decided it (the order is the module docstring's)."""
    if live:
        return "running", _alive(live[0], ages.get(ids[live[0].number]), grace, median, now)[1]
    if met:
        return "finished", f"goal met by trial {met[0].number}"
    if finished >= max_trials:
        return "finished", f"{finished} of max_trials {max_trials} trials finished"
    if running:
        return "interrupted", _alive(running[0], ages.get(ids[running[0].number]), grace, median, now)[1]
    if not trials:
        return "running", "no trial yet: preparing the data (or stopped before its first trial)"
    latest = max(trials, key=lambda t: t.datetime_complete or t.datetime_start or datetime.min)
    pid = _local_pid(latest)
    if pid is not None and _pid_alive(pid):
        return "running", f"between trials: worker PID {pid} of trial {latest.number} is alive"
    ended = latest.datetime_complete or latest.datetime_start
    since = (now - ended).total_seconds() if ended else None
    if since is not None and since <= grace and pid is None:
        return "running", f"between trials: trial {latest.number} ended {since:.0f}s ago, grace {grace:g}s"
    gone = f"worker PID {pid} is gone" if pid is not None else "no trial running"
    unmet = "goal not met" if met is not None else "goal unknown"
    return "interrupted", f"{gone}; {finished} of {max_trials} finished, {unmet}: `mlops tune` continues it"


def _alive(
    trial: FrozenTrial, age: float | None, grace: float, median: float | None, now: datetime
) -> tuple[bool, str]:
    """Whether a RUNNING trial's worker lives, and why (a dead PID here beats a fresh heartbeat)."""
    pid = _local_pid(trial)
    if pid is not None and not _pid_alive(pid):
        return False, f"trial {trial.number} left RUNNING: its worker PID {pid} is gone"
    if age is not None:
        if age <= grace:
            return True, f"trial {trial.number} running, heartbeat {age:.0f}s ago, grace {grace:g}s"
        return False, f"trial {trial.number} left RUNNING: heartbeat {age:.0f}s old, past the grace period {grace:g}s"
    # No heartbeat row (a storage without heartbeats): judge by the trial's age against the trial rate.
    started = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
    limit = max(grace, 3 * median) if median is not None else grace
    if started <= limit:
        return True, f"trial {trial.number} running, started {started:.0f}s ago, no heartbeat, limit {limit:.0f}s"
    return False, f"trial {trial.number} left RUNNING: started {started:.0f}s ago, no heartbeat, over {limit:.0f}s"


def _best(study: optuna.Study) -> Best | None:
    try:
        trial = study.best_trial
    except ValueError:  # no complete trial yet
        return None
    interval = trial.user_attrs.get(INTERVAL_ATTR)
    value = trial.value
    if value is None:
        return None
    return Best(trial.number, float(value), (float(interval[0]), float(interval[1])) if interval else None)


def _seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _local_pid(trial: FrozenTrial) -> int | None:
    """The PID of the trial's worker when it ran on this machine, in this PID namespace; else None."""
    parts = str(trial.user_attrs.get(WORKER_ATTR, "")).split("|")
    host, namespace, _ = worker_id().split("|")
    if len(parts) != 3 or parts[0] != host or parts[1] != namespace or not parts[2].isdigit():
        return None
    return int(parts[2])


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own PID, reused: not the old worker
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True
