"""A champion trained on aligned faces aligns the photos it is asked about, exactly as training did.

A head is trained on real raw LFW photos (a folder per person, ``data.align: mtcnn``, the
offline face weights), exported and saved as MLflow saves it when it is logged, and loaded
back through MLflow's pyfunc loader: the served photos go through the same decoding and the
same ``face_aligner.py`` as the training photos, so the served model sees the very crops its
head was trained and tested on.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from PIL import Image

from pipeline.sdk.contract import StudyContext, TrainResult, TrialContext, load_plugin
from pipeline.tracking import promotion
from pipeline.tracking.tracker import save_model
from tests.conftest import FACE_WEIGHTS, SHARED

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = load_plugin(ROOT / "models" / "face_vgg16")
model = PLUGIN.module
LFW_RAW = SHARED / "scikit_learn_data" / "lfw_home" / "lfw_funneled"
PEOPLE = ("Colin_Powell", "George_W_Bush", "Serena_Williams")
PER_PERSON = 10
SIZE = 48


def flower() -> np.ndarray:
    """A real photo without a face: scikit-learn's sample picture of a flower."""
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image("flower.jpg"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Raw LFW photos of three people (and a flower) -> prepare (aligned) -> a head -> a saved MLflow model."""
    if not (LFW_RAW / PEOPLE[0]).is_dir() or not FACE_WEIGHTS.is_file():
        pytest.skip(f"raw LFW photos or face weights not found under {SHARED} (set MLOPS_SHARED_DATA)")
    folder = tmp_path_factory.mktemp("aligned")
    for person in PEOPLE:
        (folder / "people" / person).mkdir(parents=True)
        for number in range(1, PER_PERSON + 1):
            shutil.copy(LFW_RAW / person / f"{person}_{number:04d}.jpg", folder / "people" / person)
    Image.fromarray(flower()).save(folder / "people" / PEOPLE[0] / "flower.jpg")  # skipped: no face
    options = {"source": "folder", "path": str(folder / "people"), "input_size": SIZE, "min_images_per_class": 5}
    lines: list[str] = []
    ctx = StudyContext(PLUGIN.manifest, options, {"weights": str(FACE_WEIGHTS)}, 0, folder / "cache", lines.append)
    data = model.prepare(ctx)
    params = {**model._DEFAULTS, "epochs": 40, "dropout": 0.0}
    result = model.train(data, params, TrialContext(0, 0, lambda e, m: None, folder / "ckpt"))
    save_model(model.export(data, result), folder / "model")
    return {"path": folder / "model", "data": data, "result": result, "facts": ctx.facts}


def test_training_aligned_and_skipped_the_flower(saved: dict[str, Any]) -> None:
    facts, data = saved["facts"], saved["data"]
    assert facts["no_face_images"] == 1 and facts["n_images"] == len(PEOPLE) * PER_PERSON
    assert data.alignment == "mtcnn" and len(data.test_photos) == len(data.labels["test"])
    assert all(isinstance(photo, bytes) for photo in data.test_photos)  # the files, as a client sends them


def test_a_served_photo_becomes_the_crop_training_made_of_it(saved: dict[str, Any]) -> None:
    namer = promotion.load_model(str(saved["path"]))  # MLflow's loader: face_aligner.py from the model folder
    data = saved["data"]
    crops, kinds = namer.faces(data.test_photos)
    assert kinds == ["aligned"] * len(data.test_photos)
    np.testing.assert_array_equal(crops, data.test_images)  # the same pixels, not merely close ones


def test_the_registered_model_answers_raw_photos_like_its_head_answers_their_features(saved: dict[str, Any]) -> None:
    data = saved["data"]
    registered = promotion.load_model(str(saved["path"]))
    on_photos = model.evaluate(data, TrainResult(float("nan"), registered))  # what the promotion gate scores
    on_features = model.evaluate(data, saved["result"])
    assert on_photos.n == len(data.labels["test"])
    np.testing.assert_array_equal(on_photos.y_pred, on_features.y_pred)


def test_a_photo_without_a_face_is_unknown_with_no_guess(saved: dict[str, Any]) -> None:
    pyfunc = mlflow.pyfunc.load_model(str(saved["path"]))
    answer = pyfunc.unwrap_python_model().predict(None, flower(), {"threshold": 0.0}).iloc[0]
    assert (answer["name"], answer["probability"], answer["top_k"]) == ("unknown", 0.0, "[]")
    assert answer["face"] == "not found"


def test_align_fallback_whole_names_the_whole_photo_instead(saved: dict[str, Any]) -> None:
    pyfunc = mlflow.pyfunc.load_model(str(saved["path"]), model_config={"align_fallback": "whole"})
    answer = pyfunc.unwrap_python_model().predict(None, flower(), {"threshold": 0.0}).iloc[0]
    assert answer["face"] == "whole photo" and answer["name"] in [p.replace("_", " ") for p in PEOPLE]
    assert len(json.loads(answer["top_k"])) == len(PEOPLE)


def test_the_logged_model_carries_its_aligner_and_says_it_aligns(saved: dict[str, Any]) -> None:
    path = saved["path"]
    meta = mlflow.models.get_model_info(str(path)).metadata
    assert (meta["alignment"], meta["align_fallback"]) == ("mtcnn", "skip")
    assert meta["aligner"] == "mtcnn==1.0.0/arcface5/detect128/alone/warp1024"
    shipped = path / "code" / "face_aligner.py"
    assert shipped.read_bytes() == (ROOT / "models" / "face_vgg16" / "face_aligner.py").read_bytes()
    assert "mtcnn==1.0.0" in (path / "requirements.txt").read_text().split()
    request = json.loads((path / "serving_input_example.json").read_text())  # what curl posts: a raw photo
    example = Image.open(io.BytesIO(base64.b64decode(request["dataframe_split"]["data"][0][0])))
    assert example.format == "JPEG" and example.size == (250, 250)
