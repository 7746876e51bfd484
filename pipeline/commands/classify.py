"""`mlops classify`: a model folder's kind and framework, with the evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.detect.classify import classify_model


def register(app: typer.Typer) -> None:
    """Add the `classify` command to the CLI."""

    @app.command("classify")
    def classify(
        model_dir: Annotated[Path, typer.Argument(help="The model folder, e.g. models/face_vgg16.")],
        as_json: Annotated[
            bool,
            typer.Option("--json", help='Print {"kind", "framework", "source", "evidence"} as JSON.'),
        ] = False,
    ) -> None:
        """Print the model's kind (cnn, ann, regression) and framework, read from its code."""
        result = classify_model(model_dir)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        origin = " [set by model.yaml]" if result.source == "model.yaml" else ""
        typer.echo(f"{result.kind} ({result.framework or 'framework unknown'}){origin}")
        for item in result.evidence:
            typer.echo(f"  {item.where()}: {item.symbol} -> {item.kind}")
