"""``mlops notify``: deliver the result e-mails and webhooks ``mlops run --notify queue`` queued.

The split keeps credentials away from model code: the CI step that runs ``mlops run`` (and so
the pushed models) holds no SMTP password; this command, in a later step that holds it,
sends what the outboxes keep.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands.edge import environment
from pipeline.config.environment import Environment
from pipeline.errors import ExitCode, MlopsError


def deliver_queued(repo: Path, runs_dir: Path, env: Environment, log: Callable[[str], None] = print) -> int:
    """Send every queued message under ``runs_dir`` (or the configured ``notify.outbox``).

    Args:
        repo: where ``mlops.yaml`` is looked for (its ``notify:`` section).
        runs_dir: the run folders, relative to ``repo``; each ``<model>/outbox`` is flushed.
        env: the environment snapshot: ``MLOPS_CONFIG`` and the ``MLOPS_SMTP_*`` settings.
        log: where the one line per outbox goes.

    Returns:
        ``ExitCode.OK`` when nothing is left queued, ``ExitCode.NOT_DELIVERED`` when a message
        stays in an outbox (the server refused it or could not be reached).

    Raises:
        MlopsError: the settings are invalid, or messages are queued and nothing is
            configured to deliver them.
    """
    from pipeline.config.settings import find_repo_config, read_repo_config
    from pipeline.report.notify import outbox as notify_outbox
    from pipeline.report.notify.deliver import NotifySettings, flush_outbox, outboxes

    config = read_repo_config(find_repo_config(repo, env.config_path))
    settings = NotifySettings.from_config(config.get("notify"), env)
    root = repo / runs_dir
    boxes = outboxes(settings, root)
    pending = {box: notify_outbox.pending(box) for box in boxes}
    kinds = [item.kind for items in pending.values() for item in items]
    if not kinds:
        log(f"notify: nothing queued under {settings.outbox or root}")
        return ExitCode.OK
    if "email" in kinds and not settings.email_enabled:
        raise MlopsError(
            f"{kinds.count('email')} result e-mail(s) queued under {root} but no SMTP host: set "
            "MLOPS_SMTP_HOST (or notify.host in mlops.yaml) in the step that runs `mlops notify`"
        )
    if "webhook" in kinds and not settings.webhook_url:
        raise MlopsError(
            f"{kinds.count('webhook')} webhook message(s) queued under {root} but no webhook URL: "
            "set MLOPS_WEBHOOK_URL in the step that runs `mlops notify`"
        )
    remaining = 0
    for box in boxes:
        if not pending[box]:
            continue
        result = flush_outbox(settings, box)
        remaining += result.remaining
        shown = os.path.relpath(box) if box.is_absolute() else str(box)
        line = f"notify: {shown}: {result.sent} sent, {result.remaining} still queued"
        log(line + (f" ({result.errors[0]})" if result.errors else ""))
    return ExitCode.NOT_DELIVERED if remaining else ExitCode.OK


def register(app: typer.Typer) -> None:
    """Add the ``notify`` command to the CLI."""

    @app.command("notify")
    def notify_command(
        ctx: typer.Context,
        runs_dir: Annotated[
            Path, typer.Option(help="Run folders whose <model>/outbox/ hold queued messages, relative to --repo.")
        ] = Path("mlops-runs"),
        repo: Annotated[Path, typer.Option(help="The repository (its mlops.yaml notify: section).")] = Path("."),
    ) -> None:
        """Deliver every message `mlops run --notify queue` left in the outboxes.

        Prints one line per outbox. Exit 0 when everything was delivered (or nothing was
        queued), 2 with one error line when the settings are missing or invalid, 5 when a
        message stays queued (the next `mlops notify` retries it).
        """
        raise typer.Exit(deliver_queued(repo, runs_dir, environment(ctx), log=typer.echo))
