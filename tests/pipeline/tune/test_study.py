from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.config.settings import TuneSettings
from pipeline.summary import GoalSpec
from pipeline.tune.attributes import INTERRUPTED_ATTR
from pipeline.tune.sampling import duplicate_of, trial_seed
from pipeline.tune.study import (
    StopAtGoal,
    claim_parent_run,
    goal_met_trials,
    open_study,
    reclaim_dead_trials,
    redact,
    retry_interrupted,
    run_once,
    stop_rules,
    storage_of,
    trial_origin,
    worker_id,
)


def settings_for(tmp_path: Path, **extra: object) -> TuneSettings:
    return TuneSettings(storage=f"sqlite:///{tmp_path / 'optuna.db'}", **extra)  # type: ignore[arg-type]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def test_trial_of_a_dead_process_is_failed_and_retried_with_its_parameters(tmp_path: Path) -> None:
    study, storage = open_study("s", "maximize", settings_for(tmp_path))
    done = study.ask()
    done.suggest_float("lr", 0.0, 1.0)
    study.tell(done, 0.5)
    orphan = study.ask()
    lr = orphan.suggest_float("lr", 0.0, 1.0)
    orphan.report(0.4, 3)
    host, namespace, _ = worker_id().split("|")
    orphan.set_user_attr("worker", f"{host}|{namespace}|{dead_pid()}")
    orphan.set_user_attr("mlflow_run_id", "run-123")

    # A second process opening the same study (the restarted command) reclaims it at once.
    study2, storage2 = open_study("s", "maximize", settings_for(tmp_path))
    assert reclaim_dead_trials(study2, storage2) == [orphan.number]
    states = {t.number: t.state for t in study2.get_trials()}
    assert states[orphan.number] == TrialState.FAIL
    retry = study2.get_trials(states=(TrialState.WAITING,))[0]
    assert retry.params == {"lr": lr}
    assert retry.user_attrs["mlflow_run_id"] == "run-123"  # so the retry re-opens the same MLflow run
    assert retry.intermediate_values == {3: 0.4}
    assert trial_origin(retry) == orphan.number
    assert states[done.number] == TrialState.COMPLETE  # nothing completed is lost


def test_live_or_foreign_trials_are_left_to_the_heartbeat(tmp_path: Path) -> None:
    study, storage = open_study("s", "maximize", settings_for(tmp_path))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host, namespace, _ = worker_id().split("|")
        running_elsewhere = study.ask()
        running_elsewhere.set_user_attr("worker", f"{host}|{namespace}|{alive.pid}")
        other_machine = study.ask()
        other_machine.set_user_attr("worker", f"another-host|pid:[1]|{dead_pid()}")
        assert reclaim_dead_trials(study, storage) == []
    finally:
        alive.kill()
        alive.wait()


def test_stop_rules_stop_at_goal_or_budget(tmp_path: Path) -> None:
    study, _ = open_study("s", "maximize", settings_for(tmp_path))
    goal = GoalSpec(metric="val_accuracy", target=1.0)
    rules = stop_rules(max_trials=3, goal=goal)
    study.optimize(lambda trial: float(trial.number), n_trials=10, callbacks=rules)
    assert len(study.trials) == 2  # trial 1 scored 1.0
    assert isinstance(rules[0], StopAtGoal) and rules[0].met
    # The same study judged against a higher goal: nothing meets it any more.
    assert goal_met_trials(study, GoalSpec(target=2.0)) == []
    study2, _ = open_study("t", "maximize", settings_for(tmp_path))
    rules2 = stop_rules(max_trials=3, goal=goal)
    study2.optimize(lambda t: 0.0, n_trials=10, callbacks=rules2)
    assert len(study2.trials) == 3
    assert isinstance(rules2[0], StopAtGoal) and not rules2[0].met


def test_the_budget_counts_pruned_trials_but_not_failed_ones(tmp_path: Path) -> None:
    study, _ = open_study("s", "maximize", settings_for(tmp_path))
    outcomes = iter(["fail", "pruned", "fail", "pruned", 0.5, 0.5])

    def objective(trial: optuna.Trial) -> float:
        outcome = next(outcomes)
        if outcome == "fail":
            raise ValueError("boom")
        if outcome == "pruned":
            raise optuna.TrialPruned()
        return float(outcome)

    study.optimize(objective, n_trials=10, callbacks=stop_rules(3, GoalSpec(target=1.0)), catch=(ValueError,))
    assert [t.state for t in study.trials] == [
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://mlops:s3cret@db:5432/optuna") == "postgresql://mlops:***@db:5432/optuna"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"


def test_workers_starting_together_share_one_parent_run(tmp_path: Path) -> None:
    created: list[str] = []
    results: list[str] = []

    def open_run(run_id: str | None) -> str:
        if run_id is not None:
            return run_id
        time.sleep(0.5)  # as slow as an MLflow create_run over the network, and then some
        created.append(f"run-{len(created)}")
        return created[-1]

    def worker() -> None:
        study, _ = open_study("shared", "maximize", settings_for(tmp_path))
        results.append(claim_parent_run(study, open_run, wait=10))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1
    assert results == created * 3


def draw(study: optuna.Study, count: int) -> None:
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) + t.suggest_int("k", 1, 1000) / 1000, n_trials=count)


def params_of(study: optuna.Study) -> list[tuple[float, int]]:
    return [(t.params["x"], t.params["k"]) for t in study.get_trials()]


def test_an_epoch_reported_again_keeps_its_first_value_without_a_warning(tmp_path: Path) -> None:
    """A fit resumed from a checkpoint behind its last report (written at most once a second) replays epochs."""
    study, _ = open_study("s", "maximize", settings_for(tmp_path))
    trial = study.ask()
    with warnings.catch_warnings(record=True) as caught:
        trial.report(0.5, 0)
        trial.report(0.9, 0)
    assert [str(w.message) for w in caught] == []
    assert study.trials[0].intermediate_values == {0: 0.5}


def test_a_resumed_study_draws_new_parameters(tmp_path: Path) -> None:
    first, _ = open_study("s", "maximize", settings_for(tmp_path, seed=3))
    draw(first, 3)
    again, _ = open_study("s", "maximize", settings_for(tmp_path, seed=3))  # the restarted command
    draw(again, 3)
    assert len(set(params_of(again))) == 6  # was 4: the restart replayed trials 0 and 1


def test_parallel_workers_draw_different_parameters(tmp_path: Path) -> None:
    one, _ = open_study("s", "maximize", settings_for(tmp_path))
    two, _ = open_study("s", "maximize", settings_for(tmp_path))
    trials = []
    for _ in range(3):  # interleaved, as two processes on one study
        for worker in (one, two):
            trial = worker.ask()
            trials.append((trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("k", 1, 1000)))
            worker.tell(trial, 0.5)
    assert len(set(trials)) == 6


def test_the_same_seed_gives_the_same_first_trials(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _ = open_study("s", "maximize", settings_for(tmp_path / "a", seed=11))
    b, _ = open_study("s", "maximize", settings_for(tmp_path / "b", seed=11))
    c, _ = open_study("c", "maximize", settings_for(tmp_path / "b", seed=12))
    for study in (a, b, c):
        draw(study, 2)
    assert params_of(a) == params_of(b)
    assert params_of(a)[0] != params_of(c)[0]


def test_trial_seed_depends_on_seed_and_number() -> None:
    assert trial_seed(42, 0) == trial_seed(42, 0)
    assert len({trial_seed(42, 0), trial_seed(42, 1), trial_seed(43, 0)}) == 3


def test_a_finished_parameter_set_is_found(tmp_path: Path) -> None:
    study, _ = open_study("s", "maximize", settings_for(tmp_path))
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    second = study.ask()
    second.suggest_float("x", 0.0, 1.0)
    assert duplicate_of(study, second) == 0
    third = study.ask()
    third.suggest_float("x", 0.0, 1.0)  # a fresh draw
    assert duplicate_of(study, third) is None


def test_an_interrupted_trial_is_retried_once_with_its_parameters(tmp_path: Path) -> None:
    study, storage = open_study("s", "maximize", settings_for(tmp_path))
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr(INTERRUPTED_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)  # what Optuna does with a KeyboardInterrupt
    left_running = study.ask()  # the signal arrived in Optuna's own bookkeeping
    left_running.suggest_float("x", 0.0, 1.0)
    left_running.set_user_attr("worker", worker_id())

    assert retry_interrupted(study, storage) == [trial.number, left_running.number]
    assert retry_interrupted(study, storage) == []  # already queued: never twice
    again, storage2 = open_study("s", "maximize", settings_for(tmp_path))
    assert reclaim_dead_trials(again, storage2) == []
    waiting = again.get_trials(states=(TrialState.WAITING,))
    assert [trial_origin(t) for t in waiting] == [trial.number, left_running.number]
    assert waiting[0].params == {"x": x}


def test_a_later_run_retries_an_interrupt_its_run_could_not_queue(tmp_path: Path) -> None:
    study, _ = open_study("s", "maximize", settings_for(tmp_path))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    host, namespace, _ = worker_id().split("|")
    trial.set_user_attr("worker", f"{host}|{namespace}|{dead_pid()}")
    trial.set_user_attr(INTERRUPTED_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)
    again, storage = open_study("s", "maximize", settings_for(tmp_path))
    assert reclaim_dead_trials(again, storage) == [trial.number]
    assert reclaim_dead_trials(again, storage) == []


def test_run_once_runs_the_work_once_across_workers(tmp_path: Path) -> None:
    calls: list[int] = []
    results: list[str] = []

    def work() -> str:
        time.sleep(0.5)
        calls.append(1)
        return "model/1"

    def worker() -> None:
        study, _ = open_study("shared", "maximize", settings_for(tmp_path))
        results.append(run_once(study, "registered-0", work, wait=20))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == ["model/1"] * 3


def test_run_once_takes_over_from_a_dead_claimant(tmp_path: Path) -> None:
    study, _ = open_study("s", "maximize", settings_for(tmp_path))
    marker = optuna.create_study(study_name="s.registered-0", storage=storage_of(study))
    host, namespace, _ = worker_id().split("|")
    marker.set_user_attr("worker", f"{host}|{namespace}|{dead_pid()}")  # killed mid-registration
    assert run_once(study, "registered-0", lambda: "model/1", wait=60) == "model/1"
