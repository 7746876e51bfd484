"""``mlops run``: every stage for one push.

detect -> for each changed model: classify -> build (Docker runner) -> supervised tune ->
notify; then one Markdown summary for the CI page. A model that fails is reported and the
others still run; the exit code says whether every model met its goal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.environment import Environment
from pipeline.errors import ExitCode, MlopsError
from pipeline.summary import TuneSummary

NOTIFY_MODES = ("now", "queue", "off")


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
        notify: ``now`` (send e-mails / webhooks as results come), ``queue`` (render them
            into each model's outbox for ``mlops notify``; no credentials needed) or ``off``.
        restart_backoff: seconds before the supervisor's first restart.
        environment: the environment snapshot the CLI took: settings (``MLOPS_CONFIG``,
            ``MLOPS_SMTP_*``, ...), what the tune stage may inherit, GitHub's variables for
            the summary. Empty: none of them.
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
    notify: str = "now"
    restart_backoff: float = 2.0
    environment: Environment = field(default_factory=Environment)


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
    from pipeline.config.settings import find_repo_config, read_repo_config
    from pipeline.detect.changes import changed_models
    from pipeline.report.ci_summary import publish_github, render_markdown, write_summary
    from pipeline.report.notify.deliver import NotifySettings, flush_outbox, outboxes

    repo = options.repo.resolve()
    env = options.environment
    if options.notify not in NOTIFY_MODES:
        raise MlopsError(f"--notify {options.notify!r} is not a mode: use one of {', '.join(NOTIFY_MODES)}")
    notify_settings = None
    if options.notify != "off":
        # Before any work: bad settings (a cleartext login, no recipient) fail in a second, not after the tune.
        config = read_repo_config(find_repo_config(repo, env.config_path))
        notify_settings = NotifySettings.from_config(config.get("notify"), env)
    changes = changed_models(repo, options.before, options.after)
    for folder in changes.deleted:
        log(f"deleted: {folder} (nothing to tune)")
    if not changes.changed:
        log("no model folder changed in this push; nothing to tune")
    if options.notify == "now" and notify_settings and (notify_settings.email_enabled or notify_settings.webhook_url):
        # Deliver what an earlier run could not: one outbox per model, or the configured one.
        for outbox in outboxes(notify_settings, repo / options.runs_dir):
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
    if env.on_github_actions:
        for warning in publish_github(markdown, env=env).warnings:
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
    from pipeline.config.manifest import load_manifest
    from pipeline.detect.classify import classify_model
    from pipeline.execute.runners import DockerRunner, choose_runner
    from pipeline.execute.supervisor import Supervisor, describe_exit
    from pipeline.report.notify.deliver import event_for, notify

    outcome = ModelOutcome(folder)
    log(f"== {folder}")
    try:
        outcome.stage = "classify"
        classification = classify_model(model_dir)
        log(f"classify: {classification.kind} ({classification.framework or 'framework unknown'})")
        manifest = load_manifest(model_dir)
        run_dir = (options.repo / options.runs_dir).resolve() / manifest.name
        outcome.stage = "build"
        runner = choose_runner(options.runner, options.environment)
        if isinstance(runner, DockerRunner):
            from pipeline.build.images import build_image

            built = build_image(
                model_dir,
                classification.kind,
                classification.framework or "",
                commit,
                env=options.environment,
                base_image=options.base_image,
                log=log,
            )
            runner.image = built.tag
            # The container's user writes the run folders (mounted read-write; created, and
            # then given to it, when missing); the rest of the checkout is read-only.
            runner.state_dirs.append(run_dir.parent)
        outcome.stage = "tune"

        def restarted(number: int, code: int) -> None:
            outcome.restarts = number
            if notify_settings is not None:
                result = notify(
                    notify_settings,
                    "restarted",
                    model=manifest.name,
                    run_dir=run_dir,
                    error=f"tune {describe_exit(code)}; restart {number} of {options.max_restarts}",
                    deliver=options.notify == "now",
                )
                log(f"notify: {result.message}")

        supervisor = Supervisor(runner, options.max_restarts, options.restart_backoff, on_restart=restarted, log=log)
        tune_args = _tune_args_for(manifest, options.tune_args, log)
        args = ["tune", runner.model_path(model_dir), "--runs-dir", str(run_dir.parent), *tune_args]
        result = supervisor.run(args, _tune_env(options.repo, options.environment), options.repo)
        summary_file = run_dir / "summary.json"
        if result.exit_code not in (ExitCode.OK, ExitCode.GOAL_NOT_MET) or not summary_file.exists():
            said = f": {runner.last_failure}" if runner.last_failure else ""
            raise MlopsError(f"tune {describe_exit(result.exit_code)} after {result.restarts} restart(s){said}")
        outcome.summary = TuneSummary.read(summary_file)
        outcome.summary.kind = classification.kind
        outcome.stage = None
        if notify_settings is not None:
            sent = notify(
                notify_settings,
                event_for(outcome.summary),
                outcome.summary,
                run_dir=run_dir,
                deliver=options.notify == "now",
            )
            log(f"notify: {sent.message}")
    except MlopsError as error:
        outcome.error = str(error)
        log(f"error: {folder}: {outcome.stage} failed: {error}")
        if notify_settings is not None:
            sent = notify(
                notify_settings,
                "failed",
                model=model_dir.name,
                error=f"{outcome.stage}: {error}",
                run_dir=(options.repo / options.runs_dir).resolve() / model_dir.name,
                deliver=options.notify == "now",
            )
            log(f"notify: {sent.message}")
    return outcome


def _tune_args_for(manifest: Any, tune_args: list[str], log: Callable[[str], None]) -> list[str]:
    """``tune_args`` less the ``--set`` options this model does not read.

    One push may change models of different kinds; ``--set data.input_size=96`` is meant for
    the models that have that option, so the others are started without it (and say so)
    instead of failing on it. ``mlops tune`` still checks what it is given.
    """
    kept: list[str] = []
    items = iter(tune_args)
    for arg in items:
        if arg == "--set":
            value = next(items, "")
        elif arg.startswith("--set="):
            value = arg.removeprefix("--set=")
        else:
            kept.append(arg)
            continue
        section, _, name = value.partition("=")[0].partition(".")
        if section in ("data", "params") and name not in _options_read(manifest, section):
            log(f"--set {value}: {manifest.name} has no option {section}.{name}; not passed to it")
            continue
        kept += ["--set", value]
    return kept


def _options_read(manifest: Any, section: str) -> Any:
    """The option names a model reads: its ``accepts:`` declaration, else its model.yaml keys."""
    specs = manifest.accepts.section(section)
    return specs if specs is not None else getattr(manifest, section)


def _tune_env(repo: Path, host_env: Environment) -> dict[str, str]:
    """The default tracking store as an absolute path, so a container sees the same file."""
    env: dict[str, str] = {}
    if not host_env.tracking_uri and not host_env.get("MLOPS_TRACKING_URI"):
        env["MLOPS_TRACKING_URI"] = f"sqlite:///{repo.resolve() / 'mlruns' / 'mlflow.db'}"
    return env
