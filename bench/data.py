"""What every contender shares: the same data, the same split, the same base, one result file.

The split is the face model's own (``faces.load_faces`` + ``faces.split`` with the seed and
fractions of ``models/face_vgg16/model.yaml``), so KerasTuner and the retrain loop see
exactly the train / validation / test images ``mlops tune`` sees.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.env import MODEL_DIR, default_weights

DATASETS = {"olivetti": 64, "lfw": 96}  # data set -> the input size the benchmark uses


@dataclass
class Split:
    """Images (uint8 RGB) and labels per split, the class count, and load timing."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    n_classes: int
    load_seconds: float


def face_modules() -> tuple[Any, Any, Any]:
    """The face model's manifest and its ``faces`` and ``backbone`` modules, imported as the
    pipeline imports them."""
    from pipeline.sdk.contract import load_plugin

    plugin = load_plugin(MODEL_DIR)
    package = plugin.module.__name__.rsplit(".", 1)[0]
    faces = importlib.import_module(f"{package}.faces")
    backbone = importlib.import_module(f"{package}.backbone")
    return plugin.manifest, faces, backbone


def data_options(manifest: Any, dataset: str, size: int, min_faces: int | None = None) -> dict[str, Any]:
    """model.yaml's ``data:`` section with the source and input size set as ``--set`` would."""
    options = dict(manifest.data)
    options.update({"source": dataset, "input_size": size})
    if min_faces is not None:
        options["min_faces_per_person"] = min_faces
    return options


def load_split(dataset: str, size: int, seed: int, min_faces: int | None = None) -> Split:
    """Load the faces and split them exactly as the face model's ``prepare`` does."""
    started = time.perf_counter()
    manifest, faces_module, _ = face_modules()
    options = data_options(manifest, dataset, size, min_faces)
    faces = faces_module.load_faces(options)
    parts = faces_module.split(
        faces, float(options.get("val_fraction", 0.2)), float(options.get("test_fraction", 0.2)), seed
    )
    return Split(
        images={name: faces.images[index] for name, index in parts.items()},
        labels={name: faces.labels[index] for name, index in parts.items()},
        n_classes=len(faces.names),
        load_seconds=time.perf_counter() - started,
    )


def preprocess(images: np.ndarray) -> np.ndarray:
    """``keras.applications.vgg16.preprocess_input`` on uint8 RGB (the weights' convention)."""
    import keras

    return keras.applications.vgg16.preprocess_input(images.astype(np.float32))


def contender_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every contender takes (the runner passes the same ones to all)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="olivetti")
    parser.add_argument("--size", type=int, default=None, help="input px; default per data set")
    parser.add_argument("--goal", type=float, default=0.90)
    parser.add_argument("--budget-seconds", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weights", type=Path, default=default_weights())
    parser.add_argument("--result", type=Path, required=True, help="JSON written (and rewritten)")
    parser.add_argument("--min-faces", type=int, default=None, help="LFW min_faces_per_person")
    parser.add_argument("--quick", action="store_true", help="tiny budgets for a smoke run")
    return parser


class ResultFile:
    """A contender's result, rewritten atomically after every trial so a kill loses little."""

    def __init__(self, path: Path, **fields: Any) -> None:
        self.path = path
        self.fields: dict[str, Any] = {"pid": os.getpid(), **fields}
        self.started = time.perf_counter()

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` in and write the file."""
        self.fields.update(fields)
        self.fields["elapsed_s"] = time.perf_counter() - self.started
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.fields, indent=1, default=float))
        tmp.replace(self.path)


def deadline_callback(deadline: float) -> Any:
    """A Keras callback that ends training once ``time.monotonic()`` passes ``deadline``."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if time.monotonic() > deadline:
                self.model.stop_training = True

    return Deadline()
