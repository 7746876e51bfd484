"""What the tuner hands a model, built by hand: for tests that call a model's contract directly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.sdk.contract import ModelPlugin, StudyContext, TrialContext


class Reports:
    """A ``report`` hook that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        self.calls.append((step, dict(metrics)))

    @property
    def steps(self) -> list[int]:
        """The epochs (or other steps) reported, in order."""
        return [step for step, _ in self.calls]


def trial_context(
    checkpoint_dir: Path,
    reports: Reports,
    seed: int = 7,
    goal_metric: str = "val_accuracy",
    direction: str = "maximize",
) -> TrialContext:
    """A trial as the tuner would hand it to ``train``."""
    return TrialContext(0, seed, reports, checkpoint_dir, goal_metric=goal_metric, direction=direction)


def study_context(plugin: ModelPlugin, cache_dir: Path, **data: Any) -> StudyContext:
    """A study context from the model's manifest, with ``data`` options overridden."""
    manifest = plugin.manifest
    return StudyContext(manifest, {**manifest.data, **data}, dict(manifest.params), 42, cache_dir, log=lambda _: None)
