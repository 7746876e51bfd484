"""`mlops tune`: placeholder until the stage lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `tune` command to the CLI."""

    @app.command("tune")
    def _placeholder() -> None:
        """Not implemented yet."""
        raise typer.Exit(2)
