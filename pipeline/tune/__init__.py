"""Tune: the Optuna search that stops at the goal, its study, trials and the end of a search.

Imported lazily by the CLI: it brings in Optuna and MLflow.
"""

from pipeline.tune.search import study_name_for, tune

__all__ = ["study_name_for", "tune"]
