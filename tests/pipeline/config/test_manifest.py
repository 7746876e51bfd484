from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.manifest import load_manifest
from pipeline.errors import MlopsError
from pipeline.summary import GoalSpec

ROOT = Path(__file__).resolve().parents[3]
GOOD = """
name: demo
goal: {metric: val_rmse, direction: minimize, target: 50}
search_space:
  alpha: {type: float, low: 0.001, high: 10, log: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "model.yaml").write_text(text)
    return tmp_path


def test_reads_goal_and_space(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, GOOD))
    assert manifest.name == "demo"
    assert manifest.goal.direction == "minimize"
    assert manifest.goal.reached(49.0) and not manifest.goal.reached(51.0)
    assert manifest.search_space.names() == ["alpha"]


def test_every_shipped_model_manifest_parses() -> None:
    folders = [p.parent for p in (ROOT / "models").glob("*/model.yaml")]
    assert folders, "no models shipped"
    for folder in folders:
        assert load_manifest(folder).name == folder.name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "tunning: {}\n", "unknown key 'tunning'"),
        (GOOD.replace("minimize", "down"), "goal.direction must be 'maximize' or 'minimize'"),
        (GOOD + "kind: transformer\n", "kind 'transformer' is unknown"),
        ("name: demo\nsearch_space: [\n", "is not valid YAML"),
        (GOOD.replace("target: 50", "target: high"), "goal.target must be a number"),
        (GOOD.replace("target: 50", "target: true"), "goal.target must be a number, not True"),
    ],
)
def test_bad_manifest_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MlopsError, match=message) as error:
        load_manifest(write(tmp_path, text))
    assert "model.yaml" in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(MlopsError, match="model.yaml: missing"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("goal", "problem"),
    [
        (GoalSpec("val_accuracy", "maximize", 0.9), None),
        (GoalSpec("val_accuracy", "maximize", 1.0), None),
        (
            GoalSpec("val_accuracy", "maximize", 0.0),
            "val_accuracy is a fraction, so the goal must lie in (0, 1], not 0",
        ),
        (GoalSpec("val_f1_macro", "maximize", 1.2), "val_f1_macro is a fraction"),
        (GoalSpec("val_auc", "minimize", 0.9), "val_auc is a fraction, so goal.direction must be maximize"),
        (GoalSpec("val_rmse", "minimize", 57.5), None),
        (GoalSpec("val_rmse", "minimize", 0.0), "val_rmse is an error (>= 0, minimized), so the goal must be > 0"),
        (GoalSpec("val_loss", "maximize", 0.1), "val_loss is an error, so goal.direction must be minimize"),
        (GoalSpec("r2", "maximize", 1.5), "r2 is at most 1"),
        (GoalSpec("r2", "maximize", -0.5), None),
        (GoalSpec("custom_score", "maximize", 1e6), None),  # unknown kinds: any finite target
        (GoalSpec("custom_score", "maximize", float("inf")), "goal inf is not a finite number"),
    ],
)
def test_goal_range_follows_the_metric_kind(goal: GoalSpec, problem: str | None) -> None:
    found = goal.problem()
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_shipped_models_declare_what_they_report_and_read() -> None:
    for folder in (p.parent for p in (ROOT / "models").glob("*/model.yaml")):
        manifest = load_manifest(folder)
        assert manifest.goal.metric in manifest.metrics, folder
        for section in ("data", "params", "search_space"):
            assert manifest.accepts.section(section) is not None, (folder, section)


def test_declared_choices_are_the_ones_the_code_takes() -> None:
    from pipeline.sdk.contract import load_plugin
    from pipeline.sdk.keras.dense_head import OPTIMIZERS

    for name in ("face_vgg16", "digits_mlp"):
        accepts = load_manifest(ROOT / "models" / name).accepts
        assert accepts.search_space is not None
        assert accepts.search_space["optimizer"].choices == OPTIMIZERS
    digits = load_plugin(ROOT / "models" / "digits_mlp")
    assert digits.manifest.accepts.data is not None
    assert digits.manifest.accepts.data["scaling"].choices == digits.module.SCALINGS
    diabetes = load_plugin(ROOT / "models" / "diabetes_regression")
    assert diabetes.manifest.accepts.search_space is not None
    assert set(diabetes.manifest.accepts.search_space["estimator"].choices) == set(diabetes.module.ESTIMATORS)


@pytest.mark.slow
def test_declared_activations_are_ones_keras_knows() -> None:
    import keras

    for name in ("face_vgg16", "digits_mlp"):
        accepts = load_manifest(ROOT / "models" / name).accepts
        assert accepts.search_space is not None
        for activation in accepts.search_space["activation"].choices:
            assert keras.activations.get(activation) is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "metrics: val_rmse\n", "metrics must be a list of metric names"),
        (
            GOOD + "metrics: [val_mae]\n",
            "goal.metric 'val_rmse' is not a metric this model reports; use one of val_mae",
        ),
        (GOOD + "accepts: {hyper: {}}\n", "accepts: unknown section 'hyper'; allowed: data, params, search_space"),
        (GOOD + "accepts: {data: {x: {type: integer}}}\n", "accepts.data.x.type must be one of int, float"),
        (GOOD + "accepts: {data: {x: {type: str, ge: 1}}}\n", "accepts.data.x.ge must be a number, on an int or"),
        (GOOD + "accepts: {data: {x: {type: int, choices: [a]}}}\n", "accepts.data.x.choices must be a list of int"),
        (GOOD + "accepts: {data: {x: {type: int, max: 3}}}\n", "accepts.data.x: unknown key 'max'"),
        (
            GOOD + "accepts: {search_space: {alpha: {type: float, le: 1}}}\n",
            "search_space.alpha.high: 10.0 must be <= 1",
        ),
        (GOOD + "accepts: {search_space: {alpha: int}}\n", "search_space.alpha: the model takes a whole number here"),
        (GOOD + "data: {n: true}\naccepts: {data: {n: int}}\n", "data.n=True must be a whole number (int)"),
        (GOOD + "data: {n: null}\naccepts: {data: {n: int}}\n", "data.n=None must be a whole number (int) (null is"),
        (GOOD + "framework: 3\n", "framework must be a string, not 3"),
        (GOOD + "description: [a]\n", "description must be a string"),
        (GOOD.replace("log: true", "log: yes please"), "search_space.alpha.log must be true or false"),
        (GOOD.replace("target: 50", "target: -3"), "goal: val_rmse is an error (>= 0, minimized), so the goal must"),
    ],
)
def test_bad_contract_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MlopsError) as error:
        load_manifest(write(tmp_path, text))
    assert message in str(error.value)
    assert str(error.value).startswith(f"{tmp_path / 'model.yaml'}:")
    assert "\n" not in str(error.value)


def test_declared_options_pass(tmp_path: Path) -> None:
    text = (
        GOOD
        + "data: {n: 3, f: 0.5, s: null}\n"
        + "accepts:\n  data: {n: {type: int, ge: 1}, f: float, s: {type: str, nullable: true}}\n"
    )
    manifest = load_manifest(write(tmp_path, text))
    assert manifest.accepts.data is not None and sorted(manifest.accepts.data) == ["f", "n", "s"]
    assert manifest.accepts.params is None  # undeclared: not checked
