from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import MlopsError
from pipeline.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
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
