"""A staged (cost-aware) search: cheap values of one int parameter first, dear ones when the cheap stall.

``model.yaml``::

    search_space:
      fine_tune_blocks: {type: int, low: 0, high: 2}   # 0: a head on cached features (cheap)
    tune:
      staged: {param: fine_tune_blocks, stall_trials: 6}

The parameter's *cap* starts at its ``low``. Every trial runs with the parameter fixed to a
value in ``[low, cap]`` (the cap itself while it is ``low``; else drawn uniformly, seeded from
the study's seed and its trial count, so a rerun draws the same); the sampler draws the rest.
When ``stall_trials`` complete or pruned trials of the current stage in a row have not beaten the
study's best value, the cap rises by one step and the next trial is the best trial's
parameters with the parameter at the new cap (the best cheap head, now fine-tuned), and with
``seed_with``'s values in place of parameters the cheap stage drew but never used. Once the
cap reaches ``high`` the sampler draws the parameter like any other.

How: before each trial a WAITING trial is enqueued with only this parameter fixed
(``study.enqueue_trial``, partial parameters); ``suggest_int`` keeps the full range as the
parameter's distribution in every trial, so TPE sees one consistent history. The stage lives
in the study's user attributes, so a resumed study or a second worker on the same storage
continues it; a stage is opened (and its seeded trial enqueued) once however many workers see
the stall (``run_once``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from pipeline.config.search_space import SearchSpace
from pipeline.config.settings import StagedSpec, TuneSettings
from pipeline.summary import GoalSpec
from pipeline.tune.attributes import FIRST_TRIAL_ATTR, STAGED_ATTR, STAGED_TRIAL_ATTR, WARM_START_ATTR
from pipeline.tune.study import _gone, finished, goal_met_trials, run_once, worker_id

# Trials whose time counts in the summary's time by value: every trial that ran to an end.
_ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StagedSearch:
    """The Optuna callback (and first-trial primer) of a staged search.

    Args:
        spec: the ``tune.staged`` setting (checked against the space by ``check_staged``).
        space: the model's search space.
        seed: the study's seed (``settings.seed``).
        log: where the line announcing a new stage goes.
        stopping: whether the study is about to stop (budget spent, goal met): then no
            trial is enqueued, so none is left WAITING behind a finished search.
    """

    def __init__(
        self,
        spec: StagedSpec,
        space: SearchSpace,
        seed: int,
        log: Callable[[str], None] = print,
        stopping: Callable[[optuna.Study], bool] = lambda study: False,
    ) -> None:
        param = next(p for p in space.params if p.name == spec.param)
        self.param, self.stall_trials, self.seed = spec.param, spec.stall_trials, seed
        self.seed_with = dict(spec.seed_with)
        self.low, self.high = int(param.low or 0), int(param.high or 0)
        self.step = int(param.step or 1)
        self.log, self.stopping = log, stopping

    def state(self, study: optuna.Study) -> dict[str, Any]:
        """The study's stage: ``cap``, ``since`` (the first trial staged), ``opened`` and ``seeded`` by cap."""
        saved = study.user_attrs.get(STAGED_ATTR)
        if isinstance(saved, dict) and saved.get("param") == self.param:
            return saved
        return {"param": self.param, "cap": self.low, "since": 0, "opened": {}, "seeded": {}}

    def prime(self, study: optuna.Study) -> None:
        """Before this worker's first trial: record the stage (first run only) and queue the first trial.

        A resumed study keeps its stage. A trial already WAITING with the parameter fixed
        by a process that is gone (the run before this one) is this worker's first trial;
        one queued by a live worker is that worker's, so this worker queues its own. Warm-start
        and first trials still WAITING go first, and queue none.
        """
        saved = study.user_attrs.get(STAGED_ATTR)
        if not isinstance(saved, dict) or saved.get("param") != self.param:
            study.set_user_attr(STAGED_ATTR, {**self.state(study), "since": len(study.get_trials(deepcopy=False))})
            self.log(
                f"staged: {self.param} <= {self.low} until {self.stall_trials} finished trials in a row "
                f"(complete or pruned) bring no new best; then up to {self.high} step by step"
            )
        if self.stopping(study) or self._open_if_stalled(study) or _queued_ahead(study):
            return
        for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if self.param in trial.system_attrs.get("fixed_params", {}) and _gone(
                str(trial.user_attrs.get(STAGED_TRIAL_ATTR, {}).get("by", ""))
            ):
                return
        self._enqueue_next(study)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Called by Optuna after each of this worker's trials: queue its next trial, maybe opening a stage."""
        if self.stopping(study) or self._open_if_stalled(study) or _queued_ahead(study):
            return
        self._enqueue_next(study)

    def _enqueue_next(self, study: optuna.Study) -> None:
        """Queue one trial with the parameter fixed within the current cap (none once the cap is ``high``)."""
        cap = int(self.state(study)["cap"])
        if cap >= self.high:
            return  # the last stage: the sampler draws it
        value = cap
        if cap > self.low:
            count = len(study.get_trials(deepcopy=False))
            steps = (cap - self.low) // self.step
            value = self.low + self.step * int(np.random.default_rng([self.seed, count]).integers(0, steps + 1))
        study.enqueue_trial({self.param: value}, user_attrs={STAGED_TRIAL_ATTR: {"cap": cap, "by": worker_id()}})

    def _open_if_stalled(self, study: optuna.Study) -> bool:
        """Open the next stage when the current one stalled; whether this call queued the next trial."""
        state = self.state(study)
        cap = int(state["cap"])
        if cap >= self.high:
            return False
        start = int(state["opened"].get(str(cap), state["since"]))
        best, stalled = _stall(study, start)
        if best is None or stalled < self.stall_trials:
            return False
        new_cap = min(cap + self.step, self.high)
        opened_here: list[int] = []

        def open_stage() -> int:
            params = {**best.params, **self.seed_with, self.param: new_cap}
            study.enqueue_trial(
                params,
                user_attrs={STAGED_TRIAL_ATTR: {"cap": new_cap, "by": worker_id(), "seeded_from": best.number}},
            )
            number = _seeded_number(study, new_cap, best.number)
            fresh = {
                **state,
                "cap": new_cap,
                "opened": {**state["opened"], str(new_cap): number},
                "seeded": {**state["seeded"], str(new_cap): best.number},
            }
            study.set_user_attr(STAGED_ATTR, fresh)
            opened_here.append(number)
            return number

        number = int(run_once(study, f"staged-{self.param}-{new_cap}", open_stage))
        if not opened_here:
            return False  # another worker opened it: this worker queues its own next trial, under the new cap
        self.log(
            f"staged: {self.param} <= {new_cap} from trial {number} "
            f"(best {best.value:.4g} unchanged for {stalled} trials); trial {number} seeded from trial {best.number}"
        )
        return True

    def summary(self, study: optuna.Study) -> dict[str, Any]:
        """Where the time went, by the parameter's value: for ``TuneSummary.staged``.

        Returns:
            ``{"param", "seconds": {value: s}, "trials": {value: n}, "opened": {cap: first trial}}``
            over trials that ran to an end (complete, pruned or failed).
        """
        seconds: dict[str, float] = {}
        trials: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False, states=_ENDED):
            if self.param not in trial.params or trial.datetime_start is None or trial.datetime_complete is None:
                continue
            key = str(int(trial.params[self.param]))
            elapsed = (trial.datetime_complete - trial.datetime_start).total_seconds()
            seconds[key] = round(seconds.get(key, 0.0) + elapsed, 3)
            trials[key] = trials.get(key, 0) + 1
        order = sorted(seconds, key=int)
        opened = self.state(study)["opened"]
        return {
            "param": self.param,
            "seconds": {key: seconds[key] for key in order},
            "trials": {key: trials[key] for key in order},
            "opened": {key: int(opened[key]) for key in sorted(opened, key=int)},
        }


def staged_search(
    settings: TuneSettings, space: SearchSpace, goal: GoalSpec, log: Callable[[str], None]
) -> StagedSearch | None:
    """The search's ``StagedSearch`` when ``tune.staged`` is set, else ``None``.

    It queues no trial once the study stops: ``max_trials`` finished, or the goal met.
    """
    if settings.staged is None:
        return None
    if settings.staged.param in space.fixed_names():
        log(f"staged: off, {settings.staged.param} is fixed by params (one flat search)")
        return None

    def stopping(study: optuna.Study) -> bool:
        return len(finished(study)) >= settings.max_trials or bool(goal_met_trials(study, goal))

    return StagedSearch(settings.staged, space, settings.seed, log, stopping)


def _stall(study: optuna.Study, start: int) -> tuple[FrozenTrial | None, int]:
    """The study's best complete trial (the first to reach its value), and the complete or pruned
    trials of the current stage (number ``>= start``) after it: none beat it.

    A pruned trial counts: the pruner stopped it for doing worse than its peers, so it brought
    nothing better; under a median pruner most cheap trials end that way.
    """
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sorted((t for t in ended if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    maximize = study.direction == StudyDirection.MAXIMIZE
    best: FrozenTrial | None = None
    best_value = 0.0
    for trial in complete:
        value = trial.value
        if value is not None and (best is None or (value > best_value if maximize else value < best_value)):
            best, best_value = trial, value
    if best is None:
        return None, 0
    return best, sum(1 for t in ended if t.number > best.number and t.number >= start)


def _seeded_number(study: optuna.Study, cap: int, source: int) -> int:
    """The number of the WAITING trial just seeded from trial ``source`` for ``cap``."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        attrs = trial.user_attrs.get(STAGED_TRIAL_ATTR, {})
        if attrs.get("cap") == cap and attrs.get("seeded_from") == source:
            return trial.number
    return -1  # never: the caller has just queued it


def _queued_ahead(study: optuna.Study) -> bool:
    """Whether warm-start or first trials still wait: they run first (warm_start.py, first_trials.py),
    and the staged trial is queued when the last of them ends, so none is left waiting behind a stop."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return any(WARM_START_ATTR in t.user_attrs or FIRST_TRIAL_ATTR in t.user_attrs for t in waiting)
