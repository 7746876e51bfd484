from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from PIL import Image

from pipeline.tracking import plots


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_optimization_history_from_a_real_study(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=8)
    width, height = png_size(plots.optimization_history(study, 0.9, "val_accuracy", tmp_path / "h.png"))
    assert width > height > 200


def test_learning_curves_and_confusion_matrix(tmp_path: Path) -> None:
    history = {"loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.9], "accuracy": [0.2, 0.6, 0.9]}
    assert png_size(plots.learning_curves(history, tmp_path / "c.png"))[0] > 500
    truth = np.repeat(np.arange(40), 2)
    predicted = truth.copy()
    predicted[::5] = 0
    path = plots.confusion_matrix(truth, predicted, [f"p{i}" for i in range(40)], tmp_path / "m.png")
    assert png_size(path)[0] > 500


def test_residuals(tmp_path: Path) -> None:
    truth = np.linspace(0, 300, 50)
    assert png_size(plots.residuals(truth, truth + 10, tmp_path / "r.png"))[0] > 300
