"""The promotion gate: the decision alone, then the aliases of a real MLflow registry (SQLite)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import Ridge
from sklearn.metrics import root_mean_squared_error

from pipeline.errors import MlopsError
from pipeline.sdk.contract import Evaluation, ExportedModel
from pipeline.summary import GoalSpec
from pipeline.tracking import promotion
from pipeline.tracking.promotion import Score, decide, gate, score
from pipeline.tracking.status import read_champion
from pipeline.tracking.tracker import Tracker

ACCURACY = GoalSpec("val_accuracy", "maximize", 0.9)
RMSE = GoalSpec("val_rmse", "minimize", 50.0)

# A small regression problem: y depends on the first column only.
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(60, 3))
Y = 3.0 * X[:, 0] + _RNG.normal(scale=0.1, size=60)


def _never(uri: str) -> Evaluation:
    raise AssertionError(f"{uri} was re-scored, but a recorded score on the same split was there")


# The decision: a pure function.


def test_a_weaker_or_equal_challenger_is_kept_and_a_better_one_promoted() -> None:
    champion = score(ACCURACY, 0.90, 200, "recorded")
    assert decide(score(ACCURACY, 0.85, 200), champion, ACCURACY, 0.0)[0] == "kept"
    assert decide(score(ACCURACY, 0.90, 200), champion, ACCURACY, 0.0)[0] == "kept"  # a tie keeps the champion
    verdict, reason = decide(score(ACCURACY, 0.93, 200), champion, ACCURACY, 0.0)
    assert verdict == "promoted"
    assert reason == (
        "test_accuracy: challenger 0.93 vs champion 0.9 (the same test split): +0.03, better by more than the margin 0"
    )


def test_the_margin_and_the_direction_decide() -> None:
    champion = score(RMSE, 55.0, 80, "rescored")
    assert score(RMSE, 55.0, 80).interval is None  # an error has no Wilson interval
    assert decide(score(RMSE, 54.0, 80), champion, RMSE, 0.0)[0] == "promoted"  # lower is better
    verdict, reason = decide(score(RMSE, 54.0, 80), champion, RMSE, 2.0)
    assert verdict == "kept"
    assert reason == (
        "test_rmse: challenger 54 vs champion 55 (this test split, scored now): +1, "
        "not better by more than the margin 2"
    )
    assert decide(score(RMSE, 56.0, 80), champion, RMSE, 0.0)[0] == "kept"


def test_with_goal_confidence_the_wilson_lower_bound_must_beat_the_champion() -> None:
    goal = GoalSpec("val_accuracy", "maximize", 0.9, confidence=True)
    champion = score(goal, 0.90, 100, "recorded")
    small = score(goal, 0.95, 40)  # better, but on 40 examples its lower bound is about 0.83
    assert small.interval is not None and small.interval[0] < 0.9
    assert decide(small, champion, goal, 0.0)[0] == "kept"
    assert decide(score(goal, 0.99, 2000), champion, goal, 0.0)[0] == "promoted"


def test_no_champion_force_and_an_unscored_champion() -> None:
    assert decide(score(RMSE, 70.0, 10), None, RMSE, 5.0)[0] == "first"
    unscored = Score(math.nan, how="unscored", note="ValueError: shapes")
    verdict, reason = decide(score(RMSE, 1.0, 10), unscored, RMSE, 0.0)
    assert verdict == "kept" and "could not be scored on this test split (ValueError: shapes)" in reason
    assert decide(score(RMSE, 99.0, 10), score(RMSE, 1.0, 10), RMSE, 0.0, force=True)[0] == "forced"
    assert decide(Score(math.nan), score(RMSE, 1.0, 10), RMSE, 0.0)[0] == "kept"


def test_the_test_split_fingerprint_follows_data_options_and_seed() -> None:
    base = promotion.test_split_fingerprint("abc", {"test_fraction": 0.2}, 42)
    assert base == promotion.test_split_fingerprint("abc", {"test_fraction": 0.2}, 42)
    assert base != promotion.test_split_fingerprint("abc", {"test_fraction": 0.2}, 43)
    assert base != promotion.test_split_fingerprint("abc", {"test_fraction": 0.3}, 42)
    assert base != promotion.test_split_fingerprint("abd", {"test_fraction": 0.2}, 42)
    assert promotion.test_split_fingerprint("", {}, 42) is None  # no fingerprint: never "the same split"


# A real registry.


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for this module (its schema takes seconds to create)."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


def register(uri: str, name: str, alpha: float) -> int:
    """Fit a ridge on (X, Y), log it in a run of experiment ``name`` and register it; its version."""
    tracker = Tracker(uri, name)
    run_id = tracker.parent_run(None, f"alpha-{alpha}", {})
    model_uri = tracker.log_model(
        run_id, ExportedModel("sklearn", Ridge(alpha=alpha).fit(X, Y), X[:2], ["scikit-learn"])
    )
    return int(tracker.register(model_uri, run_id, name, {}).rpartition("/")[2])


def aliases(uri: str, name: str) -> dict[str, int]:
    return {k: int(v) for k, v in MlflowClient(tracking_uri=uri).get_registered_model(name).aliases.items()}


def test_a_weaker_challenger_is_not_promoted_and_a_better_one_is(store: str) -> None:
    name, client = "gate-recorded", MlflowClient(tracking_uri=store)
    v1, v2, v3 = (register(store, name, alpha) for alpha in (1.0, 2.0, 3.0))
    first = gate(client, name, v1, score(RMSE, 50.0, 80), RMSE, fingerprint="fp", margin=0.0, rescore=_never)
    assert (first.verdict, aliases(store, name)) == ("first", {"champion": v1})

    weaker = gate(client, name, v2, score(RMSE, 52.0, 80), RMSE, fingerprint="fp", margin=0.0, rescore=_never)
    assert weaker.verdict == "kept" and not weaker.promoted
    assert aliases(store, name) == {"champion": v1, "challenger": v2}  # the champion unchanged
    assert (weaker.champion_version, weaker.champion_value, weaker.champion_scored) == (v1, 50.0, "recorded")
    tags = client.get_model_version(name, str(v2)).tags
    assert tags[promotion.TAG_VERDICT] == "kept" and tags[promotion.TAG_SCORE] == "52.0"
    assert tags[promotion.TAG_FINGERPRINT] == "fp" and tags[promotion.TAG_METRIC] == "test_rmse"
    assert json.loads(tags[promotion.TAG_DECISION])["reason"] == weaker.reason
    assert "not better by more than the margin 0" in weaker.reason

    better = gate(client, name, v3, score(RMSE, 49.0, 80), RMSE, fingerprint="fp", margin=0.0, rescore=_never)
    assert better.verdict == "promoted"
    assert aliases(store, name) == {"champion": v3, "previous": v1, "challenger": v2}


def test_on_a_new_test_split_the_champion_is_scored_again(store: str) -> None:
    name, client = "gate-rescored", MlflowClient(tracking_uri=store)
    v1, v2 = register(store, name, 1.0), register(store, name, 500.0)  # alpha 500: a much worse fit
    gate(client, name, v1, score(RMSE, 0.2, 60), RMSE, fingerprint="old-split", margin=0.0, rescore=_never)
    test_x, test_y = X[::2] + 0.5, Y[::2] + 1.5  # "the new test split"

    def rescore(uri: str) -> Evaluation:
        model = promotion.load_model(uri)
        return Evaluation(float(root_mean_squared_error(test_y, model.predict(test_x))), len(test_y))

    expected = float(root_mean_squared_error(test_y, Ridge(alpha=1.0).fit(X, Y).predict(test_x)))
    mine = float(root_mean_squared_error(test_y, Ridge(alpha=500.0).fit(X, Y).predict(test_x)))
    decision = gate(client, name, v2, score(RMSE, mine, 30), RMSE, fingerprint="new-split", margin=0.0, rescore=rescore)
    assert decision.champion_scored == "rescored"
    assert decision.champion_value == pytest.approx(expected)  # v1 loaded from the registry, scored on the new split
    assert decision.verdict == "kept" and aliases(store, name) == {"champion": v1, "challenger": v2}


def test_a_champion_that_cannot_be_scored_stays_and_says_why(store: str) -> None:
    name, client = "gate-unscored", MlflowClient(tracking_uri=store)
    v1, v2 = register(store, name, 1.0), register(store, name, 2.0)
    gate(client, name, v1, score(RMSE, 5.0, 60), RMSE, fingerprint=None, margin=0.0, rescore=_never)

    def broken(uri: str) -> Evaluation:
        raise ValueError("expected 2048 features, got 3")

    decision = gate(client, name, v2, score(RMSE, 1.0, 60), RMSE, fingerprint=None, margin=0.0, rescore=broken)
    assert (decision.verdict, decision.champion_scored, decision.champion_value) == ("kept", "unscored", None)
    assert "(ValueError: expected 2048 features, got 3)" in decision.reason
    assert aliases(store, name) == {"champion": v1, "challenger": v2}
    forced = gate(
        client, name, v2, score(RMSE, 1.0, 60), RMSE, fingerprint=None, margin=0.0, rescore=broken, force=True
    )
    assert forced.verdict == "forced" and aliases(store, name) == {"champion": v2, "previous": v1}


def test_a_gate_cut_short_between_its_alias_moves_is_finished_not_decided_again(store: str) -> None:
    name, client = "gate-resumed", MlflowClient(tracking_uri=store)
    v1, v2 = register(store, name, 1.0), register(store, name, 2.0)
    gate(client, name, v1, score(RMSE, 5.0, 60), RMSE, fingerprint="fp", margin=0.0, rescore=_never)
    decided = gate(client, name, v2, score(RMSE, 4.0, 60), RMSE, fingerprint="fp", margin=0.0, rescore=_never)
    # What a process killed after "previous" and before "champion" leaves:
    client.set_registered_model_alias(name, "champion", str(v1))
    again = gate(client, name, v2, score(RMSE, 99.0, 60), RMSE, fingerprint="other", margin=9.0, rescore=_never)
    assert again == decided and again.verdict == "promoted"
    assert aliases(store, name) == {"champion": v2, "previous": v1}


def test_promote_by_hand_and_rollback_keep_every_version_aliased(store: str) -> None:
    name, client = "by-hand", MlflowClient(tracking_uri=store)
    v1, v2, v3 = (register(store, name, alpha) for alpha in (1.0, 2.0, 3.0))
    with pytest.raises(MlopsError, match="has no previous champion to roll back to"):
        promotion.rollback(client, name, store)
    assert promotion.promote(client, name, v1, store)[0] is None
    rescore = lambda uri: Evaluation(1.0, 60)  # noqa: E731
    gate(client, name, v2, score(RMSE, 9.0, 60), RMSE, fingerprint=None, margin=0.0, rescore=rescore)
    assert aliases(store, name) == {"champion": v1, "challenger": v2}

    previous, line = promotion.promote(client, name, v2, store)
    assert previous == v1 and line == f"{name}/{v2} is now the champion (previous: {name}/{v1})"
    assert aliases(store, name) == {"champion": v2, "previous": v1}  # no longer a challenger
    promotion.promote(client, name, v3, store)
    assert aliases(store, name) == {"champion": v3, "previous": v2}

    assert promotion.rollback(client, name, store)[:2] == (v2, v3)
    assert aliases(store, name) == {"champion": v2, "previous": v3}  # the rolled-back version keeps an alias
    assert client.get_registered_model(name).tags["mlops.last_rollback"] == f"champion {v3} -> {v2}"
    promotion.rollback(client, name, store)  # a second rollback undoes the first
    assert aliases(store, name) == {"champion": v3, "previous": v2}
    # `mlops status` says since when: the crowning, not the registration (MLflow keeps no alias time).
    champion = read_champion(name, store)
    assert champion.version == str(v3)
    assert client.get_registered_model(name).tags["mlops.champion_since"] == f"{v3}@{champion.since}"
    assert champion.since is not None and champion.registered is not None and champion.since >= champion.registered
    with pytest.raises(MlopsError, match=f"{name} has no version 9 in"):
        promotion.promote(client, name, 9, store)
    with pytest.raises(MlopsError, match="no registered model 'nobody' in"):
        promotion.rollback(client, "nobody", store)


def test_a_by_hand_command_never_creates_an_empty_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    with pytest.raises(MlopsError, match="no MLflow store at .*; pass --tracking-uri or set MLFLOW_TRACKING_URI"):
        promotion.open_registry(uri)
    assert not (tmp_path / "none").exists()
