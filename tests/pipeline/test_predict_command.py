"""``mlops predict`` and ``mlflow models serve``: the tuned champion names people in raw photos.

The round trip of issue 14: a real small search on Olivetti registers ``face_vgg16`` as champion
(the offline face weights, 32 px); photos of held-out test faces, written as JPEG files of
another size (grey and colour), get their person's name back from the CLI and from the model
served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from pipeline.sdk.contract import load_plugin
from tests.cli import MLOPS, tune_in
from tests.conftest import FACE_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "face_vgg16"
BIN = Path(sys.executable).parent


def mlops(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    return subprocess.run(
        [*MLOPS, *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 and exactly one ``error:`` line on stderr (no traceback); returns it."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "someone.jpg"
    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(path)
    return path


def test_a_missing_photo_is_one_line(tmp_path: Path, photo: Path) -> None:
    line = one_error_line(mlops("predict", "face_vgg16", str(photo), str(tmp_path / "nobody.jpg"), cwd=tmp_path))
    assert line == f"error: {tmp_path / 'nobody.jpg'}: no such image or folder; pass image files or folders of them"
    (tmp_path / "empty").mkdir()
    line = one_error_line(mlops("predict", "face_vgg16", str(tmp_path / "empty"), cwd=tmp_path))
    assert line.startswith(f"error: {tmp_path / 'empty'}: no image files (.jpg, .jpeg, .png")


@pytest.mark.parametrize("threshold", ["1.5", "-0.1", "nan"])
def test_a_threshold_outside_zero_one_is_one_line(tmp_path: Path, photo: Path, threshold: str) -> None:
    line = one_error_line(mlops("predict", "face_vgg16", str(photo), "--threshold", threshold, cwd=tmp_path))
    assert line == f"error: --threshold {float(threshold)} is outside [0, 1]; pass a probability such as 0.5"


def test_an_unknown_model_or_store_is_one_line(tmp_path: Path, photo: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=store).search_experiments()  # a real, empty store
    line = one_error_line(mlops("predict", "nobody", str(photo), "--tracking-uri", store, cwd=tmp_path))
    assert line.startswith(f"error: model models:/nobody@champion not found in {store} (")
    assert line.endswith("check the name, alias or version (mlops status) and --tracking-uri")
    missing = f"sqlite:///{tmp_path}/none.db"
    line = one_error_line(mlops("predict", "models:/x/1", str(photo), "--tracking-uri", missing, cwd=tmp_path))
    assert line.startswith(f"error: no MLflow store at {tmp_path}/none.db")


@pytest.fixture(scope="module")
def champion(offline_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real search registers face_vgg16's champion; photos of five held-out test faces beside it."""
    folder = tmp_path_factory.mktemp("champion")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in offline_env.items():
            patch.setenv(name, value)
        flags = ["--weights", str(FACE_WEIGHTS), "--set", "data.input_size=32", "--max-trials", "2", "--goal", "0.3"]
        _, summary = tune_in(folder, MODEL_DIR, *flags, expect=0, timeout=600)
        load_plugin(MODEL_DIR)
        faces = __import__("mlops_models.face_vgg16.faces", fromlist=["load_faces"])
        loaded = faces.load_faces({"source": "olivetti", "input_size": 64})
    assert summary["registered_model"] == "face_vgg16/1"
    test = faces.split(loaded, 0.2, 0.2, 42)["test"]  # model.yaml's fractions and seed: the search's test split
    photos, names = folder / "photos", {}
    photos.mkdir()
    for n, index in enumerate(test[:5]):
        path = photos / f"face{n}.jpg"
        picture = Image.fromarray(loaded.images[index]).resize((120, 150) if n % 2 else (97, 97))
        (picture.convert("L") if n % 2 == 0 else picture).save(path, quality=92)  # grey and colour
        names[path.name] = loaded.names[loaded.labels[index]]
    env = {**offline_env, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return {"folder": folder, "photos": photos, "names": names, "env": env}


@pytest.mark.slow
def test_predict_names_raw_test_photos_with_the_champion(champion: dict[str, Any]) -> None:
    folder, photos, names = champion["folder"], champion["photos"], champion["names"]
    done = mlops("predict", "face_vgg16", str(photos), "--json", "--threshold", "0", cwd=folder, env=champion["env"])
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["model"] == "models:/face_vgg16@champion"
    got = {Path(p["image"]).name: p["name"] for p in answer["predictions"]}
    assert got == names
    # Above the least sure photo's probability, that photo (only) is "unknown"; the text form shows the guess.
    unsure = min(answer["predictions"], key=lambda p: p["probability"])
    assert unsure["probability"] < 1.0
    threshold = repr(float(np.nextafter(unsure["probability"], 2.0)))
    done = mlops("predict", "face_vgg16", unsure["image"], "--threshold", threshold, cwd=folder, env=champion["env"])
    assert done.returncode == 0, done.stderr[-2000:]
    guess = f"{unsure['image']}: unknown (best guess {unsure['name']}, {unsure['probability']:.3f})"
    assert done.stdout.splitlines() == [guess]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(champion: dict[str, Any]) -> Iterator[str]:
    """``mlflow models serve`` of the champion (local env manager) on 127.0.0.1; yields its URL."""
    port = _free_port()
    env = {**os.environ, **champion["env"], "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (champion["folder"] / "serve.log").open("w")
    command = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/face_vgg16@champion", "--env-manager", "local"]
    server = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=champion["folder"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: the uvicorn it starts is stopped with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # loading TensorFlow and the model: ~20 s here
        while server.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        assert server.poll() is None, (champion["folder"] / "serve.log").read_text()[-3000:]
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


@pytest.mark.slow
def test_the_served_champion_answers_a_posted_jpeg_with_the_name(champion: dict[str, Any], served: str) -> None:
    path = champion["photos"] / "face1.jpg"  # colour, 120 x 150
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(path.read_bytes()).decode()]]}}
    request = urllib.request.Request(
        f"{served}/invocations", json.dumps({**body, "params": {"threshold": 0.0}}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        predictions = json.loads(response.read())["predictions"]
    assert [p["name"] for p in predictions] == [champion["names"]["face1.jpg"]]
    assert json.loads(predictions[0]["top_k"])[0]["name"] == predictions[0]["name"]
