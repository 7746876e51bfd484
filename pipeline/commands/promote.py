"""``mlops promote MODEL VERSION`` and ``mlops rollback MODEL``: move the registry's aliases by hand.

The tracking URI comes from where ``mlops tune`` reads it: ``--tracking-uri``, then
``$MLOPS_TRACKING_URI`` / ``$MLFLOW_TRACKING_URI``, then ``mlops.yaml``'s ``tune.tracking_uri``,
then ``sqlite:///mlruns/mlflow.db``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands.edge import environment

_URI_HELP = (
    "MLflow tracking URI; default: as mlops tune ($MLFLOW_TRACKING_URI, mlops.yaml, sqlite:///mlruns/mlflow.db)."
)


def _tracking_uri(ctx: typer.Context, flag: str | None) -> str:
    """The tracking URI ``mlops tune`` would use from this folder."""
    from pipeline.config.settings import find_repo_config, read_repo_config, resolve_settings

    env = environment(ctx)
    config_path = find_repo_config(Path("."), env.config_path)
    settings = resolve_settings({}, read_repo_config(config_path), {"tracking_uri": flag}, config_path, environ=env)
    return settings.tracking


def register(app: typer.Typer) -> None:
    """Add the ``promote`` and ``rollback`` commands to the CLI."""

    @app.command("promote")
    def promote_command(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="The registered model's name (model.yaml name:).")],
        version: Annotated[int, typer.Argument(help="The version to make champion.")],
        tracking_uri: Annotated[str | None, typer.Option(help=_URI_HELP)] = None,
    ) -> None:
        """Make VERSION the champion of MODEL; the champion it replaces keeps alias previous."""
        from pipeline.tracking import promotion

        uri = _tracking_uri(ctx, tracking_uri)
        _, line = promotion.promote(promotion.open_registry(uri), model, version, uri)
        typer.echo(line)

    @app.command("rollback")
    def rollback_command(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="The registered model's name (model.yaml name:).")],
        tracking_uri: Annotated[str | None, typer.Option(help=_URI_HELP)] = None,
    ) -> None:
        """Swap MODEL's champion and previous: the previous version serves again (twice: undone)."""
        from pipeline.tracking import promotion

        uri = _tracking_uri(ctx, tracking_uri)
        *_, line = promotion.rollback(promotion.open_registry(uri), model, uri)
        typer.echo(line)
