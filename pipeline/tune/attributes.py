"""The names of the attributes a search keeps on its Optuna trials and study.

Several modules read what another wrote (the objective sets a trial's MLflow run id, the
crash recovery and the end of the search read it), so each name is written once, here.
User attributes are ours; the system attributes are Optuna's own.
"""

from __future__ import annotations

# A trial's user attributes (a retry inherits them: Optuna's retry callback copies them).
RUN_ID_ATTR = "mlflow_run_id"  # the trial's nested MLflow run; a retry re-opens it
INTERVAL_ATTR = "interval"  # [lower, upper] Wilson 95% interval of an accuracy
WORKER_ATTR = "worker"  # the process running it, as ``study.worker_id`` (host|PID namespace|PID)
INTERRUPTED_ATTR = "interrupted"  # stopped by Ctrl-C / SIGTERM: retried on the next run
REASON_ATTR = "fail_reason"  # why it failed: "ValueError: boom"
STAGED_TRIAL_ATTR = "staged"  # {"cap", "by", "seeded_from"?}: enqueued by a staged search (pipeline.tune.staged)
SEED_ATTR = "seed"  # the seed train() got; a warm-started trial takes its source trial's (study.trial_seed)
WARM_START_ATTR = "warm_start_from"  # the earlier study whose best parameters it tries (pipeline.tune.warm_start)
FIRST_TRIAL_ATTR = "first_trial"  # its index in tune.first_trials, whose parameters it takes (tune/first_trials.py)

# A trial's system attributes, set by Optuna's ``RetryHeartbeatStaleTrialCallback``.
FAILED_TRIAL_ATTR = "failed_trial"  # the first trial of a retry chain (whose checkpoint it resumes)
RETRY_HISTORY_ATTR = "retry_history"  # every trial of the chain before this one

# The study's user attributes.
PARENT_ATTR = "mlflow_parent_run_id"  # the search's one MLflow parent run
RESTARTS_ATTR = "restarts"  # how often a supervisor restarted the search
SEARCH_ATTR = "search"  # {"model", "goal", "max_trials"} of the latest run: what `mlops status --study` judges by
DATA_ATTR = "data_fingerprint"  # what prepare reported: later studies on the same data warm-start from this one
STAGED_ATTR = "staged"  # a staged search's stage: {"param", "cap", "since", "opened", "seeded"}
# On a marker study (``study.run_once``): who does the work, then its result.
RESULT_ATTR = "result"
