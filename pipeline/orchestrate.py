"""``mlops run``: every stage for one push.

detect -> for each changed model: classify -> build (Docker runner) -> supervised tune ->
notify; then one Markdown summary for the CI page. A model that fails is reported and the
others still run; the exit code says whether every model met its goal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ExitCode, MlopsError
from pipeline.summary import TuneSummary


@dataclass
class PushOptions:
    """What ``mlops run`` was asked to do.

    Attributes:
        repo: the repository root.
        before, after: the pushed commit range (``before`` None or zeros: a first push).
        runner: ``auto``, ``docker`` or ``local``.
        tune_args: extra ``mlops tune`` flags passed to every model (``--max-trials 5``).
        runs_dir: where each model's run folder (summary.json, plots, outbox) goes.
        summary_path: the Markdown summary file.
        max_restarts: supervisor restarts per model.
        base_image: Docker base image override.
        notify: send e-mails / webhooks.
    """

    repo: Path
    before: str | None
    after: str = "HEAD"
    runner: str = "auto"
    tune_args: list[str] = field(default_factory=list)
    runs_dir: Path = Path("mlops-runs")
    summary_path: Path = Path("mlops-summary.md")
    max_restarts: int = 3
    base_image: str | None = None
    notify: bool = True
    restart_backoff: float = 2.0


@dataclass
class ModelOutcome:
    """One model's way through the stages."""

    folder: str
    summary: TuneSummary | None = None
    error: str | None = None
    stage: str | None = None
    restarts: int = 0


def run_push(options: PushOptions, log: Callable[[str], None] = print) -> int:
    """Run every stage for the push; returns the process exit code.

    Returns:
        0 when every changed model met its goal (or none changed), 3 when one missed its
        goal, 4 when one failed to classify, build or tune.
    """
    from pipeline.changes import changed_models
    from pipeline.ci_summary import publish_github, render_markdown, write_summary
    from pipeline.notify import NotifySettings, flush_outbox
    from pipeline.settings import find_repo_config, read_repo_config

    repo = options.repo.resolve()
    changes = changed_models(repo, options.before, options.after)
    for folder in changes.deleted:
        log(f"deleted: {folder} (nothing to tune)")
    if not changes.changed:
        log("no model folder changed in this push; nothing to tune")
    config_path = find_repo_config(repo)
    notify_settings = NotifySettings.from_config(read_repo_config(config_path).get("notify"))
    if options.notify and (notify_settings.email_enabled or notify_settings.webhook_url):
        # Deliver what an earlier run could not: one outbox per model, or the configured one.
        outboxes = [notify_settings.outbox] if notify_settings.outbox else (repo / options.runs_dir).glob("*/outbox")
        for outbox in outboxes:
            flushed = flush_outbox(notify_settings, outbox)
            if flushed.sent:
                log(f"notify: delivered {flushed.sent} queued message(s) from {outbox}")

    outcomes = [
        _one_model(repo / folder, folder, options, notify_settings, changes.after, log) for folder in changes.changed
    ]

    summaries = [o.summary for o in outcomes if o.summary is not None]
    failures = [{"model": o.folder, "error": o.error, "stage": o.stage} for o in outcomes if o.error]
    markdown = render_markdown(summaries, failures, base_dir=options.summary_path.parent.resolve())
    write_summary(options.summary_path, markdown)
    log(f"summary: {options.summary_path}")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for warning in publish_github(markdown).warnings:
            log(f"warning: {warning}")
    if failures:
        return ExitCode.MODEL_FAILED
    if any(not s.goal_met for s in summaries):
        return ExitCode.GOAL_NOT_MET
    return ExitCode.OK


def _one_model(
    model_dir: Path,
    folder: str,
    options: PushOptions,
    notify_settings: Any,
    commit: str,
    log: Callable[[str], None],
) -> ModelOutcome:
    from pipeline.classify import classify_model
    from pipeline.manifest import load_manifest
    from pipeline.notify import event_for, notify
    from pipeline.runners import DockerRunner, choose_runner
    from pipeline.supervisor import Supervisor, describe_exit

    outcome = ModelOutcome(folder)
    log(f"== {folder}")
    try:
        outcome.stage = "classify"
        classification = classify_model(model_dir)
        log(f"classify: {classification.kind} ({classification.framework or 'framework unknown'})")
        manifest = load_manifest(model_dir)
        run_dir = (options.repo / options.runs_dir).resolve() / manifest.name
        outcome.stage = "build"
        runner = choose_runner(options.runner)
        if isinstance(runner, DockerRunner):
            from pipeline.containers import build_image

            built = build_image(
                model_dir,
                classification.kind,
                classification.framework or "",
                commit,
                base_image=options.base_image,
                log=log,
            )
            runner.image = built.tag
            # The container's user writes the run folders: created and given to it.
            runner.state_dirs.append(run_dir.parent)
        outcome.stage = "tune"

        def restarted(number: int, code: int) -> None:
            outcome.restarts = number
            if options.notify:
                result = notify(
                    notify_settings,
                    "restarted",
                    model=manifest.name,
                    run_dir=run_dir,
                    error=f"tune {describe_exit(code)}; restart {number} of {options.max_restarts}",
                )
                log(f"notify: {result.message}")

        supervisor = Supervisor(runner, options.max_restarts, options.restart_backoff, on_restart=restarted, log=log)
        args = ["tune", runner.model_path(model_dir), "--runs-dir", str(run_dir.parent), *options.tune_args]
        result = supervisor.run(args, _tune_env(options.repo), options.repo)
        summary_file = run_dir / "summary.json"
        if result.exit_code not in (ExitCode.OK, ExitCode.GOAL_NOT_MET) or not summary_file.exists():
            raise MlopsError(f"tune {describe_exit(result.exit_code)} after {result.restarts} restart(s)")
        outcome.summary = TuneSummary.read(summary_file)
        outcome.summary.kind = classification.kind
        outcome.stage = None
        if options.notify:
            sent = notify(notify_settings, event_for(outcome.summary), outcome.summary, run_dir=run_dir)
            log(f"notify: {sent.message}")
    except MlopsError as error:
        outcome.error = str(error)
        log(f"error: {folder}: {outcome.stage} failed: {error}")
        if options.notify:
            sent = notify(
                notify_settings,
                "failed",
                model=model_dir.name,
                error=f"{outcome.stage}: {error}",
                run_dir=(options.repo / options.runs_dir).resolve() / model_dir.name,
            )
            log(f"notify: {sent.message}")
    return outcome


def _tune_env(repo: Path) -> dict[str, str]:
    """The default tracking store as an absolute path, so a container sees the same file."""
    env: dict[str, str] = {}
    if not os.environ.get("MLFLOW_TRACKING_URI") and not os.environ.get("MLOPS_TRACKING_URI"):
        env["MLOPS_TRACKING_URI"] = f"sqlite:///{repo.resolve() / 'mlruns' / 'mlflow.db'}"
    return env
