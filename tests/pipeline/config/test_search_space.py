from __future__ import annotations

import optuna
import pytest

from pipeline.config.option_schema import OptionSpec
from pipeline.config.search_space import SearchSpace
from pipeline.errors import MlopsError

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


def test_a_parameter_params_sets_is_held_there_and_not_suggested() -> None:
    space = SearchSpace.parse(SPACE, "x").fixing({"optimizer": "sgd", "n_layers": 3, "patience": 4})
    assert space.names() == ["dropout", "units"] and space.fixed_names() == ["n_layers", "optimizer"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = []
    for _ in range(5):
        trial = study.ask()
        params = space.sample(trial)
        assert params["optimizer"] == "sgd" and params["n_layers"] == 3 and len(params["units"]) == 3
        assert "patience" not in params  # a param the space does not declare stays the model's own
        assert set(trial.params) == {"dropout", "units_0", "units_1", "units_2"}  # Optuna searches the rest
        study.tell(trial, 0.0)
        drawn.append(params)
    # What the refit after a restart does: the stored Optuna params give back what train() got.
    assert [space.sample(optuna.trial.FixedTrial(t.params)) for t in study.trials] == drawn


def test_a_fixed_per_layer_width_is_given_to_every_layer_or_one_each() -> None:
    space = SearchSpace.parse(SPACE, "x")
    trial = optuna.trial.FixedTrial({"n_layers": 2, "dropout": 0.1, "optimizer": "sgd"})
    assert space.fixing({"units": 48}).sample(trial)["units"] == [48, 48]
    assert space.fixing({"units": [16, 32]}).sample(trial)["units"] == [16, 32]
    assert space.fixing({}) is space


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


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"n": {"type": "int", "low": 1.5, "high": 4}}, "an int range needs whole-number low and high"),
        ({"n": {"type": "int", "low": True, "high": 4}}, "needs numeric 'low' and 'high'"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1, "log": "yes"}}, "search_space.lr.log must be true or false"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "step": "abc"}}, "search_space.lr.step must be a positive"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "step": -0.1}}, "search_space.lr.step must be a positive"),
        ({"u": {"type": "int", "low": 1, "high": 2, "per_layer": 3}}, "per_layer must name another parameter"),
    ],
)
def test_wrong_types_in_the_space_name_the_key(spec: dict, message: str) -> None:
    with pytest.raises(MlopsError) as error:
        SearchSpace.parse(spec, "model.yaml: search_space")
    assert message in str(error.value)


def test_space_is_checked_against_what_the_model_reads() -> None:
    accepts = {
        "optimizer": OptionSpec("str", choices=("adam", "sgd")),
        "units": OptionSpec("int", bounds=(("ge", 1.0),)),
        "n_layers": OptionSpec("int", bounds=(("ge", 1.0),)),
        "dropout": OptionSpec("float", bounds=(("ge", 0.0), ("lt", 1.0))),
    }
    SearchSpace.parse(SPACE, "s").check_against(accepts, "s")
    SearchSpace.parse(SPACE, "s").check_against(None, "s")  # nothing declared: nothing checked
    bad = {**SPACE, "optimizer": {"type": "categorical", "choices": ["adam", "adagrad"]}}
    with pytest.raises(MlopsError, match=r"^s.optimizer.choices: 'adagrad' is unknown; use one of adam, sgd$"):
        SearchSpace.parse(bad, "s").check_against(accepts, "s")
    bad = {**SPACE, "units": {"type": "int", "low": 0, "high": 64, "per_layer": "n_layers"}}
    with pytest.raises(MlopsError, match=r"^s.units.low: 0 must be >= 1 \(the model reads int >= 1\)$"):
        SearchSpace.parse(bad, "s").check_against(accepts, "s")
    with pytest.raises(MlopsError, match=r"^s.dropout: the model reads no hyperparameter 'dropout'; allowed: n_layers"):
        SearchSpace.parse(SPACE, "s").check_against({k: v for k, v in accepts.items() if k != "dropout"}, "s")


def test_given_params_are_named_as_optuna_names_them_and_checked() -> None:
    space = SearchSpace.parse(
        {
            "n_layers": {"type": "int", "low": 0, "high": 3},
            "units": {"type": "int", "low": 8, "high": 64, "per_layer": "n_layers"},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
        "search_space",
    )
    assert space.given_params({"n_layers": 2, "units": [16, 64]}, "w") == {"n_layers": 2, "units_0": 16, "units_1": 64}
    assert space.given_params({"n_layers": 2, "units": 32}, "w") == {"n_layers": 2, "units_0": 32, "units_1": 32}
    assert space.given_params({"n_layers": 0, "units": []}, "w") == {"n_layers": 0}
    assert space.given_params({"optimizer": "sgd"}, "w") == {"optimizer": "sgd"}  # the rest drawn
    assert space.fixing({"n_layers": 1}).given_params({"n_layers": 3, "units": 16}, "w") == {"units_0": 16}
    problems = {
        "w.lr: not a parameter of the search space; use one of: n_layers, optimizer, units": {"lr": 0.1},
        "w.units: one value per layer of n_layers; give n_layers too": {"units": 16},
        "w.units: 1 value(s) for 2 layer(s); give one per layer": {"n_layers": 2, "units": [16]},
        "w.units[1]: 65 is outside its search range [8, 64]; pick a value inside it": {"n_layers": 2, "units": [8, 65]},
        "w.n_layers: 4 is outside its search range [0, 3]; pick a value inside it": {"units": 16, "n_layers": 4},
        "w.optimizer: 'adamw' is not one of its choices ['adam', 'sgd']; pick one of them": {"optimizer": "adamw"},
    }
    for message, given in problems.items():
        with pytest.raises(MlopsError) as raised:
            space.given_params(given, "w")
        assert str(raised.value) == message
