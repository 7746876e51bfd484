"""`mlops build`: a model's container image, tagged with the commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.build.dockerfiles import model_requirements, render_dockerfile
from pipeline.build.images import build_image
from pipeline.commands.edge import environment
from pipeline.config.environment import BASE_IMAGE
from pipeline.config.manifest import load_manifest


def kind_and_framework(model_dir: Path) -> tuple[str, str | None]:
    """The model's kind and framework: from its code, or model.yaml where that is all there is."""
    try:
        from pipeline.detect.classify import classify_model
    except ImportError:  # the classify stage is optional here: the manifest can say it
        manifest = load_manifest(model_dir)
        if manifest.kind is None:
            from pipeline.errors import MlopsError

            raise MlopsError(
                f"{manifest.path}: no 'kind:' and no classifier installed; set kind: cnn, ann or regression"
            ) from None
        return manifest.kind, manifest.framework
    result = classify_model(model_dir)
    return result.kind, result.framework


def head_commit(start: Path) -> str:
    """The commit checked out where ``start`` lives (GitPython), or ``dev`` outside a repo."""
    try:
        import git

        return str(git.Repo(start, search_parent_directories=True).head.commit.hexsha)
    except Exception:  # not a repository, no commit yet, or no git binary: a dev build
        return "dev"


def register(app: typer.Typer) -> None:
    """Add the `build` command to the CLI."""

    @app.command("build")
    def build(
        ctx: typer.Context,
        model_dir: Annotated[Path, typer.Argument(help="The model folder, e.g. models/face_vgg16.")],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the rendered Dockerfile; build nothing.")
        ] = False,
        base_image: Annotated[
            str | None,
            typer.Option(
                "--base-image",
                envvar=BASE_IMAGE,
                help="The FROM image (default: python:3.11-slim pinned by digest).",
            ),
        ] = None,
        tag: Annotated[str | None, typer.Option("--tag", help="Tag the image this instead of MODEL:COMMIT.")] = None,
        commit: Annotated[
            str | None,
            typer.Option("--commit", help="The commit to label and tag with (default: HEAD)."),
        ] = None,
    ) -> None:
        """Build the model's image from dockerfiles/<kind>.Dockerfile.j2, or reuse an equal one."""
        kind, framework = kind_and_framework(model_dir)
        if dry_run:
            manifest = load_manifest(model_dir)
            typer.echo(
                render_dockerfile(
                    kind,
                    framework,
                    model_name=manifest.name,
                    base_image=base_image,
                    model_requirements=bool(model_requirements(model_dir, manifest.requirements)),
                ),
                nl=False,
            )
            return
        built = build_image(
            model_dir,
            kind,
            framework,
            commit or head_commit(model_dir),
            env=environment(ctx),
            base_image=base_image,
            tag=tag,
            log=typer.echo,
        )
        typer.echo(f"{built.tag} {built.image_id} ({'reused' if built.reused else 'built'})")
