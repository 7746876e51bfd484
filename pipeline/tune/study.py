"""The Optuna study behind a search: storage, pruner, stopping rules, crash recovery.

The study lives in RDB storage (SQLite by default, PostgreSQL to share it between machines)
with a heartbeat, so a trial whose process died is failed and retried with the same
parameters by Optuna's ``RetryHeartbeatStaleTrialCallback``; a trial stopped by Ctrl-C or
SIGTERM is retried the same way. The sampler is seeded per trial number, so a resumed study
or a second worker never replays the draws of trials the study already has.

Optuna keeps no public handle on a study's storage; ``storage_of`` is the one place that
reaches for it, and trials are addressed through the storage by their public number.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import optuna
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from pipeline.config.settings import TuneSettings
from pipeline.errors import MlopsError
from pipeline.sqlite_locks import immediate_transactions
from pipeline.sqlite_wal import write_ahead
from pipeline.summary import GoalSpec
from pipeline.tune.attributes import (
    FAILED_TRIAL_ATTR,
    INTERRUPTED_ATTR,
    INTERVAL_ATTR,
    PARENT_ATTR,
    RESULT_ATTR,
    RETRY_HISTORY_ATTR,
    SEED_ATTR,
    WORKER_ATTR,
)
from pipeline.tune.sampling import FINISHED_STATES, TrialSeededSampler


def worker_id() -> str:
    """This process, as host, PID namespace (a container has its own) and PID."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}|{namespace}|{os.getpid()}"


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """One of Optuna's pruners by name; all wait a few trials and epochs before judging."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=3)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=3)
    return optuna.pruners.NopPruner()


def open_study(name: str, direction: str, settings: TuneSettings) -> tuple[optuna.Study, RDBStorage]:
    """Create the study, or load it when a previous run (or another worker) made it.

    Raises:
        MlopsError: when the storage URL is malformed or its database unreachable.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print our own line per trial
    _quiet_interrupts()
    # Heartbeats and the retry callback are "experimental" in Optuna 5; they are the documented way.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # A trial resumed from a checkpoint a little behind its last report (written at most once a
    # second: setting checkpoint_seconds) reports those epochs again; Optuna keeps the first.
    warnings.filterwarnings("ignore", message="The reported value is ignored because")
    retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry, inherit_intermediate_values=True)
    try:
        storage = _storage(settings, retry)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=direction,  # type: ignore[arg-type]
            load_if_exists=True,
            sampler=TrialSeededSampler(settings.seed, lambda seed: TPESampler(seed=seed, n_startup_trials=5)),
            pruner=make_pruner(settings.pruner),
        )
    except Exception as error:
        if isinstance(error, MlopsError):
            raise
        url = redact(settings.storage_url)
        # One line: drivers' messages run over several ("Is the server running...", SQLAlchemy's link).
        first = (str(error).strip().splitlines() or [""])[0]
        password = urlsplit(settings.storage_url).password if "://" in settings.storage_url else None
        if password:
            first = first.replace(password, "***")
        raise MlopsError(f"study storage {url} unusable ({type(error).__name__}: {first}); fix --storage") from None
    return study, storage


def _storage(settings: TuneSettings, retry: RetryHeartbeatStaleTrialCallback, attempts: int = 3) -> RDBStorage:
    """Open the RDB storage; workers starting together on an empty database race to create its tables."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    write_ahead(settings.storage_url)  # a SQLite file: WAL mode, 0.24 ms a commit instead of 5 (pipeline/sqlite_wal.py)
    for attempt in range(attempts):
        try:
            storage = RDBStorage(
                with_driver(settings.storage_url),
                engine_kwargs={"connect_args": {"timeout": 30}} if settings.storage_url.startswith("sqlite") else None,
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                heartbeat_stale_trial_callback=retry,
            )
            # Two workers on one SQLite file must not both take a queued trial (pipeline/sqlite_locks.py).
            immediate_transactions(storage.engine)
            return storage
        except (IntegrityError, ProgrammingError, OperationalError) as error:
            # PostgreSQL: duplicate pg_type row / relation exists; SQLite: table already exists.
            racing = not isinstance(error, OperationalError) or "already exists" in str(error)
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())  # the other worker finishes the schema meanwhile
    raise AssertionError("unreachable")


def with_driver(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 defaults to psycopg 3, we ship psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or importlib.util.find_spec("psycopg") is not None:
        return url
    return f"postgresql+psycopg2{sep}{rest}"


def redact(url: str) -> str:
    """A storage URL with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url


def reclaim_dead_trials(study: optuna.Study, storage: RDBStorage) -> list[int]:
    """Fail and retry RUNNING trials whose process on this machine is gone.

    Optuna would do the same once their heartbeat is older than the grace period; a trial
    that ran here under a PID that no longer exists is certainly dead, so it is reclaimed at
    once instead of making a restarted run wait. Trials of other machines are left to the
    heartbeat. Interrupted trials whose run could not queue their retry are retried too.

    Returns:
        The numbers of the trials reclaimed.
    """
    reclaimed = []
    retry = storage.get_heartbeat_stale_trial_callback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _gone(str(trial.user_attrs.get(WORKER_ATTR, ""))):
            continue
        trial_id = _trial_id(study, storage, trial.number)
        if storage.set_trial_state_values(trial_id, TrialState.FAIL) and claim(study, f"retry-{trial.number}"):
            reclaimed.append(trial.number)
            if retry is not None:
                retry(study, storage.get_trial(trial_id))
    # An interrupted run queues its trial's retry itself; this finishes one it could not.
    return sorted(reclaimed + retry_interrupted(study, storage, everyone=True))


def retry_interrupted(study: optuna.Study, storage: RDBStorage, everyone: bool = False) -> list[int]:
    """Queue a retry of each trial left behind by an interrupt.

    A trial stopped by Ctrl-C or SIGTERM is FAIL (Optuna's doing) and marked
    ``INTERRUPTED_ATTR`` (ours); one of this process left RUNNING (the signal arrived in
    Optuna's own bookkeeping) is failed here. Each is retried exactly like a trial whose
    process died: same parameters, same checkpoint folder. Each retry is claimed once in the
    storage, so the interrupted process and a worker starting meanwhile never both queue it.

    Args:
        study: the study.
        storage: its storage (holding the retry callback).
        everyone: also trials of other processes (a new run picking up what an interrupted
            clean-up could not finish); else only this process's.

    Returns:
        The numbers of the trials queued for retry.
    """
    me = worker_id()
    retry = storage.get_heartbeat_stale_trial_callback()
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get(RETRY_HISTORY_ATTR, [])}  # e.g. by Optuna
    queued = []
    for trial in trials:
        if trial.number in retried or trial.state not in (TrialState.RUNNING, TrialState.FAIL):
            continue
        mine = trial.user_attrs.get(WORKER_ATTR) == me
        if trial.state == TrialState.RUNNING:
            if not mine or not storage.set_trial_state_values(_trial_id(study, storage, trial.number), TrialState.FAIL):
                continue
        elif not trial.user_attrs.get(INTERRUPTED_ATTR) or not (mine or everyone):
            continue
        if not claim(study, f"retry-{trial.number}"):
            continue  # already retried
        queued.append(trial.number)
        if retry is not None:
            retry(study, storage.get_trial(_trial_id(study, storage, trial.number)))
    return queued


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` lives in.

    Optuna 5 has no public accessor for it (``optuna.storages.get_storage(url)`` would open a
    second engine, and an in-memory study has no URL), and marker studies (``claim``,
    ``run_once``) must be created in the very same storage. So this one function reads
    Optuna's private ``Study._storage``; nothing else in the package does.
    """
    return study._storage


def _trial_id(study: optuna.Study, storage: BaseStorage, number: int) -> int:
    """The storage's id of trial ``number`` (a ``FrozenTrial`` keeps it only privately)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def claim(study: optuna.Study, what: str) -> bool:
    """Whether this call is the first, in any process, to claim ``what`` for ``study``.

    The claim is a marker study ``<study>.<what>``: study names are unique, so the storage
    decides atomically.
    """
    try:
        optuna.create_study(study_name=f"{study.study_name}.{what}", storage=storage_of(study))
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def run_once(study: optuna.Study, what: str, work: Callable[[], Any], wait: float = 600.0, poll: float = 0.25) -> Any:
    """Run ``work`` once for ``study`` however many workers get here; all get its result.

    The first worker claims ``what`` (a marker study, as ``claim``), runs ``work`` and stores
    its (JSON-serialisable) result on the marker; the others wait for that result. When the
    claimant died first (this machine, its PID gone) or ``wait`` seconds pass, a waiter
    takes the work over.
    """
    name = f"{study.study_name}.{what}"
    try:
        marker = optuna.create_study(study_name=name, storage=storage_of(study))
    except optuna.exceptions.DuplicatedStudyError:
        marker = optuna.load_study(study_name=name, storage=storage_of(study))
        deadline = time.monotonic() + wait
        while True:
            attrs = marker.user_attrs
            if RESULT_ATTR in attrs:
                return attrs[RESULT_ATTR]
            if time.monotonic() > deadline or _gone(str(attrs.get(WORKER_ATTR, ""))):
                break
            time.sleep(poll)
    marker.set_user_attr(WORKER_ATTR, f"{worker_id()}|{_PROCESS_TOKEN}")
    result = work()
    marker.set_user_attr(RESULT_ATTR, result)
    return result


# Tells this process from an earlier one that had its PID (PIDs repeat, in containers often).
_PROCESS_TOKEN = uuid.uuid4().hex[:12]


def _gone(owner: str) -> bool:
    """Whether the worker ``owner`` (``worker_id``, maybe ``|`` a process token) certainly no longer runs."""
    host, namespace, _ = worker_id().split("|")
    parts = owner.split("|")
    if len(parts) == 4:  # a claim: this very process (another thread of it) is alive
        if parts[:3] == worker_id().split("|") and parts[3] == _PROCESS_TOKEN:
            return False
        parts = parts[:3]
    return len(parts) == 3 and parts[0] == host and parts[1] == namespace and not _alive(int(parts[2]))


class _DropInterruptReports(logging.Filter):
    """Optuna logs a trial failed by Ctrl-C with a traceback; an interrupt is not a crash."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        info = record.exc_info
        if info and info[0] is not None and issubclass(info[0], KeyboardInterrupt):
            self.trials.add(message.split(" failed", 1)[0])  # "Trial 3"
            return False
        # Its second line, "Trial 3 failed with value None.", goes too.
        return message.split(" failed", 1)[0] not in self.trials


def _quiet_interrupts() -> None:
    logger = logging.getLogger("optuna.study._optimize")  # a filter acts on its own logger's records only
    if not any(isinstance(f, _DropInterruptReports) for f in logger.filters):
        logger.addFilter(_DropInterruptReports())


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a PID reused by us is not the old worker
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_parent_run(study: optuna.Study, open_run: Callable[[str | None], str], wait: float = 30.0) -> str:
    """The one MLflow parent run of a study, however many workers start at once.

    The first worker to create the marker study ``<name>.parent`` (a unique name, so the
    storage decides atomically) opens the parent run and records its id on the study; the
    others wait for that id. A claimant that died before recording it is replaced after
    ``wait`` seconds.

    Args:
        study: the study.
        open_run: re-opens the run whose id it is given, or (given ``None``) starts one; returns its id.
        wait: seconds to wait for another worker's parent run.
    """
    existing = study.user_attrs.get(PARENT_ATTR)
    if existing is None:
        try:
            optuna.create_study(study_name=f"{study.study_name}.parent", storage=storage_of(study))
        except optuna.exceptions.DuplicatedStudyError:
            deadline = time.monotonic() + wait
            while existing is None and time.monotonic() < deadline:
                time.sleep(0.25)
                existing = study.user_attrs.get(PARENT_ATTR)
    run_id = open_run(existing)
    if run_id != existing:
        study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against the budget: complete or pruned."""
    return study.get_trials(deepcopy=False, states=FINISHED_STATES)


def goal_met_trials(study: optuna.Study, goal: GoalSpec) -> list[FrozenTrial]:
    """Complete trials that meet ``goal``, judged now: a study may be resumed with another goal."""
    met = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        interval = trial.user_attrs.get(INTERVAL_ATTR)
        if trial.value is not None and goal.reached(trial.value, interval[0] if interval else None):
            met.append(trial)
    return met


class StopAtGoal:
    """An ``optimize`` callback: stop (``study.stop()``) once a trial of the study meets the goal.

    The trial may be this worker's or another worker's on the same study.
    """

    def __init__(self, goal: GoalSpec) -> None:
        self.goal = goal
        self.met = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Called by Optuna after every trial."""
        if goal_met_trials(study, self.goal):
            self.met = True
            study.stop()


def stop_rules(max_trials: int, goal: GoalSpec) -> list[Callable[[optuna.Study, FrozenTrial], None]]:
    """The ``optimize`` callbacks that end a search: the goal, or ``max_trials`` finished trials in the study."""
    return [StopAtGoal(goal), MaxTrialsCallback(max_trials, states=FINISHED_STATES)]


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, for the summary; a trial stopped by Ctrl-C, SIGTERM or the end of a search
    (a helper's, ``pipeline/tune/workers.py``) is ``INTERRUPTED``, not ``FAIL``: it failed at nothing."""
    tally: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        interrupted = trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED_ATTR)
        state = "INTERRUPTED" if interrupted else trial.state.name
        tally[state] = tally.get(state, 0) + 1
    return tally


def trial_seed(trial: FrozenTrial | optuna.Trial, study_seed: int) -> int:
    """The seed a trial trains with: the study's seed plus its retry chain's first number, unless it
    was queued with its own (a warm start repeats the earlier best trial's, so it scores as that did)."""
    seed = trial.user_attrs.get(SEED_ATTR)
    return int(seed) if isinstance(seed, int) else study_seed + trial_origin(trial)


def trial_origin(trial: FrozenTrial | optuna.Trial) -> int:
    """The number of the first trial in a retry chain (whose checkpoint a retry resumes)."""
    if isinstance(trial, FrozenTrial):
        attrs = trial.system_attrs
    else:  # a live Trial exposes its system attributes only through the storage
        storage = storage_of(trial.study)
        attrs = storage.get_trial_system_attrs(_trial_id(trial.study, storage, trial.number))
    return int(attrs.get(FAILED_TRIAL_ATTR, trial.number))
