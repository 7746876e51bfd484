"""First trials: a new study first tries the parameters ``tune.first_trials`` names, the rest drawn.

Real SQLite studies on the stub model, whose ``x`` is its score (``k`` is drawn, unused).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.config.settings import StagedSpec
from pipeline.tune.attributes import FIRST_TRIAL_ATTR, WARM_START_ATTR
from tests.pipeline.stub_model import run_tune, write_stub
from tests.pipeline.tune.stub_search import model_name
from tests.pipeline.tune.test_search import runs_of
from tests.pipeline.tune.test_warm_start import load, search

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")

FIRST = ({"x": 0.61}, {"x": 0.62, "k": 5})


def test_a_new_study_runs_its_first_trials_first_and_then_draws(tmp_path: Path, tracking_uri: str) -> None:
    printed = search(tmp_path, tracking_uri, "s", seed=1, trials=4, first_trials=FIRST)

    trials = load(tmp_path, "s").trials
    assert [t.params["x"] for t in trials[:2]] == [0.61, 0.62]
    assert trials[1].params["k"] == 5
    assert 1 <= trials[0].params["k"] <= 1000  # the key an entry leaves out is drawn
    assert [t.user_attrs.get(FIRST_TRIAL_ATTR) for t in trials] == [0, 1, None, None]
    assert [t.value for t in trials[:2]] == [0.61, 0.62]  # trained and scored like any trial
    assert "first trials: 2 queued from the setting first_trials, before the sampler draws" in printed
    lines = [line for line in printed if line.startswith("trial ")]
    assert [line.endswith(f"(first_trials[{i}])") for i, line in enumerate(lines)] == [True, True, False, False]
    runs = runs_of(tracking_uri, model_name(tmp_path))
    tags = {run.data.tags.get("optuna.trial_number"): run.data.tags for run in runs}  # None: the parent run
    queued = [tags[str(number)].get("mlops.first_trial") for number in range(4)]
    assert queued == ["first_trials[0]", "first_trials[1]", None, None]  # the MLflow run says so too

    # Run again with a larger budget: it goes on from its own trials and queues none again.
    printed = search(tmp_path, tracking_uri, "s", seed=1, trials=6, first_trials=FIRST)
    trials = load(tmp_path, "s").trials
    assert len(trials) == 6 and sum(FIRST_TRIAL_ATTR in t.user_attrs for t in trials) == 2
    assert not any(line.startswith("first trials") for line in printed)


def test_warm_start_trials_go_before_the_first_trials(tmp_path: Path, tracking_uri: str) -> None:
    search(tmp_path, tracking_uri, "earlier", seed=1)
    earlier = load(tmp_path, "earlier").best_trial.params

    search(tmp_path, tracking_uri, "later", seed=2, trials=3, first_trials=FIRST[:1])

    trials = load(tmp_path, "later").trials
    assert (trials[0].user_attrs.get(WARM_START_ATTR), trials[0].params) == ("earlier", earlier)
    assert (trials[1].user_attrs.get(FIRST_TRIAL_ATTR), trials[1].params["x"]) == (0, 0.61)


def test_in_a_staged_search_a_first_trial_stays_in_the_first_stage(tmp_path: Path, tracking_uri: str) -> None:
    write_stub(tmp_path / "stub", name=model_name(tmp_path), space="blocks: {type: int, low: 0, high: 2}")
    printed = search(
        tmp_path, tracking_uri, "staged", seed=1, trials=3, first_trials=FIRST, staged=StagedSpec("blocks", 1)
    )

    trials = load(tmp_path, "staged").trials
    assert [(t.params["x"], t.params["blocks"]) for t in trials[:2]] == [(0.61, 0), (0.62, 0)]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [(t.state, t.params) for t in trials]
    assert not any("failed" in line and "0 failed" not in line for line in printed)


def test_a_met_goal_leaves_the_unrun_first_trials_out_of_the_count(tmp_path: Path, tracking_uri: str) -> None:
    printed = search(tmp_path, tracking_uri, "met", seed=1, trials=5, goal=0.6, first_trials=FIRST)

    states = [t.state for t in load(tmp_path, "met").trials]
    assert states == [TrialState.COMPLETE, TrialState.WAITING]  # queued, never run
    assert any(line.startswith("trials: 1 (1 complete") for line in printed)


def test_model_yaml_first_trials_reach_the_study_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    model = write_stub(tmp_path / "stub", name="first", tune=", first_trials: [{x: 0.55}]")
    done = run_tune(tmp_path, model, "--max-trials", "2", "--study-name", "yaml")
    assert done.returncode == 3, done.stderr  # goal 1.0: never met
    trials = load(tmp_path, "yaml").trials
    assert (trials[0].params["x"], trials[0].user_attrs[FIRST_TRIAL_ATTR]) == (0.55, 0)

    manifest = model / "model.yaml"
    manifest.write_text(manifest.read_text().replace("{x: 0.55}", "{x: 0.95}"))
    done = run_tune(tmp_path, model, "--study-name", "bad")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: setting first_trials[0] (from {manifest} tune.first_trials).x: 0.95 is outside its search range "
        "[0.5, 0.9]; pick a value inside it"
    )
    names = optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert "yaml" in names and "bad" not in names  # checked before any study was made
