from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config.manifest import load_manifest
from pipeline.config.settings import apply_overrides, check_folders, find_repo_config, resolve_settings
from pipeline.errors import MlopsError

ROOT = Path(__file__).resolve().parents[3]


def test_layers_later_wins() -> None:
    settings = resolve_settings(
        {"max_trials": 10, "timeout": 100, "seed": 1, "pruner": "hyperband"},
        {"tune": {"max_trials": 20, "timeout": 200}},
        {"max_trials": 40, "goal": None},
        environ={"MLOPS_TIMEOUT": "300", "MLOPS_GOAL_CONFIDENCE": "true"},
    )
    assert settings.max_trials == 40  # flag
    assert settings.timeout == 300.0  # environment over repo config
    assert settings.seed == 1  # model.yaml only
    assert settings.pruner == "hyperband"
    assert settings.goal_confidence is True


def test_bad_values_name_their_layer() -> None:
    with pytest.raises(MlopsError, match="environment MLOPS_MAX_TRIALS: setting 'max_trials'"):
        resolve_settings({}, {}, {}, environ={"MLOPS_MAX_TRIALS": "many"})
    with pytest.raises(MlopsError, match="unknown setting 'max_trails'"):
        resolve_settings({}, {"tune": {"max_trails": 3}}, {}, environ={})
    with pytest.raises(MlopsError, match="pruner='best' is unknown"):
        resolve_settings({}, {}, {"pruner": "best"}, environ={})


def test_overrides_reach_model_options() -> None:
    manifest = SimpleNamespace(data={"source": "olivetti", "input_size": 64}, params={"weights": "imagenet"})
    settings = resolve_settings(
        {}, {}, {"weights": "none", "overrides": ["data.source=lfw", "data.input_size=96"]}, environ={}
    )
    data, params = apply_overrides(manifest, settings)
    assert data == {"source": "lfw", "input_size": 96}
    assert params["weights"] == "none"
    weights_only = resolve_settings({}, {}, {"weights": "none"}, environ={})
    assert "weights" not in apply_overrides(SimpleNamespace(data={}, params={}), weights_only)[1]
    bad = resolve_settings({}, {}, {"overrides": ["source=lfw"]}, environ={})
    with pytest.raises(MlopsError, match="--set data.NAME=VALUE"):
        apply_overrides(manifest, bad)


def test_repo_config_is_found_above_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_CONFIG", raising=False)
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlops.yaml").write_text("tune: {max_trials: 7}\n")
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    assert find_repo_config(model) == tmp_path / "mlops.yaml"


def test_range_errors_name_the_setting_and_its_source(tmp_path: Path) -> None:
    repo = tmp_path / "mlops.yaml"
    with pytest.raises(MlopsError) as error:
        resolve_settings({}, {"tune": {"timeout": -1}}, {}, repo, environ={})
    assert str(error.value) == (
        f"setting timeout=-1.0 (from {repo} tune.timeout) must be more than 0 seconds, or none for no limit"
    )
    with pytest.raises(
        MlopsError, match=r"grace_period=2 \(from MLOPS_GRACE_PERIOD\) must exceed heartbeat_interval=2"
    ):
        resolve_settings({}, {}, {}, environ={"MLOPS_HEARTBEAT_INTERVAL": "2", "MLOPS_GRACE_PERIOD": "2"})
    with pytest.raises(MlopsError, match=r"max_trials=0 \(from model.yaml tune.max_trials\) must be at least 1"):
        resolve_settings({"max_trials": 0}, {}, {}, environ={})
    assert resolve_settings({}, {}, {}, environ={"MLOPS_TIMEOUT": "none"}).timeout is None


def test_folder_probe_leaves_no_trace(tmp_path: Path) -> None:
    settings = resolve_settings({}, {}, {"runs_dir": tmp_path / "a" / "b", "cache_dir": tmp_path / "c"}, environ={})
    check_folders(settings)
    assert list(tmp_path.iterdir()) == []  # created to prove it can be, then removed
    (tmp_path / "file").write_text("x")
    blocked = resolve_settings({}, {}, {"cache_dir": tmp_path / "file" / "cache"}, environ={})
    with pytest.raises(MlopsError, match=r"setting cache_dir=.*/file/cache \(from --cache-dir\) cannot be created"):
        check_folders(blocked)


def test_overrides_are_checked_against_what_the_model_reads() -> None:
    manifest = load_manifest(ROOT / "models" / "face_vgg16")
    ok = resolve_settings({}, {}, {"overrides": ["data.data_home=/tmp/sk", "params.patience=null"]}, environ={})
    data, params = apply_overrides(manifest, ok)
    assert data["data_home"] == "/tmp/sk" and params["patience"] is None  # declared, though not listed in data:
    for item, message in [
        ("data.input_size=big", "--set: data.input_size='big' must be a whole number (int)"),
        ("data.input_size=16", "--set: data.input_size=16 must be >= 32"),
        (
            "params.weight=none",
            "--set: params.weight is not an option this model reads; allowed: feature_shift, fine_tune_blocks, "
            "fine_tune_epochs, fine_tune_learning_rate, patience, warmup_epochs, weights",
        ),
        ("data.x=[", "--set 'data.x=[': the value is not valid YAML"),
    ]:
        with pytest.raises(MlopsError) as error:
            apply_overrides(manifest, resolve_settings({}, {}, {"overrides": [item]}, environ={}))
        assert str(error.value).startswith(message)


def test_overrides_of_a_model_without_declarations_must_name_listed_options() -> None:
    manifest = SimpleNamespace(data={"source": "a"}, params={})
    bad = resolve_settings({}, {}, {"overrides": ["data.sorce=b"]}, environ={})
    with pytest.raises(MlopsError, match=r"--set data.sorce=b: the model has no data option 'sorce' \(its model.yaml"):
        apply_overrides(manifest, bad)


def test_first_trials_come_as_a_list_of_mappings_from_yaml_or_the_environment() -> None:
    settings = resolve_settings({"first_trials": [{"n_layers": 0}, {"n_layers": 1, "units": 64}]}, {}, {}, environ={})
    assert settings.first_trials == ({"n_layers": 0}, {"n_layers": 1, "units": 64})
    one = resolve_settings({}, {}, {}, environ={"MLOPS_FIRST_TRIALS": "{n_layers: 2}"})
    assert (one.first_trials, one.source("first_trials")) == (({"n_layers": 2},), "MLOPS_FIRST_TRIALS")
    for bad in ("n_layers=0", [{}], [["n_layers", 0]], 3):
        with pytest.raises(MlopsError, match=r"setting 'first_trials' = .* must be a list of mappings"):
            resolve_settings({"first_trials": bad}, {}, {}, environ={})


def test_first_trials_are_checked_against_the_search_space() -> None:
    from pipeline.config.preflight import check_run

    manifest = load_manifest(ROOT / "models" / "face_vgg16")
    good = resolve_settings({"first_trials": [{"n_layers": 2, "units": [64, 32]}]}, {}, {}, environ={})
    check_run(manifest, good)
    bad = resolve_settings({"first_trials": [{"n_layers": 0}, {"optimizer": "lbfgs"}]}, {}, {}, environ={})
    with pytest.raises(MlopsError, match=r"^setting first_trials\[1\] \(from model.yaml tune.first_trials\)"
                       r"\.optimizer: 'lbfgs' is not one of its choices"):  # fmt: skip
        check_run(manifest, bad)
