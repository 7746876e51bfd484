"""Config: a model's ``model.yaml``, its search space, and the run settings, checked before any work."""

from pipeline.config.manifest import ModelManifest, load_manifest, parse_manifest
from pipeline.config.search_space import Param, SearchSpace
from pipeline.config.settings import TuneSettings, resolve_settings

__all__ = [
    "ModelManifest",
    "Param",
    "SearchSpace",
    "TuneSettings",
    "load_manifest",
    "parse_manifest",
    "resolve_settings",
]
