from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import MlopsError
from pipeline.settings import apply_overrides, find_repo_config, resolve_settings


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
    assert "weights" not in apply_overrides(SimpleNamespace(data={}, params={}), settings)[1]
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
