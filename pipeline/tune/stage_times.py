"""Where a search's time goes: one lap per stage, reported in summary.json, MLflow and the log.

The stages of ``mlops tune``: ``setup`` (model code, checks, study, tracking), ``prepare``
(the model's data load and, for a cached-features model, the extraction; a model that
reports ``features_seconds`` in its facts has that part split out as ``features``),
``search`` (the trials), ``finish`` (test scoring, plots, model logging, registration and
the promotion gate).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


class StageClock:
    """Wall seconds per stage, lap by lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def split_features(self, facts: Mapping[str, Any]) -> None:
        """Move the model's own ``features_seconds`` out of ``prepare`` into ``features``."""
        features = facts.get("features_seconds")
        if not isinstance(features, int | float) or "prepare" not in self.seconds:
            return
        features = min(float(features), self.seconds["prepare"])
        self.seconds["prepare"] -= features
        # Right after prepare, in the order the stages ran (the line and summary.json read in that order).
        stages = list(self.seconds)
        stages.insert(stages.index("prepare") + 1, "features")
        self.seconds = {stage: features if stage == "features" else self.seconds[stage] for stage in stages}

    def line(self) -> str:
        """``time: setup 1.2s, prepare 3.0s, features 25.1s, search 40.2s, finish 6.3s``."""
        return "time: " + ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in self.seconds.items())
