"""A champion is compared only on test examples it never trained on (a real SQLite MLflow registry)."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import Ridge

from pipeline.config.settings import TuneSettings
from pipeline.sdk.contract import Evaluation, ExportedModel, StudyContext, load_plugin
from pipeline.summary import GoalSpec
from pipeline.tracking import unseen
from pipeline.tracking.promotion import gate, load_model, score
from pipeline.tracking.tracker import Tracker
from pipeline.tune.objective import Objective
from pipeline.tune.results import finish_study
from pipeline.tune.search_run import SearchRun
from pipeline.tune.study import open_study

ACCURACY = GoalSpec("val_accuracy", "maximize", 0.9)
DIABETES = Path(__file__).resolve().parents[3] / "models" / "diabetes_regression"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for this module (its schema takes seconds to create)."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


def register(store: str, name: str, seen: list[str] | None) -> tuple[int, str]:
    """A registered ridge whose run records ``seen`` as what it trained on: (version, run id)."""
    tracker = Tracker(store, name)
    run_id = tracker.parent_run(None, "fit", {})
    x = np.arange(12.0).reshape(6, 2)
    model_uri = tracker.log_model(run_id, ExportedModel("sklearn", Ridge().fit(x, x[:, 0]), x[:2], ["scikit-learn"]))
    if seen is not None:
        unseen.record(tracker.client, run_id, seen)
    return int(tracker.register(model_uri, run_id, name, {}).rpartition("/")[2]), run_id


def _unused(uri: str) -> Evaluation:
    raise AssertionError(f"{uri} was scored, but there was no champion to score")


def test_the_metric_is_recomputed_on_the_kept_examples_only() -> None:
    truth, predicted = np.array([0, 1, 1, 2]), np.array([0, 1, 0, 0])
    keep = np.array([True, True, False, True])
    assert unseen.metric_on("val_accuracy", truth, predicted, keep) == pytest.approx(2 / 3)
    values, guesses = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 1.0])
    every = np.ones(3, bool)
    assert unseen.metric_on("val_rmse", values, guesses, every) == pytest.approx(math.sqrt(10 / 3))
    assert unseen.metric_on("test_mae", values, guesses, every) == pytest.approx(4 / 3)
    assert unseen.metric_on("val_r2", values, guesses, every) == pytest.approx(1 - 10 / (14 / 3))
    assert unseen.metric_on("val_auc", truth, predicted, keep) is None  # not computable from labels
    assert unseen.metric_on("val_accuracy", truth, predicted, np.zeros(4, bool)) is None


def test_the_record_is_read_back_and_a_tampered_one_is_not_trusted(store: str) -> None:
    client = MlflowClient(tracking_uri=store)
    version, run_id = register(store, "record", ["b", "a", "b"])
    assert unseen.read(client, run_id) == (frozenset({"a", "b"}), "")
    artifact = Path(urlparse(client.get_run(run_id).info.artifact_uri).path) / unseen.SEEN_ARTIFACT
    artifact.write_text("a\n")  # a record that lost one identity
    found, why = unseen.read(client, run_id)
    assert found is None and "does not match its checksum" in why
    _, bare = register(store, "record", None)
    assert unseen.read(client, bare)[0] is None and "no record" in unseen.read(client, bare)[1]
    assert unseen.read(client, "0" * 32) == (None, f"its run {'0' * 32} cannot be read (MlflowException)")


def _evaluation(truth: np.ndarray, predicted: np.ndarray, ids: list[str]) -> Evaluation:
    return Evaluation(float(np.mean(truth == predicted)), len(truth), truth, predicted, None, ids)


def test_a_champion_is_scored_only_on_the_test_examples_it_never_trained_on(store: str) -> None:
    """It trained on half this test split, where it is perfect; on the other half the challenger is better."""
    name, client = "unseen-gate", MlflowClient(tracking_uri=store)
    ids = [f"e{i}" for i in range(40)]
    truth = np.arange(40) % 4
    v1, _ = register(store, name, ids[:20] + ["elsewhere"])
    v2, _ = register(store, name, None)
    gate(client, name, v1, score(ACCURACY, 0.9, 40), ACCURACY, fingerprint="split-1", margin=0.0, rescore=_unused)
    champion_guess = truth.copy()
    champion_guess[20:32] = (truth[20:32] + 1) % 4  # right on 8 of the 20 examples it never saw
    challenger_guess = truth.copy()
    challenger_guess[:12] = (truth[:12] + 1) % 4  # wrong only where the champion trained
    mine = _evaluation(truth, challenger_guess, ids)

    decision = gate(
        client, name, v2, score(ACCURACY, mine.value, 40), ACCURACY,
        fingerprint="split-2", margin=0.0, evaluation=mine,
        rescore=lambda uri: _evaluation(truth, champion_guess, ids),
    )  # fmt: skip
    # Over the whole split both get 28 of 40 (0.7): a tie keeps the champion. On the 20 it never saw: 0.4 vs 1.0.
    assert decision.champion_scored == "unseen" and decision.compared_n == 20
    assert (decision.champion_value, decision.challenger_compared) == (pytest.approx(0.4), pytest.approx(1.0))
    assert decision.challenger_value == pytest.approx(0.7)  # its score on the whole split, as recorded
    assert decision.verdict == "promoted"
    assert "both scored now on 20 of 40 test examples: it trained on the rest" in decision.reason


def test_a_champion_that_trained_on_the_whole_test_split_cannot_be_compared(store: str) -> None:
    name, client = "seen-all", MlflowClient(tracking_uri=store)
    ids = [f"e{i}" for i in range(10)]
    v1, _ = register(store, name, ids)
    v2, _ = register(store, name, None)
    gate(client, name, v1, score(ACCURACY, 0.9, 10), ACCURACY, fingerprint="a", margin=0.0, rescore=_unused)
    truth = np.zeros(10, int)
    mine = _evaluation(truth, truth, ids)
    decision = gate(
        client, name, v2, score(ACCURACY, 1.0, 10), ACCURACY,
        fingerprint="b", margin=0.0, evaluation=mine, rescore=_unused,  # not even scored: nothing to compare on
    )  # fmt: skip
    assert (decision.verdict, decision.champion_scored, decision.champion_value) == ("kept", "unscored", None)
    assert "it trained on every example of this test split" in decision.reason


def _diabetes_search(tmp_path: Path, store: str, seed: int) -> tuple[SearchRun, object]:
    """A real diabetes search with study seed ``seed`` (one ridge trial, the goal met): its run and summary."""
    tmp_path.mkdir()
    plugin = load_plugin(DIABETES)
    manifest = plugin.manifest
    context = StudyContext(manifest, dict(manifest.data), dict(manifest.params), seed, tmp_path, log=lambda _: None)
    prepared = plugin.prepare(context)
    settings = TuneSettings(storage=f"sqlite:///{tmp_path / 'optuna.db'}", runs_dir=tmp_path / "runs", seed=seed)
    study, _ = open_study(f"seed-{seed}", "minimize", settings)
    tracker = Tracker(store, "diabetes-unseen")
    parent_id = tracker.parent_run(None, f"seed-{seed}", {})
    tags = {"git_commit": "abc", "data_fingerprint": str(context.facts["data_fingerprint"])}
    run_dir = tmp_path / "runs" / "diabetes"
    goal = GoalSpec("val_rmse", "minimize", 1000.0)
    run = SearchRun(plugin, prepared, goal, tracker, parent_id, run_dir, run_dir / f"s{seed}", tags, settings)
    study.enqueue_trial({"estimator": "ridge", "alpha": 1.0 if seed == 1 else 100.0})
    study.optimize(Objective(run), n_trials=1)
    return run, finish_study(study, run, Objective(run))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_seeds_on_the_same_data_compare_on_the_unseen_part(tmp_path: Path, store: str) -> None:
    """The diabetes model, seeds 1 then 2: the seed-1 champion is scored on seed 2's test patients it never saw."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first_run, first = _diabetes_search(tmp_path / "one", store, 1)
    second_run, second = _diabetes_search(tmp_path / "two", store, 2)
    assert first.promotion.verdict == "first"  # type: ignore[attr-defined]
    decision = second.promotion  # type: ignore[attr-defined]
    seen = set(first_run.data.ids["train"]) | set(first_run.data.ids["val"])
    test_ids = second_run.data.ids["test"]
    never = np.array([example not in seen for example in test_ids])
    assert decision.champion_scored == "unseen" and decision.compared_n == int(never.sum())
    assert 0 < decision.compared_n < len(test_ids)  # part of seed 2's test split trained the champion
    registered = load_model(f"models:/diabetes_regression/{decision.champion_version}")
    truth = second_run.data.targets["test"][never]
    expected = float(np.sqrt(np.mean((registered.predict(second_run.data.features["test"][never]) - truth) ** 2)))
    assert decision.champion_value == pytest.approx(expected)
