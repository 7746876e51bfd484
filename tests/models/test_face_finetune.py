"""Fine-tuning VGG16's top blocks (``fine_tune_blocks``) on cached block outputs, on real Olivetti faces.

The offline face weights at 32 px: block 4's pooled output is 2x2x512 per face, block 3's 4x4x256.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from pipeline.sdk.contract import StudyContext, TrainResult, TrialContext, load_plugin
from pipeline.tracking import promotion
from pipeline.tracking.tracker import save_model
from tests.conftest import FACE_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = load_plugin(ROOT / "models" / "face_vgg16")
model = PLUGIN.module
finetune = __import__("mlops_models.face_vgg16.finetune", fromlist=["top_blocks"])
backbone = __import__("mlops_models.face_vgg16.backbone", fromlist=["load_base"])
SIZE = 32
PARAMS = {
    "fine_tune_blocks": 1,
    "fine_tune_learning_rate": 1e-4,
    "warmup_epochs": 2,
    "feature_shift": 0,  # a 2x2 map: a shift would move half the face out
    "fine_tune_epochs": 3,
    "n_layers": 1,
    "units": [64],
    "dropout": 0.0,
    "learning_rate": 3e-3,
}


def prepared(tmp_path: Path, lines: list[str], params: dict[str, Any] | None = None, **data: Any) -> Any:
    options = {"source": "olivetti", "input_size": SIZE, **data}
    settings = {"weights": str(FACE_WEIGHTS), **(params or {})}
    ctx = StudyContext(PLUGIN.manifest, options, settings, 0, tmp_path / "cache", lines.append)
    return model.prepare(ctx)


def trial(folder: Path, reported: list[int] | None = None) -> TrialContext:
    epochs = reported if reported is not None else []
    return TrialContext(0, 0, lambda epoch, metrics: epochs.append(epoch), folder)


@pytest.fixture(scope="module")
def tuned(offline_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One block-5 fine-tuning trial on Olivetti; the lines prepare and the first such trial logged."""
    folder = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in offline_env.items():
            patch.setenv(name, value)
        lines: list[str] = []
        data = prepared(folder, lines)
        before = list(lines)
        reported: list[int] = []
        result = model.train(data, PARAMS, trial(folder / "ckpt", reported))
    return {"folder": folder, "data": data, "result": result, "before": before, "lines": lines, "reported": reported}


def test_prepare_extracts_no_block_outputs_until_a_trial_fine_tunes(tuned: dict[str, Any]) -> None:
    assert not any("block4_pool" in line for line in tuned["before"])  # a head-only search never pays for them
    data = tuned["data"]
    assert set(data.cuts) == {1}
    assert data.cuts[1]["train"].shape == (len(data.labels["train"]), 2, 2, 512)
    assert any(line.startswith("features: block4_pool extracted in ") for line in tuned["lines"])


def test_the_trial_trains_block_5_from_the_pretrained_weights_and_reports_every_epoch(tuned: dict[str, Any]) -> None:
    trained = tuned["result"].model
    top = trained.get_layer(finetune.TOP_NAME)
    assert [layer.name for layer in top.layers if layer.weights] == ["block5_conv1", "block5_conv2", "block5_conv3"]
    pretrained = backbone.load_base(str(FACE_WEIGHTS), SIZE, 0).get_layer("block5_conv1").get_weights()[0]
    moved = np.abs(top.get_layer("block5_conv1").get_weights()[0] - pretrained).max()
    assert 0 < moved < 0.1 * np.abs(pretrained).max()  # fine-tuned: moved, and a little
    assert tuned["reported"] == [0, 1, 2, 3, 4]  # 2 warm-up epochs, then 3 of the blocks, one sequence
    assert (tuned["folder"] / "ckpt" / "warmup" / "best.npz").is_file()
    assert (tuned["folder"] / "ckpt" / "blocks" / "best.npz").is_file()


def test_the_warm_up_runs_until_the_head_converges_and_the_blocks_follow_it(
    tuned: dict[str, Any], tmp_path: Path
) -> None:
    """Keras' recipe: the head converges on frozen features first; early stopping ends the warm-up."""
    data = dataclasses.replace(tuned["data"], patience=2)
    reported: list[int] = []
    model.train(data, {**PARAMS, "warmup_epochs": 300, "fine_tune_epochs": 1}, trial(tmp_path / "ckpt", reported))
    warmed = json.loads(np.load(tmp_path / "ckpt" / "warmup" / "latest.npz")["meta"].item())
    ran = warmed["epoch"] + 1
    assert ran < 300 and ran == warmed["best_epoch"] + 2 + 1  # stopped by patience 2, not by the cap
    assert reported == list(range(ran + 1))  # the block epoch reported right after the warm-up's last


def test_model_yaml_params_shape_the_fine_tuning_trial(tuned: dict[str, Any], tmp_path: Path) -> None:
    """warmup_epochs, fine_tune_epochs and feature_shift set under model.yaml's params reach the trial."""
    settings = {"warmup_epochs": 1, "fine_tune_epochs": 2, "feature_shift": 0}
    data = prepared(tuned["folder"], [], settings)  # features from the fixture's cache
    sampled = {name: value for name, value in PARAMS.items() if name not in settings}
    reported: list[int] = []
    model.train(data, sampled, trial(tmp_path / "ckpt", reported))
    assert reported == [0, 1, 2]  # one warm-up epoch, then two of the blocks


def test_block_outputs_are_cached_per_cut(tuned: dict[str, Any]) -> None:
    lines: list[str] = []
    data = prepared(tuned["folder"], lines)
    data.load_cut(1)
    assert any(line.startswith("features: block4_pool reused from the cache") for line in lines)
    np.testing.assert_array_equal(data.cuts[1]["val"], tuned["data"].cuts[1]["val"])
    data.load_cut(2)  # another cut, another entry
    assert any(line.startswith("features: block3_pool extracted in ") for line in lines)
    assert data.cuts[2]["train"].shape[1:] == (4, 4, 256)


def test_a_killed_fine_tune_resumes_to_the_same_weights(tuned: dict[str, Any], tmp_path: Path) -> None:
    """Stopped after 1 block epoch and resumed (new objects, same folder) = never stopped."""
    data = tuned["data"]
    model.train(data, {**PARAMS, "fine_tune_epochs": 1}, trial(tmp_path / "ckpt"))
    resumed = model.train(data, PARAMS, trial(tmp_path / "ckpt"))
    for got, want in zip(resumed.model.get_weights(), tuned["result"].model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    for name, values in tuned["result"].history.items():
        assert resumed.history[name] == pytest.approx(values, abs=1e-6), name


def test_the_champion_is_the_full_vgg16_with_its_fine_tuned_block(tuned: dict[str, Any]) -> None:
    data, result = tuned["data"], tuned["result"]
    save_model(model.export(data, result), tuned["folder"] / "model")
    registered = promotion.load_model(str(tuned["folder"] / "model"))
    on_photos = model.evaluate(data, TrainResult(float("nan"), registered))
    on_blocks = model.evaluate(data, result)
    np.testing.assert_array_equal(on_photos.y_pred, on_blocks.y_pred)
    full = registered.keras_model
    tuned_kernel = result.model.get_layer(finetune.TOP_NAME).get_layer("block5_conv3").get_weights()[0]
    vgg = next(layer for layer in full.layers if layer.name.startswith("vgg16"))
    np.testing.assert_array_equal(vgg.get_layer("block5_conv3").get_weights()[0], tuned_kernel)
    assert mlflow.models.get_model_info(str(tuned["folder"] / "model")).metadata["input_size"] == SIZE


def test_flip_trains_on_the_mirror_images_of_the_train_split(offline_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in offline_env.items():
            patch.setenv(name, value)
        lines: list[str] = []
        data = prepared(tmp_path, lines, flip=True)
    assert data.mirrored[0].shape == data.features["train"].shape
    assert not np.allclose(data.mirrored[0], data.features["train"])  # faces are not symmetric to the pixel
    result = model.train(data, {**PARAMS, "fine_tune_epochs": 1}, trial(tmp_path / "ckpt"))
    assert data.mirrored[1].shape == data.cuts[1]["train"].shape
    assert any("block4_pool of the mirrored faces extracted" in line for line in lines)
    assert 0.0 <= result.value <= 1.0


def test_fine_tune_blocks_beyond_two_is_one_line_before_any_work(tmp_path: Path) -> None:
    from pipeline.errors import MlopsError

    ctx = StudyContext(PLUGIN.manifest, {"source": "olivetti"}, {"fine_tune_blocks": 3}, 0, tmp_path, print)
    with pytest.raises(MlopsError, match=r"^fine_tune_blocks up to 3: VGG16's top blocks can be 0, 1 or 2"):
        model.max_fine_tune_blocks(ctx)
    # prepare says so before it reads any photo: the missing folder would be the error otherwise
    options = {"source": "folder", "path": str(tmp_path / "nowhere")}
    ctx = StudyContext(PLUGIN.manifest, options, {"fine_tune_blocks": 3}, 0, tmp_path, print)
    with pytest.raises(MlopsError, match=r"^fine_tune_blocks up to 3"):
        model.prepare(ctx)


KILLED_TRIAL = """
import os, signal, sys
import dataclasses
import json
from pathlib import Path
from pipeline.sdk.contract import StudyContext, TrialContext, load_plugin

plugin = load_plugin(Path(sys.argv[1]))
folder, weights = Path(sys.argv[2]), sys.argv[3]
options = {"source": "olivetti", "input_size": 32}
ctx = StudyContext(plugin.manifest, options, {"weights": weights}, 0, folder / "cache", lambda line: None)
data = plugin.module.prepare(ctx)

def report(epoch, metrics):
    if epoch == int(sys.argv[4]):  # the blocks' second epoch is checkpointed: die like the OOM killer does
        os.kill(os.getpid(), signal.SIGKILL)

params = {"fine_tune_blocks": 1, "fine_tune_learning_rate": 1e-4, "warmup_epochs": 2, "feature_shift": 0,
          "fine_tune_epochs": 3, "n_layers": 1, "units": [64], "dropout": 0.0, "learning_rate": 3e-3}
# checkpoint_seconds=0: a write after every epoch, so the kill lands right after a known one
plugin.module.train(data, params, TrialContext(0, 0, report, folder / "killed", checkpoint_seconds=0.0))
"""


@pytest.mark.slow
def test_kill_9_mid_fine_tune_resumes_with_the_same_block_weights_and_optimizer(tuned: dict[str, Any]) -> None:
    """A real SIGKILL in the blocks' phase; the rerun resumes there and ends where the unbroken trial ended."""
    import os
    import subprocess
    import sys

    folder = tuned["folder"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [str(ROOT / "models" / "face_vgg16"), str(folder), str(FACE_WEIGHTS), "3"]  # epoch 3: blocks' 2nd
    done = subprocess.run([sys.executable, "-c", KILLED_TRIAL, *args], env=env, capture_output=True, timeout=600)
    assert done.returncode == -9, done.stderr[-2000:]
    state = np.load(folder / "killed" / "blocks" / "latest.npz")
    assert json.loads(str(state["meta"]))["epoch"] == 1  # killed after the blocks' second epoch was saved
    resumed = model.train(tuned["data"], PARAMS, trial(folder / "killed"))
    for got, want in zip(resumed.model.get_weights(), tuned["result"].model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
