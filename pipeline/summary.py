"""The result of one ``mlops tune``: what ``notify`` e-mails and ``run`` puts in its summary.

``mlops tune`` writes it as ``summary.json`` in the model's run directory; every later stage
reads that file, so stages stay separate processes (a container, a supervisor) and still agree.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import MlopsError

Direction = Literal["maximize", "minimize"]  # which way the goal metric is better


@dataclass
class GoalSpec:
    """What "good enough" means for a model.

    Attributes:
        metric: the validation metric the goal is checked on, e.g. ``val_accuracy``.
        direction: ``maximize`` (accuracy, R²) or ``minimize`` (RMSE).
        target: the value to reach.
        confidence: when true, an accuracy goal counts as met only when the lower bound
            of the Wilson 95% interval reaches ``target``.
    """

    metric: str = "val_accuracy"
    direction: Direction = "maximize"
    target: float = 0.9
    confidence: bool = False

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b`` in this goal's direction (NaN never is)."""
        return a > b if self.direction == "maximize" else a < b

    @property
    def sign(self) -> str:
        """``>=`` or ``<=``: how the goal reads (``val_accuracy >= 0.9``)."""
        return ">=" if self.direction == "maximize" else "<="

    def reached(self, value: float, lower_bound: float | None = None) -> bool:
        """Whether ``value`` (or its interval's lower bound, when asked for) meets the goal.

        The lower bound counts only for a maximized goal: an error's interval is not computed.
        """
        checked = value
        if self.confidence and lower_bound is not None and self.direction == "maximize":
            checked = lower_bound
        return checked == self.target or self.better(checked, self.target)

    @property
    def kind(self) -> str | None:
        """``fraction`` (accuracy, AUC, F1...), ``error`` (RMSE, loss...), ``score`` (R²), or ``None``."""
        words = set(re.split(r"[^a-z0-9]+", self.metric.lower()))
        for kind, names in _METRIC_KINDS.items():
            if words & names:
                return kind
        return None

    def problem(self, target: float | None = None) -> str | None:
        """Why this goal (or the same goal with ``target``) can never be a sensible one, or ``None``.

        An accuracy is a fraction: a goal outside (0, 1] is a typo (``--goal 90``) or a trick
        (``--goal -1`` would be "met" by any model and register it). An error is minimized
        and positive. The direction must agree with the metric's kind.
        """
        value = self.target if target is None else target
        if not math.isfinite(value):
            return f"goal {value} is not a finite number"
        kind = self.kind
        wanted = {"fraction": "maximize", "score": "maximize", "error": "minimize"}.get(kind or "")
        if wanted and self.direction != wanted:
            noun = {"fraction": "a fraction", "score": "a score", "error": "an error"}[kind or ""]
            return f"{self.metric} is {noun}, so goal.direction must be {wanted}, not {self.direction}"
        if kind == "fraction" and not 0.0 < value <= 1.0:
            return f"{self.metric} is a fraction, so the goal must lie in (0, 1], not {value:g}; e.g. 0.9"
        if kind == "score" and value > 1.0:
            return f"{self.metric} is at most 1, so a goal of {value:g} can never be met; e.g. 0.8"
        if kind == "error" and value <= 0.0:
            return f"{self.metric} is an error (>= 0, minimized), so the goal must be > 0, not {value:g}"
        return None


# Metric names are matched by word (``val_accuracy`` -> {"val", "accuracy"}).
_METRIC_KINDS = {
    "fraction": {"accuracy", "acc", "auc", "precision", "recall", "f1"},
    "error": {"rmse", "mse", "mae", "mape", "loss", "error"},
    "score": {"r2"},
}


@dataclass
class BestTrial:
    """The best trial of a study, as reported."""

    number: int
    value: float
    params: dict[str, Any]
    interval: tuple[float, float] | None = None  # Wilson 95% for accuracy metrics
    test_value: float | None = None  # the goal metric on the held-out test split
    mlflow_run_id: str | None = None


Verdict = Literal["first", "promoted", "forced", "kept"]


@dataclass
class Promotion:
    """The promotion gate's decision: does the search's best model replace the ``champion``?

    Attributes:
        verdict: ``first`` (there was no champion), ``promoted`` (it beat the champion by
            more than the margin), ``forced`` (``--force-promote``) or ``kept`` (the champion
            stays; the new version got alias ``challenger``).
        reason: one sentence saying why, with both scores.
        metric: the test metric compared, e.g. ``test_accuracy``.
        challenger_version: the version the search registered.
        challenger_value: its score on the test split.
        challenger_interval: its Wilson 95% interval (fractions only).
        champion_version: the champion before the gate, if any.
        champion_value: its score on the same test split; ``None`` when it could not be scored.
        champion_interval: its Wilson 95% interval (fractions only).
        champion_scored: ``recorded`` (its registration's score, on a test split with the same
            fingerprint), ``rescored`` (scored now on this test split), ``unseen`` (scored now
            on the examples of this test split it never trained on) or ``unscored``.
        margin: how much better the challenger had to be (metric units).
        compared_n: with ``unseen``, how many test examples both models were scored on.
        challenger_compared: with ``unseen``, the challenger's score on those examples.
    """

    verdict: Verdict
    reason: str
    metric: str
    challenger_version: int
    challenger_value: float
    challenger_interval: tuple[float, float] | None = None
    champion_version: int | None = None
    champion_value: float | None = None
    champion_interval: tuple[float, float] | None = None
    champion_scored: str | None = None
    margin: float = 0.0
    compared_n: int | None = None
    challenger_compared: float | None = None

    @property
    def promoted(self) -> bool:
        """Whether the challenger is now the champion."""
        return self.verdict != "kept"

    @property
    def headline(self) -> str:
        """The decision in a few words, e.g. ``champion v2 kept; v3 is the challenger``."""
        new, old = self.challenger_version, self.champion_version
        if self.verdict == "first":
            return f"v{new} is the first champion"
        if self.verdict == "kept":
            return f"champion v{old} kept; v{new} is the challenger"
        how = "promoted" if self.verdict == "promoted" else "promoted by --force-promote"
        return f"v{new} {how} to champion (v{old} is now previous)"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Promotion:
        """Rebuild from ``asdict`` output (JSON turns the intervals into lists)."""
        data = dict(data)
        for key in ("challenger_interval", "champion_interval"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        if data.get("verdict") not in ("first", "promoted", "forced", "kept"):
            raise ValueError(f"promotion verdict {data.get('verdict')!r} is unknown")
        return cls(**data)


def _staged(data: Any) -> dict[str, Any]:
    """``TuneSummary.staged`` checked as read: numbers by stage, keyed by the stage's value."""
    if not isinstance(data, dict) or not isinstance(data.get("param"), str):
        raise ValueError("staged must be a mapping with a param name")
    checked: dict[str, Any] = {"param": data["param"]}
    for key, kind in (("seconds", float), ("trials", int), ("opened", int)):
        part = data.get(key) or {}
        if not isinstance(part, dict):
            raise ValueError(f"staged.{key} must map stage values to numbers")
        checked[key] = {str(stage): kind(value) for stage, value in part.items()}
    return checked


@dataclass
class TuneSummary:
    """Everything a person wants to know after a search (JSON round-trippable)."""

    model: str
    goal: GoalSpec
    goal_met: bool
    best: BestTrial | None
    trials_total: int = 0
    trials_complete: int = 0
    trials_pruned: int = 0
    trials_failed: int = 0
    trials_interrupted: int = 0  # stopped (Ctrl-C, SIGTERM, a helper at the search's end) and queued for retry
    wall_seconds: float = 0.0
    study_name: str = ""
    storage: str = ""  # with any password removed
    tracking_uri: str = ""
    mlflow_experiment_id: str | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_run_url: str | None = None  # set when the tracking server has a web UI
    registered_model: str | None = None  # "name" and version, e.g. "face_vgg16/3"
    promotion: Promotion | None = None  # the gate's decision, when a model was registered
    kind: str | None = None
    restarts: int = 0
    feature_cache_hit: bool | None = None
    plots: dict[str, str] = field(default_factory=dict)  # title -> PNG path
    stage_seconds: dict[str, float] = field(default_factory=dict)  # setup, prepare, features, search, finish
    data_notes: list[str] = field(default_factory=list)  # the model's prepare on its data: photos skipped, ...
    # A staged search's time by its parameter's value (pipeline/tune/staged.py): {"param",
    # "seconds": {"0": s}, "trials": {"0": n}, "opened": {"1": first trial}}; None: not staged.
    staged: dict[str, Any] | None = None
    run_dir: str = ""
    exit_code: int = 0

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a file (two workers may write at once)."""
        # Imported here: pipeline.sdk's contract imports this module.
        from pipeline.sdk.checkpoints import replace_file

        replace_file(path, self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneSummary:
        """Rebuild from ``to_json`` output."""
        data = dict(data)
        data["goal"] = GoalSpec(**data["goal"])
        best = data.get("best")
        if best is not None:
            if best.get("interval") is not None:
                best["interval"] = tuple(best["interval"])
            data["best"] = BestTrial(**best)
        if data.get("promotion") is not None:  # absent from summaries written before the gate
            data["promotion"] = Promotion.from_dict(data["promotion"])
        if data.get("staged") is not None:  # absent from summaries written before staged searches
            data["staged"] = _staged(data["staged"])
        return cls(**data)

    @classmethod
    def read(cls, path: Path) -> TuneSummary:
        """Read a ``summary.json`` written by ``write``.

        The file lies in a folder the tune stage (pushed model code) can write, so it is
        checked as it is rebuilt, never trusted.

        Raises:
            MlopsError: naming the file when it is unreadable, not JSON or not a summary.
        """
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise MlopsError(
                f"{path}: not a summary mlops tune wrote ({type(error).__name__}: {error}); run the tune again"
            ) from None
