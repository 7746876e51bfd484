"""``mlops features MODEL_DIR``: fill the feature cache ahead of a search (a backbone migration).

The model's ``prepare_features`` hook extracts what ``prepare`` would, in resumable shards:
a killed run continues from its last finished shard, workers started together on one cache
share the shards, and the entry is published only when complete. Settings resolve as for
``mlops tune`` (``model.yaml``, ``mlops.yaml``, ``MLOPS_*``, flags), so the same key, and
the same cache entry, is found by the search that follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.commands.edge import environment, model_settings
from pipeline.errors import ExitCode


def register(app: typer.Typer) -> None:
    """Add the ``features`` command to the CLI."""

    @app.command("features")
    def features_command(
        ctx: typer.Context,
        model_dir: Annotated[Path, typer.Argument(help="The model folder (holds model.yaml), e.g. models/face_vgg16.")],
        weights: Annotated[
            str | None, typer.Option(help="VGG16 weights: imagenet, none, or a path to a .h5 file.")
        ] = None,
        cache_dir: Annotated[
            Path | None, typer.Option(help="Feature cache folder; default ~/.cache/mlops/features.")
        ] = None,
        shard_size: Annotated[
            int | None,
            typer.Option(
                "--feature-shard-size", help="Images per shard (default 256); a killed run resumes from its last shard."
            ),
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Seed (random weights: --weights none depend on it).")] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override a model.yaml option: data.source=lfw, data.input_size=96."),
        ] = None,
    ) -> None:
        """Extract MODEL_DIR's cached features in resumable shards, without a search; exit 0 when published."""
        from pipeline.config.preflight import check_run
        from pipeline.config.settings import apply_overrides

        flags: dict[str, Any] = {
            "weights": weights,
            "cache_dir": cache_dir,
            "feature_shard_size": shard_size,
            "seed": seed,
            "overrides": set_ or None,
        }
        manifest, settings = model_settings(environment(ctx), model_dir, flags)
        check_run(manifest, settings)  # a bad --set or an unwritable cache: one line, before TensorFlow

        from pipeline.sdk.contract import StudyContext, load_plugin

        plugin = load_plugin(model_dir)
        data_options, params = apply_overrides(plugin.manifest, settings)
        log = lambda line: typer.echo(line)  # noqa: E731
        context = StudyContext(plugin.manifest, data_options, params, settings.seed, settings.cache_dir, log)
        context.feature_shard_size = settings.feature_shard_size
        if not plugin.prepare_features(context):
            log(f"{manifest.name}: its model defines no prepare_features(); it caches no features, nothing to do")
        raise typer.Exit(ExitCode.OK)
