"""The pictures a person wants after a search: trial history, learning curves, confusions."""

from __future__ import annotations

from collections.abc import Sequence
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


def optimization_history(
    values: Sequence[tuple[int, float, str]], target: float, metric: str, direction: str, path: Path
) -> Path:
    """Each finished trial's value, the best so far, and the goal line.

    Args:
        values: (trial number, value, state) for complete and pruned trials.
        target: the goal, drawn as a dashed line.
        metric: the axis label.
        direction: ``maximize`` or ``minimize`` (for the best-so-far line).
        path: where the PNG goes.
    """
    fig, ax = _figure()
    done = [(n, v) for n, v, state in values if state == "COMPLETE"]
    pruned = [(n, v) for n, v, state in values if state == "PRUNED"]
    if done:
        ax.scatter(*zip(*done, strict=True), label="complete", color="tab:blue", zorder=3)
        best = np.maximum.accumulate if direction == "maximize" else np.minimum.accumulate
        ax.step([n for n, _ in done], best([v for _, v in done]), where="post", color="tab:green", label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), label="pruned (last epoch)", color="tab:gray", marker="x")
    ax.axhline(target, color="tab:red", linestyle="--", label=f"goal {target:g}")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history")
    ax.legend(loc="best")
    return _save(fig, path)


def learning_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Training and validation curves per epoch (solid: training, dashed: validation)."""
    fig, ax = _figure()
    epochs = None
    for name, values in history.items():
        if not values:
            continue
        epochs = np.arange(1, len(values) + 1)
        style = "--" if name.startswith("val_") else "-"
        ax.plot(epochs, values, style, label=name)
    ax.set_xlabel("epoch")
    ax.set_title("Learning curves (best trial)")
    if epochs is not None:
        ax.legend(loc="best")
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
