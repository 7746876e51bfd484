"""``mlops predict MODEL IMAGE_OR_FOLDER...``: ask a registered model who is in each photo.

MODEL is a registered model's name (its champion answers: ``models:/NAME@champion``) or any
MLflow model URI (``models:/NAME/3``, ``models:/NAME@previous``, ``runs:/ID/model``, a model
folder). The photos are sent as the served model receives them (base64 image files in an
``image`` column), so this answers exactly what ``mlflow models serve`` would. The tracking URI
resolves as for ``mlops promote``.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.errors import MlopsError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_BATCH = 64  # photos per predict call: a large folder must not be decoded all at once


def model_uri(model: str) -> str:
    """A registered model's name means its champion; a URI or a folder is used as it is."""
    if ":/" in model or Path(model).exists():
        return model
    return f"models:/{model}@champion"


def image_files(paths: list[Path]) -> list[Path]:
    """The photos named: files as given, folders' images (by suffix, sorted, not recursive).

    Raises:
        MlopsError: a path that does not exist, or a folder without images.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise MlopsError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise MlopsError(f"{path}: no such image or folder; pass image files or folders of them")
    return found


def check_threshold(threshold: float | None) -> None:
    """Refuse a threshold that is not a probability (one line, exit 2)."""
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise MlopsError(f"--threshold {threshold} is outside [0, 1]; pass a probability such as 0.5")


def load(uri: str, tracking_uri: str) -> Any:
    """The model as MLflow's pyfunc, from the registry or run store at ``tracking_uri``.

    Raises:
        MlopsError: when the store is missing or the model (name, alias, version, run) is not in it.
    """
    import mlflow

    if uri.startswith(("models:/", "runs:/")):
        from pipeline.tracking.promotion import open_registry

        open_registry(tracking_uri)  # a missing store or a closed port: one line, not MLflow's retries
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise MlopsError(
            f"model {uri} not found in {tracking_uri} ({reason}); check the name, alias or version "
            "(mlops status) and --tracking-uri"
        ) from None


def predict(model: Any, files: list[Path], threshold: float | None) -> list[dict[str, Any]]:
    """One answer per photo: image, name (``unknown`` below the threshold), probability, top_k, face.

    Raises:
        MlopsError: a file that is not a readable image.
    """
    import pandas as pd
    from PIL import Image, UnidentifiedImageError

    answers: list[dict[str, Any]] = []
    for start in range(0, len(files), _BATCH):
        batch = files[start : start + _BATCH]
        encoded = []
        for path in batch:
            try:
                with Image.open(path) as picture:
                    picture.verify()
            except (UnidentifiedImageError, OSError) as error:
                raise MlopsError(f"{path}: not a readable image ({error}); pass JPEG or PNG photos") from None
            encoded.append(base64.b64encode(path.read_bytes()).decode("ascii"))
        params = {"threshold": threshold} if threshold is not None else None
        frame = model.predict(pd.DataFrame({"image": encoded}), params=params)
        for path, row in zip(batch, frame.to_dict("records"), strict=True):
            answers.append(
                {
                    "image": str(path),
                    "name": str(row["name"]),
                    "probability": float(row["probability"]),
                    "top_k": json.loads(row["top_k"]),
                    # A model that aligns faces says whether it found one (older ones have no column).
                    "face": str(row.get("face", "whole photo")),
                }
            )
    return answers


def line(answer: dict[str, Any]) -> str:
    """``photo.jpg: Ada Lovelace 0.934``; an unknown face shows the best guess it was not sure of."""
    if answer.get("face") == "not found":
        return f"{answer['image']}: unknown (no face found)"
    if answer["name"] == "unknown" and answer["top_k"]:
        guess = answer["top_k"][0]["name"]
        return f"{answer['image']}: unknown (best guess {guess}, {answer['probability']:.3f})"
    return f"{answer['image']}: {answer['name']} {answer['probability']:.3f}"


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command to the CLI."""

    @app.command("predict")
    def predict_command(
        ctx: typer.Context,
        model: Annotated[
            str,
            typer.Argument(
                help="A registered model's name (its champion answers) or a model URI: models:/NAME/3, runs:/ID/model."
            ),
        ],
        images: Annotated[list[Path], typer.Argument(help="Photos (JPEG, PNG, ...) or folders of them.")],
        threshold: Annotated[
            float | None,
            typer.Option(help="Below this probability the answer is 'unknown'; default: the model's own (0.5)."),
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object: the model URI and one answer per photo.")
        ] = False,
        tracking_uri: Annotated[
            str | None,
            typer.Option(help="MLflow tracking URI; default: as mlops tune ($MLFLOW_TRACKING_URI, mlops.yaml, ...)."),
        ] = None,
    ) -> None:
        """Name the person in each photo with MODEL (default alias champion); 'unknown' when unsure."""
        from pipeline.commands.promote import _tracking_uri

        check_threshold(threshold)
        files = image_files(images)
        uri = model_uri(model)
        answers = predict(load(uri, _tracking_uri(ctx, tracking_uri)), files, threshold)
        if as_json:
            typer.echo(json.dumps({"model": uri, "threshold": threshold, "predictions": answers}, indent=2))
            return
        for answer in answers:
            typer.echo(line(answer))
