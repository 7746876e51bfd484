"""mlops: a CI-driven tuning pipeline for model code (detect, classify, build, tune, report)."""

__version__ = "0.1.0"
