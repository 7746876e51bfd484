"""`mlops run`: placeholder until the stage lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `run` command to the CLI."""

    @app.command("run")
    def _placeholder() -> None:
        """Not implemented yet."""
        raise typer.Exit(2)
