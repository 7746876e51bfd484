"""Tracking: MLflow runs (a parent per search, a nested run per trial), plots, the commit a run came from."""

from pipeline.tracking.tracker import Tracker
from pipeline.tracking.versioning import git_commit

__all__ = ["Tracker", "git_commit"]
