"""Warm start: a new study on the same data first tries the best trials of earlier studies.

Real SQLite studies on the stub model, whose ``x`` is its score; ``params.fingerprint`` is
the data fingerprint its ``prepare`` reports (what the face model derives from its images).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.config.search_space import SearchSpace
from pipeline.config.settings import StagedSpec
from pipeline.tune.attributes import DATA_ATTR, SEED_ATTR, WARM_START_ATTR
from pipeline.tune.search import tune
from tests.pipeline.stub_model import write_stub
from tests.pipeline.tune.stub_search import model_name
from tests.pipeline.tune.test_search import stub_settings

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def stub_on(tmp_path: Path, fingerprint: str = "faces-1") -> Path:
    model = write_stub(tmp_path / "stub", name=model_name(tmp_path))  # goal 1.0: never met, x < 0.9
    manifest = model / "model.yaml"
    manifest.write_text(manifest.read_text().replace("params: {", f"params: {{fingerprint: {fingerprint}, "))
    return model


def search(tmp_path: Path, uri: str, study: str, *, seed: int, trials: int = 3, **extra: object) -> list[str]:
    """One ``tune`` of the stub (made on first use) as study ``study``; what it printed."""
    printed: list[str] = []
    settings = replace(stub_settings(tmp_path, uri, seed=seed, max_trials=trials, **extra), study_name=study)
    model = tmp_path / "stub" if (tmp_path / "stub").exists() else stub_on(tmp_path)
    tune(model, settings, printed.append)
    return printed


def load(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_new_study_on_the_same_data_first_tries_the_earlier_best(tmp_path: Path, tracking_uri: str) -> None:
    search(tmp_path, tracking_uri, "first", seed=1)
    first = load(tmp_path, "first")
    assert first.user_attrs[DATA_ATTR] == "faces-1" and all(WARM_START_ATTR not in t.user_attrs for t in first.trials)

    printed = search(tmp_path, tracking_uri, "second", seed=2)
    second = load(tmp_path, "second")
    assert second.trials[0].params == first.best_trial.params  # trained and scored again, as a trial of its own
    assert second.trials[0].user_attrs[WARM_START_ATTR] == "first"
    assert second.trials[0].value == pytest.approx(first.best_value)  # the stub scores x
    # It trains with the seed the earlier best trained with (its own would be 2 + 0): it scores as that did.
    source_seed = first.best_trial.user_attrs[SEED_ATTR]
    assert second.trials[0].user_attrs[SEED_ATTR] == source_seed == 1 + first.best_trial.number
    assert [t.user_attrs[SEED_ATTR] for t in second.trials[1:]] == [2 + t.number for t in second.trials[1:]]
    assert [t for t in second.trials[1:] if WARM_START_ATTR in t.user_attrs] == []  # then it searches
    assert any(line.startswith("warm start: the first 1 trial(s) try the best parameters") for line in printed)
    assert [line for line in printed if line.startswith("trial   0")][0].endswith("(warm start from first)")

    # The next study starts from both (one, if the second's best is the first's), newest first;
    # run again, it goes on from its own trials and queues nothing more.
    search(tmp_path, tracking_uri, "third", seed=3)
    expected = [("second", second.best_trial.params)]
    if first.best_trial.params != second.best_trial.params:
        expected.append(("first", first.best_trial.params))
    third = load(tmp_path, "third").trials
    assert [(t.user_attrs.get(WARM_START_ATTR), t.params) for t in third[: len(expected)]] == expected
    printed = search(tmp_path, tracking_uri, "third", seed=3, trials=5)
    assert not any(line.startswith("warm start") for line in printed)
    assert sum(WARM_START_ATTR in t.user_attrs for t in load(tmp_path, "third").trials) == len(expected)


def test_a_staged_search_runs_the_warm_start_first_and_queues_nothing_once_it_meets_the_goal(
    tmp_path: Path, tracking_uri: str
) -> None:
    search(tmp_path, tracking_uri, "first", seed=1)
    best = load(tmp_path, "first").best_value
    printed = search(tmp_path, tracking_uri, "staged", seed=2, goal=best, staged=StagedSpec("k", 1))
    trials = load(tmp_path, "staged").trials
    assert [(t.state, t.user_attrs.get(WARM_START_ATTR)) for t in trials] == [(TrialState.COMPLETE, "first")]
    assert any(line.startswith("goal met:") for line in printed)


def test_other_data_or_no_warm_start_search_from_scratch(tmp_path: Path, tracking_uri: str) -> None:
    search(tmp_path, tracking_uri, "first", seed=1)
    search(tmp_path, tracking_uri, "other-data", seed=2, overrides=["params.fingerprint=faces-2"])
    search(tmp_path, tracking_uri, "switched-off", seed=3, warm_start=False)
    for name in ("other-data", "switched-off"):
        assert all(WARM_START_ATTR not in t.user_attrs for t in load(tmp_path, name).trials), name
    assert load(tmp_path, "switched-off").user_attrs[DATA_ATTR] == "faces-1"  # still recorded for later studies


def test_an_earlier_best_outside_this_space_is_passed_over() -> None:
    space = SearchSpace.parse(
        {
            "n_layers": {"type": "int", "low": 1, "high": 3},
            "units": {"type": "int", "low": 8, "high": 64, "per_layer": "n_layers"},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
        "x",
    )
    best = {"n_layers": 2, "units_0": 16, "units_1": 64, "optimizer": "sgd", "dropout": 0.1}
    assert space.optuna_params(best) == {"n_layers": 2, "units_0": 16, "units_1": 64, "optimizer": "sgd"}
    assert space.optuna_params({**best, "units_1": 65}) is None  # above high
    assert space.optuna_params({**best, "optimizer": "rmsprop"}) is None  # not a choice
    assert space.optuna_params({**best, "n_layers": 4}) is None
    assert space.optuna_params({"n_layers": 2, "units_0": 16, "optimizer": "sgd"}) is None  # a layer's width missing
    assert space.fixing({"n_layers": 1}).optuna_params(best) == {"units_0": 16, "optimizer": "sgd"}
