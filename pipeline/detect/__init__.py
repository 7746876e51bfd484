"""Detect: which model folders a push touched (GitPython) and what kind each is (its syntax tree)."""

from pipeline.detect.changes import ChangeSet, changed_models, is_first_push
from pipeline.detect.classify import Classification, Evidence, classify_model

__all__ = ["ChangeSet", "Classification", "Evidence", "changed_models", "classify_model", "is_first_push"]
