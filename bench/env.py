"""The benchmark's offline environment: weights, data homes and the machine it ran on.

Nothing is ever written into ``../shared/data``: Keras gets a temporary ``KERAS_HOME``
holding a copy of ``keras.json``, scikit-learn a temporary ``SCIKIT_LEARN_DATA`` made of
symlinks (sklearn memoises LFW into ``lfw_home/joblib``, which must land in the copy).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine_peak import cpu_info

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
LFW_RAW = SHARED_DATA / "scikit_learn_data" / "lfw_home" / "lfw_funneled"  # LFW as 250x250 photos, a folder a person
WEIGHTS_FILE = "vgg16_faces_notop.weights.h5"
MODEL_DIR = REPO / "models" / "face_vgg16"


def require_lfw_raw() -> Path:
    """LFW's raw photo folder, or exit with the one line that says how to point at it."""
    if not LFW_RAW.is_dir():
        raise SystemExit(f"LFW photos not found at {LFW_RAW}; set BENCH_SHARED_DATA")
    return LFW_RAW


def lfw_people(min_photos: int, root: Path = LFW_RAW) -> list[tuple[Path, list[Path]]]:
    """Each person folder under ``root`` with at least ``min_photos`` JPEGs (scikit-learn's
    ``min_faces_per_person``), with its photos; both sorted by name."""
    people = ((folder, sorted(folder.glob("*.jpg"))) for folder in sorted(root.iterdir()) if folder.is_dir())
    return [(folder, photos) for folder, photos in people if len(photos) >= min_photos]


LFW_FILES = ("pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt")


def default_weights() -> Path:
    """``$BENCH_WEIGHTS``, else the face-pretrained base in ``../shared/data/keras``."""
    return Path(os.environ.get("BENCH_WEIGHTS", SHARED_DATA / "keras" / WEIGHTS_FILE))


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_keras_home(root: Path) -> Path:
    """A writable ``KERAS_HOME`` with the shared ``keras.json`` copied in."""
    home = root / "keras_home"
    home.mkdir(parents=True, exist_ok=True)
    source = SHARED_DATA / "keras" / "keras.json"
    if source.is_file():
        shutil.copyfile(source, home / "keras.json")
    return home


def make_data_home(root: Path, fraction: float = 1.0, seed: int = 42) -> Path:
    """A ``SCIKIT_LEARN_DATA`` of symlinks into shared/data; LFW thinned to ``fraction``.

    A fraction below 1 keeps ``ceil(fraction * n)`` images of each person (at least 5, so
    every person still splits three ways), chosen with ``seed``: a stratified subset.
    """
    source = SHARED_DATA / "scikit_learn_data"
    home = root / f"sklearn_data_{int(round(fraction * 100))}"
    if home.exists():
        return home
    (home / "lfw_home").mkdir(parents=True)
    if (source / "olivetti_py3.pkz").exists():
        (home / "olivetti_py3.pkz").symlink_to(source / "olivetti_py3.pkz")
    for name in LFW_FILES:
        if (source / "lfw_home" / name).exists():
            (home / "lfw_home" / name).symlink_to(source / "lfw_home" / name)
    people = source / "lfw_home" / "lfw_funneled"
    if not people.is_dir():
        return home
    if fraction >= 1.0:
        (home / "lfw_home" / "lfw_funneled").symlink_to(people)
        return home
    rng = np.random.default_rng(seed)
    for person in sorted(p for p in people.iterdir() if p.is_dir()):
        files = sorted(person.glob("*.jpg"))
        keep = max(5, int(np.ceil(fraction * len(files))))
        target = home / "lfw_home" / "lfw_funneled" / person.name
        target.mkdir(parents=True)
        for index in sorted(rng.choice(len(files), size=min(keep, len(files)), replace=False)):
            (target / files[index].name).symlink_to(files[index])
    return home


class BenchEnv:
    """Temporary homes for one benchmark run; ``env(fraction)`` is a child's environment."""

    def __init__(self, seed: int = 42) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
        self.seed = seed
        self.keras_home = make_keras_home(self.root)

    def env(self, fraction: float = 1.0) -> dict[str, str]:
        """``os.environ`` plus ``KERAS_HOME``, ``SCIKIT_LEARN_DATA`` and quiet TF logging."""
        data_home = make_data_home(self.root, fraction, self.seed)
        return {
            **os.environ,
            "KERAS_HOME": str(self.keras_home),
            "SCIKIT_LEARN_DATA": str(data_home),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONHASHSEED": str(self.seed),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }

    def scratch(self, name: str) -> Path:
        """A fresh folder under the run's temporary root."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        return path

    def cleanup(self) -> None:
        """Remove every temporary folder (never anything under shared/)."""
        shutil.rmtree(self.root, ignore_errors=True)


def machine_header(command: list[str], weights: Path) -> dict[str, Any]:
    """The header record: date, machine, versions, command line and the weights' identity."""
    from datetime import datetime

    def version(module: str) -> str:
        probe = f"import {module} as m; print(m.__version__)"
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else "?"

    return {
        "record": "header",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": " ".join(platform.uname()),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_info(),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {m: version(m) for m in ("tensorflow", "keras", "keras_tuner", "optuna", "mlflow")},
        "command": " ".join(command),
        "weights": str(weights),
        "weights_sha256": sha256(weights) if weights.is_file() else None,
    }
