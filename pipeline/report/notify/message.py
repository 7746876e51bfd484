"""The result e-mail itself: subject, plain-text and HTML bodies (Jinja2), plots attached.

Rendering is separate from delivery so the same ``EmailMessage`` can be sent now, or
written to the outbox as a ``.eml`` and sent byte for byte later.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pipeline.report import formatting as fmt
from pipeline.report.notify.settings import NotifySettings
from pipeline.summary import TuneSummary

logger = logging.getLogger(__name__)

EVENTS = ("goal_met", "goal_not_met", "restarted", "failed")
_TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(_TEMPLATES),
        # the HTML body shows error text and parameter values: escape them
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,  # a typo in a template fails a test, not a mail
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def event_for(summary: TuneSummary) -> str:
    """The event a finished tune reports: ``goal_met`` or ``goal_not_met``."""
    return "goal_met" if summary.goal_met else "goal_not_met"


def subject_for(event: str, model: str, summary: TuneSummary | None = None, error: str | None = None) -> str:
    """One-line subject, e.g. ``[mlops] face_vgg16: goal met (val_accuracy 0.95 >= 0.90)``.

    Args:
        event: one of ``EVENTS``.
        model: the model's name.
        summary: the tune's summary, when there is one.
        error: the failure's message, for ``failed``.

    Returns:
        The subject, without line breaks (a header cannot carry them).
    """
    if event == "goal_met" and summary is not None:
        detail = f"goal met ({fmt.goal_check(summary)})"
    elif event == "goal_not_met" and summary is not None:
        detail = f"goal not met ({fmt.goal_check(summary)})"
    elif event == "restarted":
        restarts = summary.restarts if summary is not None else 0
        detail = f"restarted after a crash (restart {restarts})" if restarts else "restarted"
    else:
        first_line = (error or "unknown error").strip().splitlines() or ["unknown error"]
        reason = first_line[0]
        detail = f"failed ({reason[:77] + '...' if len(reason) > 80 else reason})"
    # model names and errors are untrusted: a CR/LF (or any control) would end the header
    return fmt.one_line(f"[mlops] {model}: {detail}")


def _context(event: str, model: str, summary: TuneSummary | None, error: str | None) -> dict[str, Any]:
    """Everything the templates show, already formatted (templates hold no logic)."""
    ctx: dict[str, Any] = {
        "event": event,
        "model": model,
        "error": error,
        "summary": None,
        "plots": [],
    }
    if summary is None:
        return ctx
    best = summary.best
    url, label = fmt.mlflow_link(summary)
    ctx["summary"] = {
        "kind": summary.kind or "unknown",
        "goal": fmt.goal_text(summary),
        "goal_check": fmt.goal_check(summary),
        "met": summary.goal_met,
        "best_value": fmt.format_value(best.value) if best else "–",
        "best_interval": fmt.format_interval(best.interval) if best else "",
        "best_trial": best.number if best else None,
        "test_value": fmt.format_value(best.test_value) if best else "–",
        "trials": fmt.trials_text(summary),
        "wall": fmt.format_duration(summary.wall_seconds),
        "params": [(k, fmt.format_param(v)) for k, v in sorted((best.params if best else {}).items())],
        "restarts": summary.restarts,
        "mlflow_url": url,
        "mlflow_label": label,
        "registered_model": summary.registered_model,
        "study": summary.study_name,
        "promotion": _promotion(summary),
        "data_notes": [fmt.one_line(note) for note in summary.data_notes],
        "staged": fmt.staged_text(summary),  # (label, text): where a staged search's time went
    }
    return ctx


def _promotion(summary: TuneSummary) -> dict[str, Any] | None:
    """The promotion gate's verdict and both test scores, formatted; ``None`` when nothing was registered."""
    decision = summary.promotion
    if decision is None:
        return None

    def scored(value: float | None, interval: tuple[float, float] | None) -> str:
        text = fmt.format_value(value) if value is not None else "could not be scored"
        return f"{text} (95% Wilson {fmt.format_interval(interval)})" if interval else text

    champion = None
    if decision.champion_version is not None:
        how = {
            "recorded": "its recorded score, same test split",
            "rescored": "scored now on this test split",
            "unseen": f"scored now on the {decision.compared_n} test examples it never trained on, "
            f"where v{decision.challenger_version} scored {fmt.format_value(decision.challenger_compared)}",
        }
        note = how.get(decision.champion_scored or "", decision.champion_scored or "")
        champion = f"{scored(decision.champion_value, decision.champion_interval)}, v{decision.champion_version}"
        champion += f" ({note})" if note else ""
    return {
        "headline": decision.headline,
        "metric": decision.metric,
        "challenger": f"{scored(decision.challenger_value, decision.challenger_interval)}, "
        f"v{decision.challenger_version}",
        "champion": champion,
        "reason": decision.reason,
    }


def _plot_files(summary: TuneSummary | None) -> list[tuple[str, Path]]:
    """The PNG plots on disk; a missing one is a warning, never a lost e-mail.

    Only files that are PNGs are attached: the paths come from ``summary.json``, which the
    model's process writes, and must not attach ``/proc/self/environ`` or a key file.
    """
    found = []
    for title, path in (summary.plots if summary else {}).items():
        file = fmt.resolve_plot(summary, path) if summary else Path(path)
        if fmt.is_png(file):
            found.append((fmt.one_line(title), file))
        else:
            logger.warning("plot %r not attached: %s is not a PNG file", title, file)
    return found


def build_message(
    settings: NotifySettings,
    event: str,
    summary: TuneSummary | None = None,
    *,
    model: str | None = None,
    error: str | None = None,
) -> EmailMessage:
    """Render the result e-mail.

    Args:
        settings: supplies ``sender`` and ``recipients``.
        event: ``goal_met``, ``goal_not_met``, ``restarted`` or ``failed``.
        summary: the tune's summary; ``None`` for a model that failed before tuning.
        model: the model's name, when there is no summary.
        error: what went wrong, for ``failed``.

    Returns:
        ``multipart/mixed``: text and HTML alternatives (plots inline in the HTML by
        Content-ID), then each PNG plot as an attachment.

    Raises:
        ValueError: an unknown ``event``, or neither ``summary`` nor ``model``.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}: use one of {', '.join(EVENTS)}")
    name = model or (summary.model if summary else None)
    if not name:
        raise ValueError("build_message needs a summary or a model name")
    domain = (settings.sender or "mlops@localhost").rpartition("@")[2] or "localhost"
    ctx = _context(event, name, summary, error)
    plots = _plot_files(summary)
    # make_msgid without a domain asks DNS for our FQDN: slow or hanging on a CI box
    ctx["plots"] = [
        {"title": title, "cid": make_msgid(domain=domain)[1:-1], "filename": fmt.one_line(file.name)}
        for title, file in plots
    ]
    env = _environment()
    msg = EmailMessage()
    msg["Subject"] = subject_for(event, name, summary, error)
    msg["From"] = settings.sender or ""
    msg["To"] = ", ".join(settings.recipients)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["X-Mlops-Event"] = event
    msg.set_content(env.get_template("notify_mail.txt.j2").render(ctx))
    msg.add_alternative(env.get_template("notify_mail.html.j2").render(ctx), subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None  # just added above
    for (_, file), plot in zip(plots, ctx["plots"], strict=True):
        data = file.read_bytes()
        html_part.add_related(data, "image", "png", cid=f"<{plot['cid']}>", disposition="inline")
        msg.add_attachment(data, maintype="image", subtype="png", filename=plot["filename"])
    return msg
