"""The promotion gate: a search's best model replaces ``champion`` only when it beats it.

A model a search registers is a *challenger*. ``gate`` scores the current champion on the
same held-out test split, ``decide`` compares the two scores (a pure function), and the
aliases move: ``champion`` to the winner, ``previous`` to the champion it replaced (for
rollback), ``challenger`` to a loser. Every version carries its test score, the
fingerprint of the test split it was scored on and the verdict as tags, so the next gate
can reuse a recorded score instead of re-scoring.

Aliases and "atomic": MLflow has no transaction over several aliases; each move is one
call. They are ordered so that a reader of ``models:/NAME@champion`` always finds a
version: ``previous`` is set to the outgoing champion first, then ``champion`` to the
incoming one, then ``challenger`` is dropped from it. The decision is recorded on the
version before any alias moves, so a gate killed halfway is finished, not re-decided, by
the next run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import MlopsError
from pipeline.sdk.contract import Evaluation
from pipeline.summary import GoalSpec, Promotion, Verdict
from pipeline.tracking import unseen
from pipeline.tune.confidence import wilson_interval

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
TAG_METRIC = "mlops.test_metric"
TAG_SCORE = "mlops.test_score"
TAG_N = "mlops.test_n"
TAG_FINGERPRINT = "mlops.test_fingerprint"
TAG_VERDICT = "mlops.verdict"
TAG_CHAMPION_SINCE = "mlops.champion_since"  # on the registered model: "<version>@<ISO time>"
TAG_DECISION = "mlops.promotion"  # the whole decision, JSON: what a resumed gate finishes

# Scores the registered model ``models:/NAME/VERSION`` on this search's test split.
Rescore = Callable[[str], Evaluation]


@dataclass(frozen=True)
class Score:
    """One model's score on a test split.

    Attributes:
        value: the test metric; NaN when the model could not be scored.
        n: test examples behind it (for a fraction's Wilson interval).
        interval: the Wilson 95% interval, for fractions.
        how: ``scored`` (just now, on this split), ``recorded`` (reused: same split),
            ``rescored`` (a champion scored now on this split), ``unseen`` (scored now on
            the examples of this split the champion never trained on) or ``unscored``.
        note: why it is unscored, or on which examples it was scored.
    """

    value: float
    n: int | None = None
    interval: tuple[float, float] | None = None
    how: str = "scored"
    note: str = ""


def score(goal: GoalSpec, value: float, n: int | None, how: str = "scored") -> Score:
    """A score with its Wilson interval when the goal's metric is a fraction (an accuracy)."""
    interval = wilson_interval(value, n) if goal.kind == "fraction" and n and math.isfinite(value) else None
    return Score(float(value), n, interval, how)


def test_split_fingerprint(data_fingerprint: str | None, data_options: Mapping[str, Any], seed: int) -> str | None:
    """What identifies a study's test split: its data, the data options (the split fractions) and the seed.

    ``None`` when the model reports no data fingerprint: then no recorded score can be
    trusted to come from the same split, and the champion is always re-scored.
    """
    if not data_fingerprint:
        return None
    parts = {"data": data_fingerprint, "options": dict(data_options), "seed": seed}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def decide(
    challenger: Score, champion: Score | None, goal: GoalSpec, margin: float, force: bool = False
) -> tuple[Verdict, str]:
    """Whether the challenger replaces the champion, and why.

    The challenger must be better than the champion by more than ``margin`` in the goal's
    direction: a tie keeps the champion. With ``goal.confidence`` an accuracy's Wilson
    lower bound is what must beat the champion, as it is what must reach the goal.

    Args:
        challenger: the new model's score on the test split.
        champion: the champion's score on the same split; ``None`` when there is no champion.
        goal: the goal (its direction and metric).
        margin: how much better (metric units, >= 0) the challenger must be.
        force: promote whatever the scores (``--force-promote``).

    Returns:
        ``(verdict, reason)``: verdict ``first``, ``forced``, ``promoted`` or ``kept``.
    """
    metric = "test_" + goal.metric.removeprefix("val_")
    mine = f"{metric} {challenger.value:.4g}"
    if champion is None:
        return "first", f"no champion yet: the challenger ({mine}) becomes champion"
    theirs = f"{champion.value:.4g}" if math.isfinite(champion.value) else "unscored"
    if force:
        return "forced", f"--force-promote: promoted without the comparison (challenger {mine}, champion {theirs})"
    if not math.isfinite(challenger.value):
        return "kept", f"the challenger's {metric} is not a number; the champion stays"
    if not math.isfinite(champion.value):
        return "kept", (
            f"the champion could not be scored on this test split ({champion.note or 'no score'}); "
            "it stays: promote by hand (mlops promote) or rerun with --force-promote"
        )
    mine_checked, what = challenger.value, "challenger"
    if goal.confidence and challenger.interval and goal.direction == "maximize":
        mine_checked, what = challenger.interval[0], "challenger's Wilson lower bound"
    gain = mine_checked - champion.value if goal.direction == "maximize" else champion.value - mine_checked
    same = {
        "recorded": "the same test split",
        "unseen": f"both scored now on {champion.note}",
    }.get(champion.how, "this test split, scored now" + (f"; {champion.note}" if champion.note else ""))
    compared = f"{what} {mine_checked:.4g} vs champion {theirs} ({same}): {gain:+.4g}"
    if gain > margin:
        return "promoted", f"{metric}: {compared}, better by more than the margin {margin:g}"
    return "kept", f"{metric}: {compared}, not better by more than the margin {margin:g}"


def champion_score(
    client: Any,
    name: str,
    version: Any,
    goal: GoalSpec,
    fingerprint: str | None,
    rescore: Rescore,
    challenger: Score,
    evaluation: Evaluation | None = None,
) -> tuple[Score, Score]:
    """The champion's and the challenger's scores on the same test examples, and how they were had.

    The same split: the champion's recorded score. A different split: the champion is scored
    now, and where its run records what it trained on (``unseen.record``) and ``evaluation``
    names this split's test examples, both are scored only on those it never saw.

    Returns:
        ``(champion, challenger)``; the challenger as given unless it was scored on fewer examples.
    """
    metric = "test_" + goal.metric.removeprefix("val_")
    tags = dict(version.tags or {})
    if fingerprint and tags.get(TAG_FINGERPRINT) == fingerprint and tags.get(TAG_METRIC) == metric:
        try:
            n = int(tags[TAG_N]) if tags.get(TAG_N) else None
            return score(goal, float(tags[TAG_SCORE]), n, "recorded"), challenger
        except (KeyError, ValueError):
            pass  # a damaged tag: score it again
    # What it trained on first: a champion that saw every test example here is not scored at all.
    seen, why = unseen.read(client, getattr(version, "run_id", None))
    keep = None
    if seen is not None and evaluation is not None and evaluation.ids is not None:
        keep = np.array([example not in seen for example in evaluation.ids], dtype=bool)
        if not keep.any():
            return _unscored("it trained on every example of this test split"), challenger
    try:
        theirs = rescore(f"models:/{name}/{version.version}")
    except Exception as error:  # the model's own code and MLflow's loaders raise anything
        return _unscored(f"{type(error).__name__}: {str(error)[:200]}"), challenger
    if not math.isfinite(theirs.value):
        return _unscored(f"its {metric} came out as {theirs.value}"), challenger
    if keep is None or evaluation is None:
        note = f"not checked for overlap: {why or 'this model gives no example ids'}"
        return _with_note(score(goal, theirs.value, theirs.n, "rescored"), note), challenger
    try:
        values = unseen.scores_on_unseen(goal.metric, theirs, evaluation, keep)
    except ValueError as error:
        return _unscored(str(error)), challenger
    if keep.all():
        return score(goal, theirs.value, theirs.n, "rescored"), challenger
    n, note = int(keep.sum()), f"{int(keep.sum())} of {len(keep)} test examples: it trained on the rest"
    return _with_note(score(goal, values[0], n, "unseen"), note), _with_note(score(goal, values[1], n, "unseen"), note)


def _unscored(note: str) -> Score:
    return Score(math.nan, None, None, "unscored", note)


def _with_note(scored: Score, note: str) -> Score:
    return Score(scored.value, scored.n, scored.interval, scored.how, note)


# How MLflow loads a ``PythonModel``: pickled, or from code (``python_model=`` a file path).
_PYTHON_MODEL_LOADERS = ("mlflow.pyfunc.model", "mlflow.pyfunc.loaders.code_model")


def load_model(model_uri: str) -> Any:
    """The registered model as the object ``evaluate`` scores: its own flavour, not MLflow's pyfunc wrapper.

    A model logged as Python code (the face model's ``serving.FaceNamer``) is that Python
    object, loaded (``load_context`` run); a Keras or scikit-learn model is the fitted model.
    """
    import mlflow

    flavors = mlflow.models.get_model_info(model_uri).flavors
    if "keras" in flavors:
        return mlflow.keras.load_model(model_uri)
    if "sklearn" in flavors:
        return mlflow.sklearn.load_model(model_uri)
    loaded = mlflow.pyfunc.load_model(model_uri)
    if flavors.get("python_function", {}).get("loader_module") in _PYTHON_MODEL_LOADERS:
        return loaded.unwrap_python_model()
    return loaded


def gate(
    client: Any,
    name: str,
    version: int,
    challenger: Score,
    goal: GoalSpec,
    *,
    fingerprint: str | None,
    margin: float,
    rescore: Rescore,
    force: bool = False,
    evaluation: Evaluation | None = None,
) -> Promotion:
    """Decide whether registered ``name`` ``version`` replaces the champion, and move the aliases.

    A version that already holds a decision (the gate ran, and its process died while
    moving aliases) keeps that decision and only the moves are finished; except that
    ``force`` overrides a recorded ``kept``.

    Args:
        client: an ``MlflowClient``.
        name: the registered model.
        version: the challenger's version.
        challenger: its score on this search's test split.
        goal: the goal (direction, metric, confidence).
        fingerprint: ``test_split_fingerprint`` of this search (``None``: unknown).
        margin: how much better the challenger must be.
        rescore: scores a registered model URI on this test split.
        force: promote without the comparison.
        evaluation: the challenger's evaluation (its test examples' ids and predictions):
            what lets a champion that trained on part of this split be compared on the rest.

    Returns:
        The decision, with both scores.
    """
    mine = client.get_model_version(name, str(version))
    recorded = dict(mine.tags or {}).get(TAG_DECISION)
    if recorded:
        decision = Promotion.from_dict(json.loads(recorded))
        if decision.promoted or not force:
            _move(client, name, version, decision.promoted)
            return decision
    metric = "test_" + goal.metric.removeprefix("val_")
    current = _alias(client, name, CHAMPION)
    theirs, compared = None, challenger
    if current is not None and int(current.version) != version:
        theirs, compared = champion_score(client, name, current, goal, fingerprint, rescore, challenger, evaluation)
    verdict, reason = decide(compared, theirs, goal, margin, force)
    if current is not None and theirs is None:  # promoted by hand, or before this gate existed
        reason = f"v{version} is already the champion"
    decision = Promotion(
        verdict=verdict,
        reason=reason,
        metric=metric,
        challenger_version=version,
        challenger_value=challenger.value,
        challenger_interval=challenger.interval,
        champion_version=int(current.version) if theirs is not None and current is not None else None,
        champion_value=theirs.value if theirs is not None and math.isfinite(theirs.value) else None,
        champion_interval=theirs.interval if theirs is not None else None,
        champion_scored=theirs.how if theirs is not None else None,
        margin=margin,
        compared_n=compared.n if compared is not challenger else None,
        challenger_compared=compared.value if compared is not challenger else None,
    )
    tags = {
        TAG_METRIC: metric,
        TAG_SCORE: repr(challenger.value),
        TAG_N: str(challenger.n or ""),
        TAG_FINGERPRINT: fingerprint or "",
        TAG_VERDICT: verdict,
        TAG_DECISION: json.dumps(asdict(decision)),
    }
    for key, value in tags.items():  # the decision first: the moves below may be cut short
        client.set_model_version_tag(name, str(version), key, value)
    _move(client, name, version, decision.promoted)
    return decision


def _alias(client: Any, name: str, alias: str) -> Any | None:
    """The version ``alias`` names, or ``None``."""
    aliases = client.get_registered_model(name).aliases or {}
    if alias not in aliases:
        return None
    return client.get_model_version(name, str(aliases[alias]))


def _move(client: Any, name: str, version: int, promote: bool) -> None:
    """Champion (``previous`` first, then ``champion``) or challenger; idempotent."""
    aliases = {key: int(value) for key, value in (client.get_registered_model(name).aliases or {}).items()}
    if not promote:
        if aliases.get(CHALLENGER) != version:
            client.set_registered_model_alias(name, CHALLENGER, str(version))
        return
    current = aliases.get(CHAMPION)
    if current != version:
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, str(current))
        _crown(client, name, version)
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def _crown(client: Any, name: str, version: int) -> None:
    """Point ``champion`` at ``version`` and note when (MLflow keeps no time for an alias)."""
    client.set_registered_model_alias(name, CHAMPION, str(version))
    since = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_registered_model_tag(name, TAG_CHAMPION_SINCE, f"{version}@{since}")


# ``mlops promote`` and ``mlops rollback``: the same moves, by hand.


def open_registry(uri: str) -> Any:
    """An ``MlflowClient`` for an existing store (a by-hand command must not create an empty one).

    Raises:
        MlopsError: when a SQLite store's file is missing or a server does not answer.
    """
    from mlflow import MlflowClient

    from pipeline.tracking.tracker import _probe

    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise MlopsError(
                f"no MLflow store at {path} (tracking URI {uri}); pass --tracking-uri or set MLFLOW_TRACKING_URI"
            )
    try:
        _probe(uri)
    except OSError as error:
        raise MlopsError(
            f"MLflow tracking at {uri} unreachable ({error}); start the server or pass --tracking-uri"
        ) from None
    return MlflowClient(tracking_uri=uri)


def _aliases_of(client: Any, name: str, uri: str) -> dict[str, int]:
    try:
        model = client.get_registered_model(name)
    except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST, or the store itself
        raise MlopsError(
            f"no registered model {name!r} in {uri}; check the name (model.yaml name:) and --tracking-uri"
        ) from None
    return {key: int(value) for key, value in (model.aliases or {}).items()}


def promote(client: Any, name: str, version: int, uri: str) -> tuple[int | None, str]:
    """Make ``version`` the champion by hand; the champion it replaces becomes ``previous``.

    Returns:
        The version that was champion (``None``: none) and a line to print.

    Raises:
        MlopsError: when the model or the version does not exist.
    """
    aliases = _aliases_of(client, name, uri)
    try:
        client.get_model_version(name, str(version))
    except Exception:
        raise MlopsError(f"{name} has no version {version} in {uri}; list them in the MLflow UI (Models)") from None
    current = aliases.get(CHAMPION)
    if current == version:
        return current, f"{name}/{version} is already the champion; nothing moved"
    client.set_model_version_tag(name, str(version), TAG_VERDICT, "promoted by hand")
    _move(client, name, version, promote=True)
    was = f"previous: {name}/{current}" if current is not None else "there was no champion"
    return current, f"{name}/{version} is now the champion ({was})"


def rollback(client: Any, name: str, uri: str) -> tuple[int, int, str]:
    """Swap ``champion`` and ``previous``: the previous version serves again.

    The version rolled back from becomes ``previous``, so no version loses its alias and a
    second rollback undoes the first. ``champion`` is moved first: a reader always finds a
    champion, and should the second move never happen, the rollback itself is done and the
    version rolled away from is named in the model's ``mlops.last_rollback`` tag (written
    before either move).

    Returns:
        (new champion, new previous, a line to print).

    Raises:
        MlopsError: when the model has no ``previous`` (nothing to roll back to).
    """
    aliases = _aliases_of(client, name, uri)
    current, before = aliases.get(CHAMPION), aliases.get(PREVIOUS)
    if current is None or before is None or current == before:
        raise MlopsError(
            f"{name} has no previous champion to roll back to (aliases: {aliases or 'none'}); "
            f"use mlops promote {name} VERSION"
        )
    client.set_registered_model_tag(name, "mlops.last_rollback", f"champion {current} -> {before}")
    _crown(client, name, before)
    client.set_registered_model_alias(name, PREVIOUS, str(current))
    return before, current, f"{name}: champion is {name}/{before} again (previous: {name}/{current})"
