"""`mlops detect`: the model folders a push added, changed or deleted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.detect.changes import changed_models


def register(app: typer.Typer) -> None:
    """Add the `detect` command to the CLI."""

    @app.command("detect")
    def detect(
        before: Annotated[
            str | None,
            typer.Option(
                help="Commit before the push; omit it or pass the all-zero SHA for a first "
                "push (every model counts as changed).",
            ),
        ] = None,
        after: Annotated[str, typer.Option(help="Commit after the push.")] = "HEAD",
        repo: Annotated[Path, typer.Option(help="The Git repository.")] = Path("."),
        models_dir: Annotated[
            str,
            typer.Option(help="Folder, relative to the repository root, with one folder per model."),
        ] = "models",
        as_json: Annotated[
            bool,
            typer.Option("--json", help='Print {"changed", "deleted", "before", "after"} as JSON.'),
        ] = False,
    ) -> None:
        """List the model folders the commit range changed, one per line.

        Deleted model folders are not to be tuned: they go to stderr (or under "deleted"
        with --json), so `for m in $(mlops detect ...)` sees only what to tune.
        """
        changes = changed_models(repo, before, after, models_dir)
        if as_json:
            typer.echo(json.dumps(changes.to_dict(), indent=2))
            return
        for folder in changes.changed:
            typer.echo(folder)
        for folder in changes.deleted:
            typer.echo(f"deleted: {folder}", err=True)
