from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pipeline.settings import TuneSettings
from pipeline.study import (
    StopRules,
    claim_parent_run,
    goal_met_trials,
    open_study,
    reclaim_dead_trials,
    redact,
    trial_origin,
    worker_id,
)
from pipeline.summary import GoalSpec


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
    rules = StopRules(max_trials=3, goal=goal)
    study.optimize(lambda trial: float(trial.number), n_trials=10, callbacks=[rules])
    assert len(study.trials) == 2 and rules.reason == "goal"  # trial 1 scored 1.0
    # The same study judged against a higher goal: nothing meets it any more.
    assert goal_met_trials(study, GoalSpec(target=2.0)) == []
    study2, _ = open_study("t", "maximize", settings_for(tmp_path))
    rules2 = StopRules(max_trials=3, goal=goal)
    study2.optimize(lambda t: 0.0, n_trials=10, callbacks=[rules2])
    assert len(study2.trials) == 3 and rules2.reason == "max_trials"


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
