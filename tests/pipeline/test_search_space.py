from __future__ import annotations

import optuna
import pytest

from pipeline.errors import MlopsError
from pipeline.search_space import SearchSpace

SPACE = {
    "units": {"type": "int", "low": 8, "high": 64, "log": True, "per_layer": "n_layers"},
    "n_layers": {"type": "int", "low": 1, "high": 4},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}


def test_per_layer_values_follow_the_layer_count() -> None:
    space = SearchSpace.parse(SPACE, "model.yaml: search_space")
    assert space.names()[-1] == "units"  # sampled after n_layers
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        params = space.sample(trial)
        assert len(params["units"]) == params["n_layers"]
        assert all(8 <= u <= 64 for u in params["units"])
        assert params["optimizer"] in ("adam", "sgd")
        study.tell(trial, 0.0)


def test_fixed_trial_replays_parameters() -> None:
    space = SearchSpace.parse(SPACE, "x")
    fixed = {"n_layers": 2, "units_0": 16, "units_1": 32, "dropout": 0.1, "optimizer": "sgd"}
    assert space.sample(optuna.trial.FixedTrial(fixed))["units"] == [16, 32]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log-scale range needs low > 0"),
        ({"lr": {"type": "double", "low": 0, "high": 1}}, "search_space.lr.type must be one of"),
        ({"lr": {"type": "float", "low": 2, "high": 1}}, "low (2.0) is above high (1.0)"),
        ({"lr": {"type": "float", "low": 0, "hihg": 1}}, "unknown key 'hihg'"),
        ({"opt": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
        ({"u": {"type": "int", "low": 1, "high": 2, "per_layer": "layers"}}, "names 'layers'"),
        ({}, "is empty"),
    ],
)
def test_bad_space_names_the_key(spec: dict, message: str) -> None:
    with pytest.raises(MlopsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchSpace.parse(spec, "model.yaml: search_space")
