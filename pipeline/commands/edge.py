"""What ``pipeline.cli.main`` sets up for every command: the environment snapshot.

``main`` reads the process environment once (``Environment.from_os()``) and passes it as
click's context object; a command asks ``environment(ctx)`` for it and hands it down. When
the app is invoked without ``main`` (typer's test runner), the snapshot is taken here, still
at the edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pipeline.config.environment import Environment

if TYPE_CHECKING:
    from pipeline.config.manifest import ModelManifest
    from pipeline.config.settings import TuneSettings


def environment(ctx: typer.Context) -> Environment:
    """The environment snapshot ``main`` took, or one taken now when the app ran without it."""
    found = ctx.find_object(Environment)
    return found if found is not None else Environment.from_os()


def model_settings(env: Environment, model_dir: Path, flags: dict[str, Any]) -> tuple[ModelManifest, TuneSettings]:
    """MODEL_DIR's manifest and its run settings: flags over ``MLOPS_*`` over ``mlops.yaml`` over ``model.yaml``."""
    from pipeline.config.manifest import load_manifest
    from pipeline.config.settings import find_repo_config, read_repo_config, resolve_settings

    manifest = load_manifest(model_dir)
    config_path = find_repo_config(model_dir, env.config_path)
    settings = resolve_settings(
        manifest.tune, read_repo_config(config_path), flags, config_path, environ=env, manifest_path=manifest.path
    )
    return manifest, settings
