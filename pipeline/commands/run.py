"""``mlops run``: detect, classify, build, supervised tune and notify for every changed model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands.edge import environment
from pipeline.config.environment import BASE_IMAGE


class NotifyMode(StrEnum):
    """When result e-mails and webhooks go out."""

    now = "now"
    queue = "queue"
    off = "off"


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to the CLI."""

    @app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def run_command(
        ctx: typer.Context,
        before: Annotated[
            str | None,
            typer.Option(help="The commit before the push; absent or all zeros: a first push, every model changed."),
        ] = None,
        after: Annotated[str, typer.Option(help="The pushed commit.")] = "HEAD",
        repo: Annotated[Path, typer.Option(help="The Git repository (its models/ folder).")] = Path("."),
        runner: Annotated[str, typer.Option(help="auto (Docker when an engine answers), docker or local.")] = "auto",
        summary: Annotated[Path, typer.Option(help="Where the Markdown summary goes.")] = Path("mlops-summary.md"),
        runs_dir: Annotated[
            Path, typer.Option(help="Run folders (summary.json, plots, checkpoints), relative to --repo.")
        ] = Path("mlops-runs"),
        max_restarts: Annotated[
            int, typer.Option(help="Restarts of a tune that dies (killed, out of memory, crash).")
        ] = 3,
        restart_backoff: Annotated[
            float, typer.Option(help="Seconds before the first restart; doubles each time.")
        ] = 2.0,
        base_image: Annotated[
            str | None, typer.Option(envvar=BASE_IMAGE, help="Docker base image for the model images.")
        ] = None,
        notify: Annotated[
            NotifyMode,
            typer.Option(
                help="now: e-mail (and webhook) each result as it comes; queue: write them to each "
                "model's outbox for `mlops notify` (this step then needs no SMTP password); off: none."
            ),
        ] = NotifyMode.now,
        no_notify: Annotated[bool, typer.Option("--no-notify", help="The same as --notify off.")] = False,
        force_promote: Annotated[
            bool,
            typer.Option(
                "--force-promote",
                help="Make each new model champion without comparing it (passed to each `mlops tune`).",
            ),
        ] = False,
    ) -> None:
        """Run every stage for a push; extra flags (--max-trials 5, --weights PATH) go to each `mlops tune`.

        Exit 0 when every changed model met its goal, 3 when one did not, 4 when one failed.
        """
        from pipeline.orchestrate import PushOptions, run_push

        options = PushOptions(
            repo=repo,
            before=before,
            after=after,
            runner=runner,
            tune_args=[*ctx.args, *(["--force-promote"] if force_promote else [])],
            runs_dir=runs_dir,
            summary_path=summary,
            max_restarts=max_restarts,
            base_image=base_image,
            notify=NotifyMode.off.value if no_notify else notify.value,
            restart_backoff=restart_backoff,
            environment=environment(ctx),
        )
        raise typer.Exit(run_push(options, log=typer.echo))
