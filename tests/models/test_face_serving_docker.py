"""The face champion served from the model's own Docker image (markers ``docker`` and ``slow``).

A short search on a folder of raw LFW photos (``data.align: mtcnn``) runs in the face model's
image and registers the champion; the same image then runs ``mlflow models serve`` of it
(local env manager: the image's own environment) on 127.0.0.1. A raw JPEG posted to it gets
the name the host's own ``mlops predict`` gives, and a photo without a face gets ``unknown``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.build.images import build_image
from pipeline.execute.runners import DockerRunner
from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT, SHARED
from tests.pipeline.docker_fixtures import base_image, docker_engine, project_snapshot  # noqa: F401
from tests.pipeline.services import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MODEL_DIR = ROOT / "models" / "face_vgg16"
LFW_RAW = SHARED / "scikit_learn_data" / "lfw_home" / "lfw_funneled"
PEOPLE = ("Colin_Powell", "George_W_Bush", "Serena_Williams")
UNSEEN = 20  # each person's photo number 20: not among the 10 the search trained on


def jpeg_of_a_flower() -> bytes:
    from sklearn.datasets import load_sample_image

    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("flower.jpg")).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def champion_image(
    docker_engine: Any,  # noqa: F811
    base_image: str,  # noqa: F811
    offline_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """The face image, and the champion a 2-trial aligned search in it registered (SQLite store under ``work``)."""
    if not (LFW_RAW / PEOPLE[0]).is_dir():
        pytest.skip(f"raw LFW photos not found at {LFW_RAW} (set MLOPS_SHARED_DATA)")
    project = project_snapshot(tmp_path / "project")
    built = build_image(
        MODEL_DIR, "cnn", "keras", f"test{uuid.uuid4().hex[:8]}", env=os.environ, base_image=base_image,
        client=docker_engine, log=lambda line: None, project_root=project,
    )  # fmt: skip
    try:
        work = tmp_path / "work"
        people = work / "people"
        for person in PEOPLE:
            (people / person).mkdir(parents=True)
            for number in range(1, 11):
                shutil.copy(LFW_RAW / person / f"{person}_{number:04d}.jpg", people / person)
        for folder in (work, people, *people.iterdir()):
            folder.chmod(0o755)  # pytest's folders are 0700; the container's user reads the photos
        out = io.StringIO()
        runner = DockerRunner(
            built.tag, client=docker_engine, out=out, host_env=os.environ,
            state_dirs=[work / "mlruns", work / "mlops-runs", work / "cache"], data_dirs=[SHARED, people],
        )  # fmt: skip
        tracking = f"sqlite:///{work}/mlruns/mlflow.db"
        sets = ["data.source=folder", f"data.path={people}", "data.input_size=48", "data.min_images_per_class=5"]
        code = runner.run(
            ["tune", runner.model_path(MODEL_DIR), "--weights", str(FACE_WEIGHTS),
             *(flag for one in sets for flag in ("--set", one)),
             "--max-trials", "2", "--goal", "0.01", "--tracking-uri", tracking,
             "--runs-dir", f"{work}/mlops-runs", "--cache-dir", f"{work}/cache"],
            env={**offline_env, "TF_CPP_MIN_LOG_LEVEL": "3"}, workdir=work,
        )  # fmt: skip
        assert code == 0, out.getvalue()[-3000:]
        summary = json.loads((work / "mlops-runs" / "face_vgg16" / "summary.json").read_text())
        assert summary["registered_model"] == "face_vgg16/1"
        yield {"tag": built.tag, "work": work, "tracking": tracking, "env": offline_env}
    finally:
        with contextlib.suppress(Exception):  # already gone
            docker_engine.images.remove(built.tag, noprune=True)


@pytest.fixture
def served(docker_engine: Any, champion_image: dict[str, Any]) -> Iterator[str]:  # noqa: F811
    """``mlflow models serve`` of the champion in the model's image, on the host's 127.0.0.1; yields its URL."""
    from docker.types import Mount

    port, work = free_port(), champion_image["work"]
    server = docker_engine.containers.run(
        champion_image["tag"],
        entrypoint=["mlflow"],
        command=["models", "serve", "-m", "models:/face_vgg16@champion", "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port)],
        detach=True, network_mode="host",  # the engine here has no bridge; it listens on 127.0.0.1 only
        user="1000:1000", cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
        environment={"MLFLOW_TRACKING_URI": champion_image["tracking"], "HOME": "/tmp", "TF_CPP_MIN_LOG_LEVEL": "3"},
        mounts=[Mount(str(work / "mlruns"), str(work / "mlruns"), type="bind")], working_dir=str(work),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # TensorFlow, MTCNN and the model load first
        while time.monotonic() < deadline:
            server.reload()
            assert server.status in ("created", "running"), server.logs()[-3000:].decode(errors="replace")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(2)
        else:
            pytest.fail(f"the served model did not answer /ping in 300 s: {server.logs()[-3000:]!r}")
        yield url
    finally:
        server.remove(force=True)


def test_a_raw_jpeg_posted_to_the_image_gets_the_name_the_host_gives(
    served: str, champion_image: dict[str, Any], tmp_path: Path
) -> None:
    photos = [LFW_RAW / person / f"{person}_{UNSEEN:04d}.jpg" for person in PEOPLE]
    (tmp_path / "flower.jpg").write_bytes(jpeg_of_a_flower())
    files = [*photos, tmp_path / "flower.jpg"]
    body = {
        "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(f.read_bytes()).decode()] for f in files]},
        "params": {"threshold": 0.0},
    }
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{served}/invocations", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=300) as response:
        served_answers = json.loads(response.read())["predictions"]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    done = subprocess.run(
        [*MLOPS, "predict", "face_vgg16", *map(str, files), "--json", "--threshold", "0",
         "--tracking-uri", champion_image["tracking"]],
        env={**env, **champion_image["env"], "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    host_answers = json.loads(done.stdout)["predictions"]

    assert [a["face"] for a in served_answers] == ["aligned", "aligned", "aligned", "not found"]
    assert [a["name"] for a in served_answers] == [a["name"] for a in host_answers]
    for in_image, on_host in zip(served_answers, host_answers, strict=True):
        assert in_image["probability"] == pytest.approx(on_host["probability"], abs=1e-4)
    assert served_answers[-1]["name"] == "unknown" and served_answers[-1]["top_k"] == "[]"
    assert {a["name"] for a in served_answers[:3]} <= {p.replace("_", " ") for p in PEOPLE}

    text = subprocess.run(
        [*MLOPS, "predict", "face_vgg16", str(files[-1]), "--tracking-uri", champion_image["tracking"]],
        env={**env, **champion_image["env"], "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert text.stdout.splitlines() == [f"{files[-1]}: unknown (no face found)"], text.stderr[-2000:]
