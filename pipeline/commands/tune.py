"""``mlops tune MODEL_DIR``: search hyperparameters until the goal is met (or the budget is spent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.commands.edge import environment, model_settings
from pipeline.errors import ExitCode


def register(app: typer.Typer) -> None:
    """Add the ``tune`` command to the CLI."""

    @app.command("tune")
    def tune_command(
        ctx: typer.Context,
        model_dir: Annotated[Path, typer.Argument(help="The model folder (holds model.yaml), e.g. models/face_vgg16.")],
        goal: Annotated[
            float | None, typer.Option(help="Goal for the model's metric; default: model.yaml goal.target.")
        ] = None,
        goal_confidence: Annotated[
            bool | None,
            typer.Option(
                "--goal-confidence/--no-goal-confidence",
                help="Count the goal as met only when the Wilson 95% lower bound of the "
                "validation accuracy reaches it.",
            ),
        ] = None,
        max_trials: Annotated[
            int | None, typer.Option(help="Finished (complete or pruned) trials before giving up.")
        ] = None,
        timeout: Annotated[float | None, typer.Option(help="Seconds this run may search before giving up.")] = None,
        study_name: Annotated[
            str | None, typer.Option(help="Optuna study name; default: model name + config hash.")
        ] = None,
        storage: Annotated[
            str | None, typer.Option(help="Optuna storage URL; default: sqlite:///mlops-runs/optuna.db.")
        ] = None,
        tracking_uri: Annotated[
            str | None,
            typer.Option(help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db."),
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for the split, the sampler and every trial.")] = None,
        weights: Annotated[
            str | None, typer.Option(help="VGG16 weights: imagenet, none, or a path to a .h5 file.")
        ] = None,
        pruner: Annotated[
            str | None, typer.Option(help="median, percentile, hyperband, successive_halving or none.")
        ] = None,
        runs_dir: Annotated[
            Path | None, typer.Option(help="Where checkpoints, plots and summary.json go; default mlops-runs.")
        ] = None,
        cache_dir: Annotated[
            Path | None, typer.Option(help="Feature cache folder; default ~/.cache/mlops/features.")
        ] = None,
        register_model: Annotated[
            bool | None, typer.Option("--register/--no-register", help="Register the best model when the goal is met.")
        ] = None,
        warm_start: Annotated[
            bool | None,
            typer.Option(
                "--warm-start/--no-warm-start",
                help="A new study first tries the best parameters of earlier studies on the same data (default on).",
            ),
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override a model.yaml option: data.source=lfw, data.input_size=96."),
        ] = None,
        promote_margin: Annotated[
            float | None,
            typer.Option(
                help="How much better on the test split (goal metric units) the new model must be "
                "to replace the champion; default 0 (strictly better)."
            ),
        ] = None,
        force_promote: Annotated[
            bool | None,
            typer.Option(
                "--force-promote",
                help="Make the new model champion without comparing it (the old one stays as previous).",
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                help="Processes searching the study at once on this machine (default: model.yaml tune.workers, else 1)."
            ),
        ] = None,
    ) -> None:
        """Search MODEL_DIR's hyperparameters with Optuna until the goal is met; exit 0 if met, 3 if not."""
        from pipeline.config.preflight import check_run

        flags: dict[str, Any] = {
            "goal": goal,
            "goal_confidence": goal_confidence,
            "max_trials": max_trials,
            "timeout": timeout,
            "study_name": study_name,
            "storage": storage,
            "tracking_uri": tracking_uri,
            "seed": seed,
            "weights": weights,
            "pruner": pruner,
            "runs_dir": runs_dir,
            "cache_dir": cache_dir,
            "register": register_model,
            "warm_start": warm_start,
            "overrides": set_ or None,
            "promote_margin": promote_margin,
            "force_promote": force_promote,
            "workers": workers,
        }
        manifest, settings = model_settings(environment(ctx), model_dir, flags)
        check_run(manifest, settings)  # bad input fails here, before TensorFlow, MLflow or the data load

        from pipeline.tune.search import tune

        summary = tune(model_dir, settings, log=lambda line: typer.echo(line))
        raise typer.Exit(ExitCode.OK if summary.goal_met else ExitCode.GOAL_NOT_MET)
