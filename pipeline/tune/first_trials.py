"""First trials: a new study first tries the parameters the model names in ``tune.first_trials``.

``model.yaml``::

    tune:
      first_trials: [{n_layers: 0, optimizer: adam, learning_rate: 0.003, batch_size: 128}]

A model's author often knows a point that works (the face model: a linear softmax on the
pooled features, 0.94-0.957 val_accuracy on LFW-62 in about a second, about where the
sampler's dense heads get after a dozen trials), as KerasTuner starts from its
hyperparameters' defaults. Before its first trial a new study
queues one trial per entry (``study.enqueue_trial``, partial parameters: the sampler draws
the keys an entry leaves out), after any warm-start trials (those are proven on these very
data). They are trials like any other: trained, scored, pruned or kept. A parameter held by
``params`` keeps its held value; in a staged search a missing staged parameter is its first
stage's value, so the trial stays in the cheap stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from pipeline.config.search_space import SearchSpace
from pipeline.tune.attributes import FIRST_TRIAL_ATTR, WARM_START_ATTR
from pipeline.tune.study import run_once


def queue_first_trials(
    study: optuna.Study,
    entries: Sequence[Mapping[str, Any]],
    space: SearchSpace,
    staged: tuple[str, int] | None,
    log: Callable[[str], None],
) -> int:
    """Queue ``entries`` for a study whose only trials are warm-start ones (once, however many workers).

    Args:
        study: the study.
        entries: ``tune.first_trials`` (checked against the space by ``check_first_trials``).
        space: the search space, with ``params``' held values (``SearchSpace.fixing``).
        staged: the staged search's parameter and first-stage value, or ``None``.
        log: prints one line.

    Returns:
        How many trials were queued.
    """
    if not entries:
        return 0

    def queue() -> int:
        if any(WARM_START_ATTR not in trial.user_attrs for trial in study.get_trials(deepcopy=False)):
            return 0  # a resumed study goes on from its own trials
        for index, entry in enumerate(entries):
            params = space.given_params(entry, f"setting first_trials[{index}]")
            if staged is not None and staged[0] in space.names():
                params.setdefault(staged[0], staged[1])
            study.enqueue_trial(params, user_attrs={FIRST_TRIAL_ATTR: index}, skip_if_exists=True)
        log(f"first trials: {len(entries)} queued from the setting first_trials, before the sampler draws")
        return len(entries)

    queued: int = run_once(study, "first-trials", queue)
    return queued
