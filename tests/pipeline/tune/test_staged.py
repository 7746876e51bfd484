"""The staged search: the cheap value of an int parameter first, the next one only when trials stall.

Real SQLite studies on the stub model, whose ``blocks`` parameter stands for
``fine_tune_blocks``; ``constant=0.7`` makes every trial score the same, so nothing after
trial 0 improves the best and each stage stalls after ``stall_trials`` trials.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.config.manifest import load_manifest
from pipeline.config.preflight import check_run
from pipeline.config.settings import StagedSpec, resolve_settings
from pipeline.errors import MlopsError
from pipeline.summary import TuneSummary
from pipeline.tune.attributes import STAGED_ATTR, STAGED_TRIAL_ATTR
from pipeline.tune.objective import Objective
from pipeline.tune.search import tune
from pipeline.tune.staged import StagedSearch
from tests.pipeline.stub_model import environment, tune_command, write_stub
from tests.pipeline.tune.stub_search import model_name, open_search
from tests.pipeline.tune.test_search import stub_settings

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")

BLOCKS = "blocks: {type: int, low: 0, high: 2}"


def staged_search(study_log: list[str], run_space: object, stall: int = 3) -> StagedSearch:
    return StagedSearch(StagedSpec("blocks", stall), run_space, seed=7, log=study_log.append)  # type: ignore[arg-type]


def test_the_cheap_value_runs_until_it_stalls_then_the_best_trial_is_seeded_one_stage_up(
    tmp_path: Path, tracking_uri: str
) -> None:
    study, run, printed = open_search(tmp_path, tracking_uri, space=BLOCKS, constant=0.7)
    staged = staged_search(printed, run.plugin.manifest.search_space)
    staged.prime(study)
    study.optimize(Objective(run), n_trials=9, callbacks=[staged])

    trials = study.trials
    assert [t.params["blocks"] for t in trials[:4]] == [0, 0, 0, 0]  # stage 0 until 3 trials bring nothing
    assert trials[4].params == {**trials[0].params, "blocks": 1}  # the best head, one block fine-tuned
    assert trials[4].user_attrs[STAGED_TRIAL_ATTR]["seeded_from"] == 0
    assert trials[5].params["blocks"] in (0, 1) and trials[6].params["blocks"] in (0, 1)
    assert trials[7].params == {**trials[0].params, "blocks": 2}  # stage 1 stalled too: stage 2, seeded
    assert "fixed_params" not in trials[8].system_attrs  # the last stage: the sampler draws blocks
    assert all(t.distributions["blocks"] == optuna.distributions.IntDistribution(0, 2) for t in trials)
    assert "staged: blocks <= 1 from trial 4 (best 0.7 unchanged for 3 trials); trial 4 seeded from trial 0" in printed
    assert "staged: blocks <= 2 from trial 7 (best 0.7 unchanged for 3 trials); trial 7 seeded from trial 0" in printed
    state = study.user_attrs[STAGED_ATTR]
    assert (state["cap"], state["opened"], state["seeded"]) == (2, {"1": 4, "2": 7}, {"1": 0, "2": 0})
    assert study.get_trials(states=(TrialState.WAITING,)) == []  # n_trials ended it, nothing was over-queued

    # Where the time went: each trial's duration, summed by its value of blocks.
    summary = staged.summary(study)
    by_value: dict[str, list[float]] = {}
    for trial in trials:
        assert trial.datetime_complete is not None and trial.datetime_start is not None
        elapsed = (trial.datetime_complete - trial.datetime_start).total_seconds()
        by_value.setdefault(str(trial.params["blocks"]), []).append(elapsed)
    assert summary["param"] == "blocks" and summary["opened"] == {"1": 4, "2": 7}
    assert summary["trials"] == {value: len(times) for value, times in sorted(by_value.items())}
    assert summary["seconds"] == pytest.approx({value: sum(times) for value, times in by_value.items()}, abs=0.01)


def test_seed_with_replaces_what_the_cheap_stage_drew_but_never_used(tmp_path: Path, tracking_uri: str) -> None:
    # k stands for fine_tune_learning_rate: drawn in every trial, read only once blocks > 0.
    study, run, printed = open_search(tmp_path, tracking_uri, space=BLOCKS, constant=0.7)
    spec = StagedSpec("blocks", 2, {"k": 17})
    staged = StagedSearch(spec, run.plugin.manifest.search_space, seed=7, log=printed.append)
    staged.prime(study)
    study.optimize(Objective(run), n_trials=4, callbacks=[staged])
    trials = study.trials
    assert trials[0].params["k"] != 17
    assert trials[3].params == {**trials[0].params, "k": 17, "blocks": 1}  # seeded: the best head, k replaced
    assert trials[3].user_attrs[STAGED_TRIAL_ATTR]["seeded_from"] == 0


def test_a_rerun_with_the_same_seed_fixes_the_same_values(tmp_path: Path, tracking_uri: str) -> None:
    drawn = []
    for name in ("first", "second"):
        folder = tmp_path / name
        study, run, printed = open_search(folder, tracking_uri, space=BLOCKS, constant=0.7)
        staged = staged_search(printed, run.plugin.manifest.search_space, stall=2)
        staged.prime(study)
        study.optimize(Objective(run), n_trials=7, callbacks=[staged])
        drawn.append([t.params["blocks"] for t in study.trials[:6]])
    assert drawn[0] == drawn[1]
    assert drawn[0][:3] == [0, 0, 0] and drawn[0][3] == 1  # stage 1 opened at trial 3 (stall 2)


def test_a_second_worker_seeing_the_same_stall_queues_no_second_seeded_trial(tmp_path: Path, tracking_uri: str) -> None:
    study, run, printed = open_search(tmp_path, tracking_uri, space=BLOCKS, constant=0.7)
    space = run.plugin.manifest.search_space
    first = staged_search(printed, space)
    first.prime(study)
    study.optimize(Objective(run), n_trials=3, callbacks=[first])  # trial 3 waits; the stall is one trial off
    study.optimize(Objective(run), n_trials=1)  # trial 3 runs: stage 0 has stalled; no callback ran yet

    # Two workers (each its own handle on the storage) see the stall at once.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    handles = [optuna.load_study(study_name="s", storage=storage) for _ in range(2)]
    logs: list[list[str]] = [[], []]
    workers = [staged_search(log, space) for log in logs]
    barrier = threading.Barrier(2)

    def call(index: int) -> None:
        barrier.wait()
        workers[index](handles[index], handles[index].trials[3])

    threads = [threading.Thread(target=call, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    waiting = study.get_trials(states=(TrialState.WAITING,))
    seeded = [t for t in waiting if "seeded_from" in t.user_attrs[STAGED_TRIAL_ATTR]]
    assert len(seeded) == 1  # the stage opened once
    assert seeded[0].system_attrs["fixed_params"] == {**study.trials[0].params, "blocks": 1}
    assert len(waiting) == 2  # the other worker queued its own next trial, under the new cap
    other = next(t for t in waiting if t is not seeded[0])
    assert other.system_attrs["fixed_params"]["blocks"] in (0, 1)
    assert sorted(len(log) for log in logs) == [0, 1]  # one "staged:" line, by the worker that opened it
    assert study.user_attrs[STAGED_ATTR]["opened"] == {"1": seeded[0].number}


def test_tune_stages_the_search_and_a_resumed_study_keeps_its_stage(tmp_path: Path, tracking_uri: str) -> None:
    model = write_stub(tmp_path / "stub", name=model_name(tmp_path), constant=0.7, space=BLOCKS)
    staged = StagedSpec("blocks", 2)
    printed: list[str] = []
    summary = tune(model, stub_settings(tmp_path, tracking_uri, max_trials=4, staged=staged, seed=7), printed.append)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.params["blocks"] for t in study.trials] == [0, 0, 0, 1]  # trial 3: seeded, stage 1
    assert study.get_trials(states=(TrialState.WAITING,)) == []  # the budget was spent: nothing left queued
    assert summary.staged is not None
    assert (summary.staged["trials"], summary.staged["opened"]) == ({"0": 3, "1": 1}, {"1": 3})
    on_disk = json.loads((tmp_path / "runs" / model_name(tmp_path) / "summary.json").read_text())
    assert on_disk["staged"] == summary.staged
    assert TuneSummary.from_dict(on_disk).staged == summary.staged
    opening = "staged: blocks <= 0 until 2 finished trials in a row (complete or pruned)"
    assert any(line.startswith(opening) for line in printed)

    # The same command with a larger budget: stage 1 goes on (not back to 0), then stage 2 opens.
    printed.clear()
    summary = tune(model, stub_settings(tmp_path, tracking_uri, max_trials=6, staged=staged, seed=7), printed.append)
    trials = study.trials
    assert trials[4].params["blocks"] in (0, 1)
    assert trials[5].params == {**trials[0].params, "blocks": 2}
    assert "staged: blocks <= 2 from trial 5 (best 0.7 unchanged for 2 trials); trial 5 seeded from trial 0" in printed
    assert not any("until" in line for line in printed if line.startswith("staged:"))  # not primed afresh
    assert study.user_attrs[STAGED_ATTR]["since"] == 0
    assert summary.staged is not None and summary.staged["opened"] == {"1": 3, "2": 5}


def test_a_staged_parameter_that_params_fixes_is_not_searched_or_staged(tmp_path: Path, tracking_uri: str) -> None:
    model = write_stub(tmp_path / "stub", name=model_name(tmp_path), constant=0.7, space=BLOCKS)
    manifest = model / "model.yaml"
    manifest.write_text(manifest.read_text().replace("params: {", "params: {blocks: 2, "))
    settings = stub_settings(
        tmp_path, tracking_uri, max_trials=4, staged=StagedSpec("blocks", 1), seed=7, overrides=["params.blocks=0"]
    )
    printed: list[str] = []
    summary = tune(model, settings, printed.append)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 4 and all("blocks" not in t.params for t in study.trials)  # stall 1 would open 1, 2
    assert "staged: off, blocks is fixed by params (one flat search)" in printed
    assert summary.staged is None and STAGED_ATTR not in study.user_attrs
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(model_name(tmp_path))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`optuna.trial_number` != ''")
    assert sorted(run.data.params["blocks"] for run in runs) == ["0"] * 4  # what train() was given


@pytest.mark.slow
def test_a_study_resumed_in_a_new_process_keeps_its_stage(tmp_path: Path) -> None:
    tune_yaml = ", staged: {param: blocks, stall_trials: 2}"
    model = write_stub(tmp_path / "stub", constant=0.7, space=BLOCKS, tune=tune_yaml)
    outputs = []
    for budget in ("4", "6"):
        command = tune_command(tmp_path, model, "--study-name", "shared", "--max-trials", budget)
        result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=240)
        assert result.returncode == 3, result.stdout + result.stderr  # the goal (1.0) is never met
        outputs.append(result.stdout)
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.params["blocks"] for t in trials[:4]] == [0, 0, 0, 1]
    assert trials[4].params["blocks"] in (0, 1) and trials[5].params == {**trials[0].params, "blocks": 2}
    assert "staged: blocks <= 0 until" in outputs[0] and "staged: blocks <= 0 until" not in outputs[1]
    assert (
        "staged: blocks <= 2 from trial 5 (best 0.7 unchanged for 2 trials); trial 5 seeded from trial 0"
        in (outputs[1])
    )
    summary = TuneSummary.read(tmp_path / "runs" / "stub" / "summary.json")
    assert summary.staged is not None and summary.staged["trials"] == {
        "0": 3 + (trials[4].params["blocks"] == 0),
        "1": 1 + (trials[4].params["blocks"] == 1),
        "2": 1,
    }


@pytest.mark.parametrize(
    ("staged", "space", "message"),
    [
        (
            {"param": "fine_tune_blocks", "stall_trials": 6},
            BLOCKS,
            "setting staged.param='fine_tune_blocks' (from model.yaml tune.staged): the search space has no "
            "parameter 'fine_tune_blocks' (it has: x, k, blocks); fix the name or add it to search_space as "
            "{type: int, low: 0, high: 2}",
        ),
        (
            {"param": "x"},
            BLOCKS,
            "setting staged.param='x' (from model.yaml tune.staged): 'x' is a float parameter; staging needs a "
            "plain int one (search_space x: {type: int, low: 0, high: 2})",
        ),
        (
            {"param": "blocks", "stall_trials": 0},
            BLOCKS,
            "model.yaml tune: setting staged.stall_trials = 0 must be a whole number of at least 1 (finished "
            "trials without a new best before the next stage opens); e.g. staged: {param: fine_tune_blocks, "
            "stall_trials: 6, seed_with: {fine_tune_learning_rate: 1.0e-5}}",
        ),
        (
            {"stall_trials": 6},
            BLOCKS,
            "model.yaml tune: setting 'staged' = {'stall_trials': 6} needs an int search parameter; use staged: "
            "{param: fine_tune_blocks, stall_trials: 6, seed_with: {fine_tune_learning_rate: 1.0e-5}}",
        ),
        (
            {"param": "blocks", "seed_with": {"x": 2.0}},
            BLOCKS,
            "setting staged.seed_with.x=2.0 (from model.yaml tune.staged): outside its search range [0.5, 0.9]; "
            "pick a value inside it",
        ),
        (
            {"param": "blocks", "seed_with": {"lr": 1e-5}},
            BLOCKS,
            "setting staged.seed_with.lr=1e-05 (from model.yaml tune.staged): not a plain parameter of the search "
            "space; use one of: x, k",
        ),
        (
            {"param": "blocks", "seed_with": {"k": 2.5}},
            BLOCKS,
            "setting staged.seed_with.k=2.5 (from model.yaml tune.staged): must be an int; e.g. 1",
        ),
    ],
    ids=["missing", "not-int", "stall-0", "no-param", "seed-out-of-range", "seed-unknown", "seed-not-int"],
)
def test_a_bad_staged_setting_is_one_line_before_any_work(
    tmp_path: Path, staged: dict[str, object], space: str, message: str
) -> None:
    model = write_stub(tmp_path / "stub", space=space)
    manifest = load_manifest(model)
    with pytest.raises(MlopsError) as raised:
        settings = resolve_settings({**manifest.tune, "staged": staged}, {}, {"runs_dir": tmp_path / "runs"})
        check_run(manifest, settings)
    assert str(raised.value) == message
    assert not (tmp_path / "runs").exists()  # checked before any folder is made


def test_mlops_tune_refuses_a_bad_staged_setting_with_exit_2(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", tune=", staged: {param: k, stall_trials: 0}")
    result = subprocess.run(
        tune_command(tmp_path, model), cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {model / 'model.yaml'} tune: setting staged.stall_trials = 0 must be a whole number of at least 1 "
        "(finished trials without a new best before the next stage opens); e.g. staged: {param: fine_tune_blocks, "
        "stall_trials: 6, seed_with: {fine_tune_learning_rate: 1.0e-5}}"
    ]
    assert not (tmp_path / "optuna.db").exists()


def test_a_summary_without_staged_still_reads(tmp_path: Path) -> None:
    from tests.pipeline.report.test_ci_summary import make_summary

    old = json.loads(make_summary(tmp_path).to_json())
    del old["staged"]  # written before staged searches existed
    assert TuneSummary.from_dict(old).staged is None
    with pytest.raises(ValueError):
        TuneSummary.from_dict({**old, "staged": {"param": "b", "seconds": ["not", "a", "mapping"]}})


@pytest.mark.slow
def test_two_workers_open_each_stage_once_and_run_every_trial_staged(tmp_path: Path) -> None:
    from tests.pipeline.tune.test_parallel_workers import run_two

    tune_yaml = ", staged: {param: blocks, stall_trials: 2}"
    model = write_stub(tmp_path / "stub", epochs=2, sleep=0.2, constant=0.7, space=BLOCKS, tune=tune_yaml)
    for result in run_two(tmp_path, model, "--max-trials", "10"):
        assert result.returncode == 3, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.trials
    assert len({t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs}) == 2  # both ran trials
    seeded = [t.user_attrs[STAGED_TRIAL_ATTR]["cap"] for t in trials if "seeded_from" in t.user_attrs.get("staged", {})]
    assert seeded == [1, 2]  # each stage opened, and seeded, once
    opened = study.user_attrs[STAGED_ATTR]["opened"]
    for trial in trials:
        if trial.number < opened["2"]:  # before the last stage every trial had blocks fixed, within its cap
            fixed = trial.system_attrs["fixed_params"]["blocks"]
            assert fixed == trial.params["blocks"] <= trial.user_attrs[STAGED_TRIAL_ATTR]["cap"]


def test_staged_merges_like_any_tune_setting() -> None:
    model_yaml = {"staged": {"param": "blocks", "stall_trials": 4}}
    assert resolve_settings(model_yaml, {}, {}).staged == StagedSpec("blocks", 4)
    assert resolve_settings({"staged": {"param": "blocks"}}, {}, {}).staged == StagedSpec("blocks", 6)  # default stall
    environ = {"MLOPS_STAGED": "{param: blocks, stall_trials: 2}"}
    assert resolve_settings(model_yaml, {}, {}, environ=environ).staged == StagedSpec("blocks", 2)
    assert resolve_settings(model_yaml, {}, {}, environ={"MLOPS_STAGED": "none"}).staged is None  # switched off
    assert resolve_settings(model_yaml, {"tune": {"staged": None}}, {}).staged is None
    seeded = {"staged": {"param": "blocks", "seed_with": {"k": 3}}}
    assert resolve_settings(seeded, {}, {}).staged == StagedSpec("blocks", 6, {"k": 3})


def test_pruned_trials_count_toward_a_stall() -> None:
    """A pruned trial brought nothing better: under a median pruner most cheap trials end pruned."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from pipeline.tune.staged import _stall

    study = optuna.create_study(direction="maximize")
    space = {"x": FloatDistribution(0.0, 1.0)}
    study.add_trial(create_trial(value=0.9, params={"x": 0.9}, distributions=space))
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.2}, distributions=space))
    study.add_trial(create_trial(value=0.8, params={"x": 0.8}, distributions=space))
    best, stalled = _stall(study, 0)
    assert best is not None and best.number == 0 and stalled == 4
    assert _stall(study, 3) == (best, 2)  # only the current stage's trials count
