"""How a study draws parameters: a seed per trial number, and no finished point drawn twice.

One ``TPESampler(seed=s)`` per process drew the same sequence in every process, so a resumed
study replayed its first trials and parallel workers drew the same points. Here each trial
gets its own seed from (study seed, trial number), and a trial that still lands on a
finished trial's parameters is pruned untrained (``duplicate_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

# Trials that count against the budget and whose parameters are never drawn again.
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number`` of a study seeded ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """A sampler re-seeded for every trial from (study seed, trial number).

    One ``TPESampler(seed=s)`` per process draws the same sequence in every process: a
    resumed study replays its first trials and parallel workers draw the same points. Trial
    numbers are handed out by the storage, unique across restarts and workers, and each one
    already counts the trials before it; so trial ``n`` gets a fresh inner sampler seeded
    ``trial_seed(seed, n)`` that sees the whole history. A fresh study with the same seed
    still draws the same first trials, and a study's trial ``n`` gets the same draw again
    given the same history.

    Args:
        seed: the study's seed.
        make: builds the inner sampler for a seed.
    """

    def __init__(self, seed: int, make: Callable[[int], BaseSampler]) -> None:
        self.seed, self._make = seed, make
        self._inner = make(trial_seed(seed, 0))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna calls this as a trial starts: a new inner sampler for its number."""
        self._inner = self._make(trial_seed(self.seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """Delegated to the inner sampler."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Delegated to the inner sampler."""
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """Delegated to the inner sampler."""
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        """Delegated to the inner sampler."""
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial is seeded from its number."""


def duplicate_of(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of a finished trial with exactly ``trial``'s parameters, if there is one.

    The sampler hardly ever draws the same point twice, but a small discrete space can make
    it; retraining it would be a replayed trial. (Optuna's FAQ: prune such a trial.)
    """
    params = trial.params
    for other in study.get_trials(deepcopy=False, states=FINISHED_STATES):
        if other.number != trial.number and other.params == params:
            return other.number
    return None
