"""The pictures a person wants after a search: trial history, learning curves, confusions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def optimization_history(study: Any, target: float, metric: str, path: Path) -> Path:
    """Optuna's own optimization-history plot (each trial, best so far) plus the goal line.

    Args:
        study: the Optuna study.
        target: the goal, drawn as a dashed line.
        metric: the axis label.
        path: where the PNG goes.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" in Optuna 5
        ax = plot_optimization_history(study, target_name=metric)
    ax.axhline(target, color="tab:red", linestyle="--", label=f"goal {target:g}")
    ax.legend(loc="best")
    fig = ax.figure
    fig.set_size_inches(7.0, 4.5)  # type: ignore[union-attr]
    return _save(fig, path)


def learning_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Per-epoch curves of the best trial: losses on the left, other metrics on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    for name, values in history.items():
        if not values:
            continue
        axis = left if "loss" in name else right
        style = "--" if name.startswith("val_") else "-"
        axis.plot(range(1, len(values) + 1), values, style, label=name)
    for axis, title in ((left, "loss"), (right, "metric")):
        axis.set_xlabel("epoch")
        axis.set_title(title)
        if axis.lines:
            axis.legend(loc="best")
    fig.suptitle("Learning curves (best trial; dashed: validation)")
    return _save(fig, path)


def confusion_matrix(y_true: Any, y_pred: Any, labels: list[str], path: Path) -> Path:
    """A confusion matrix of the test split, rows normalised (names on the axes up to 40 classes).

    Drawn with ``imshow`` rather than scikit-learn's ``ConfusionMatrixDisplay``, which took
    2.7 s for 40 classes (a text artist per cell).
    """
    from sklearn.metrics import confusion_matrix as matrix_of

    counts = matrix_of(y_true, y_pred, labels=list(range(len(labels))))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.2 * len(labels), 14)
    fig, ax = _figure(size + 1, size)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if len(labels) <= 40:
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7 if len(labels) > 15 else 9)
        ax.set_yticks(ticks, labels, fontsize=7 if len(labels) > 15 else 9)
    if len(labels) <= 15:
        for (row, col), count in np.ndenumerate(counts):
            if count:
                ax.text(
                    col,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rates[row, col] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"Confusion matrix (test split, accuracy {accuracy:.3f})")
    return _save(fig, path)


def residuals(y_true: Any, y_pred: Any, path: Path) -> Path:
    """Predicted against true values on the test split (for regression)."""
    fig, ax = _figure(5.5, 5.0)
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    low, high = float(np.min(y_true)), float(np.max(y_true))
    ax.plot([low, high], [low, high], "--", color="tab:red")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("Predictions (test split)")
    return _save(fig, path)
