"""What one search hands its trials and its end: the model, its data, the goal, where to write.

``tune()`` builds one ``SearchRun`` once the data is prepared and the MLflow parent run is
open; the objective (each trial) and ``finish_study`` (the end of the search) read it::

    run = SearchRun(plugin, data, goal, tracker, parent_id, run_dir, checkpoints, tags, settings, log)
    objective = Objective(run)
    study.optimize(objective, ...)
    summary = finish_study(study, run, objective)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.settings import TuneSettings
from pipeline.sdk.contract import ModelPlugin
from pipeline.summary import GoalSpec
from pipeline.tracking.tracker import Tracker


@dataclass
class SearchRun:
    """One search's fixed inputs and outputs.

    Attributes:
        plugin: the model.
        data: what the model's ``prepare`` returned.
        goal: the goal (metric, direction, target, confidence) with the run's overrides.
        tracker: the MLflow writer.
        parent_id: the search's MLflow parent run; each trial's run is nested in it.
        run_dir: the model's run folder (``<runs_dir>/<model>``): plots, ``summary.json``.
        checkpoints: folder of the per-trial checkpoint folders.
        tags: tags for every trial run (git commit, data fingerprint).
        settings: the resolved run settings (seed, storage, whether to register).
        log: prints one line for the user.
        deadline: ``time.monotonic()`` at which the search's ``timeout`` runs out; a trial
            still training then is stopped at its next epoch (Optuna's own timeout only
            stops the study between trials, and one fine-tuning trial can take many minutes).
    """

    plugin: ModelPlugin
    data: Any
    goal: GoalSpec
    tracker: Tracker
    parent_id: str
    run_dir: Path
    checkpoints: Path
    tags: Mapping[str, str] = field(default_factory=dict)
    settings: TuneSettings = field(default_factory=TuneSettings)
    log: Callable[[str], None] = print
    deadline: float | None = None

    @property
    def seed(self) -> int:
        """The study seed; trial ``n``'s seed derives from it."""
        return self.settings.seed
