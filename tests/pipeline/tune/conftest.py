"""Fixtures of the tune tests: one MLflow store for the in-process searches (``stub_search``)."""

from tests.pipeline.tune.stub_search import tracking_uri  # noqa: F401
