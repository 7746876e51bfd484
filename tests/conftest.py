"""Shared fixtures: seeds, and the offline face data and weights from ../shared/data.

Loaders write caches (Keras' keras.json and models/, scikit-learn's joblib memo), so tests
point KERAS_HOME and SCIKIT_LEARN_DATA at temporary folders of symlinks, never at shared/.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline import heap

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLOPS_SHARED_DATA", ROOT.parent / "shared" / "data"))
FACE_WEIGHTS = SHARED / "keras" / "vgg16_faces_notop.weights.h5"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches this process and the ``mlops`` commands the tests start.

    Started in the background (``bash .ci/run &``), pytest inherits an ignored SIGINT, and so
    would every child: ``mlops`` rightly keeps an ignored SIGINT ignored, and the tests that
    send it one (a clean stop, ``status --watch``) would wait in vain.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _collector() -> Iterator[None]:
    """A test that runs ``pipeline.cli.main`` in this process leaves it a test session, not a command
    process: nothing frozen accumulates across tests (pipeline/heap.py)."""
    yield
    heap.disable_for_process()


def make_offline_homes(base: Path) -> dict[str, str]:
    """KERAS_HOME and SCIKIT_LEARN_DATA folders of symlinks into ../shared/data."""
    keras_home, sk_home = base / "keras_home", base / "scikit_learn_data"
    (sk_home / "lfw_home").mkdir(parents=True, exist_ok=True)
    keras_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHARED / "keras" / "keras.json", keras_home / "keras.json")
    source = SHARED / "scikit_learn_data"
    links = {sk_home / "olivetti_py3.pkz": source / "olivetti_py3.pkz"}
    for name in ("lfw_funneled", "pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt"):
        links[sk_home / "lfw_home" / name] = source / "lfw_home" / name
    for link, target in links.items():
        if not link.exists():
            link.symlink_to(target)
    return {"KERAS_HOME": str(keras_home), "SCIKIT_LEARN_DATA": str(sk_home)}


@pytest.fixture(scope="session")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables for the offline data; skips when ../shared/data is absent."""
    if not FACE_WEIGHTS.is_file():
        pytest.skip(f"offline data not found at {SHARED} (set MLOPS_SHARED_DATA)")
    return make_offline_homes(tmp_path_factory.mktemp("offline"))


@pytest.fixture
def offline(offline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``offline_env`` applied to this process."""
    for name, value in offline_env.items():
        monkeypatch.setenv(name, value)
    return offline_env
