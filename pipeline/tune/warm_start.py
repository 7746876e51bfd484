"""Warm start: a new study on data an earlier study searched starts from that study's best trial.

A changed search space, seed or option is a new study (``study_name_for``), but on the same
data the earlier best parameters are the best first guess there is. Before its first trial a
fresh study queues (``study.enqueue_trial``) the best trial of each of the latest
``WARM_STARTS`` studies of the same model, metric and direction whose data fingerprint
(``data_fingerprint``, what ``prepare`` reports) is the same, when those parameters lie in
this study's space. They are trials like any other: trained, scored, pruned or kept; the
search goes on from there. ``--no-warm-start`` (setting ``warm_start``) turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from pipeline.config.search_space import SearchSpace
from pipeline.tune.attributes import DATA_ATTR, SEARCH_ATTR, SEED_ATTR, WARM_START_ATTR
from pipeline.tune.study import run_once, storage_of

WARM_STARTS = 3  # earlier studies whose best trial a fresh study tries first


def record_data(study: optuna.Study, fingerprint: str) -> None:
    """Note the data this study searches, so that later studies on it can start from its best."""
    if fingerprint and study.user_attrs.get(DATA_ATTR) != fingerprint:
        study.set_user_attr(DATA_ATTR, fingerprint)


def warm_start(
    study: optuna.Study, model: str, metric: str, space: SearchSpace, log: Callable[[str], None]
) -> list[str]:
    """Queue the earlier best trials for a study that has none yet (once, however many workers).

    Returns:
        The names of the studies whose best trial was queued.
    """
    fingerprint = str(study.user_attrs.get(DATA_ATTR, ""))
    if not fingerprint:
        return []

    def queue() -> list[str]:
        if study.get_trials(deepcopy=False):
            return []  # a resumed study goes on from its own trials
        sources = earlier_best(study, model, metric, fingerprint, space)
        for name, params, seed in sources:
            attrs = {WARM_START_ATTR: name, **({SEED_ATTR: seed} if seed is not None else {})}
            study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
        if sources:
            log(
                f"warm start: the first {len(sources)} trial(s) try the best parameters of earlier studies on "
                f"the same data ({', '.join(name for name, _, _ in sources)}); --no-warm-start searches from scratch"
            )
        return [name for name, _, _ in sources]

    names: list[str] = run_once(study, "warm-start", queue)  # later runs and other workers: its record
    return names


def earlier_best(
    study: optuna.Study, model: str, metric: str, fingerprint: str, space: SearchSpace
) -> list[tuple[str, dict[str, Any], int | None]]:
    """The best trial of each latest study of ``model`` and ``metric`` on ``fingerprint``'s data, newest
    first: its study, its parameters as this study's space names them (a best outside the space is
    passed over) and the seed it trained with (``None`` when that study did not record it).
    """
    found = []
    for summary in optuna.get_all_study_summaries(storage_of(study), include_best_trial=True):
        attrs = summary.user_attrs
        search = attrs.get(SEARCH_ATTR)
        best = summary.best_trial
        if (
            summary.study_name == study.study_name
            or not isinstance(search, dict)
            or search.get("model") != model
            or (search.get("goal") or {}).get("metric") != metric
            or attrs.get(DATA_ATTR) != fingerprint
            or summary.direction != study.direction
            or best is None
        ):
            continue
        params = space.optuna_params(best.params)
        if params is not None:
            seed = best.user_attrs.get(SEED_ATTR)
            found.append((summary.datetime_start, summary.study_name, params, seed if isinstance(seed, int) else None))
    found.sort(key=lambda row: (row[0] is not None, row[0]), reverse=True)
    unique: list[tuple[str, dict[str, Any], int | None]] = []
    for _, name, params, seed in found:
        if params not in [p for _, p, _ in unique]:
            unique.append((name, params, seed))
    return unique[:WARM_STARTS]
