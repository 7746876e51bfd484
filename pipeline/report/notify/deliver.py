"""Report one model's result by e-mail (SMTP) and, optionally, a chat webhook.

A notification never decides the pipeline's outcome: a delivery failure is retried with
backoff, then the message goes to the outbox (``pipeline.report.notify.outbox``) and ``notify``
returns ``queued``; ``flush_outbox`` sends it later. Only a misconfiguration the user can
fix raises (``MlopsError``, from ``NotifySettings``), and nothing configured at all just
skips the notification.

``notify(..., deliver=False)`` renders the same message and only queues it, so the step that
runs model code needs no credentials; ``mlops notify`` (``flush_outbox``) delivers it from a
step that holds them. A queued file is therefore untrusted input at delivery time: the
envelope and the From/To headers always come from the settings, never from the file, and a
webhook gets only an escaped line of text.

Example:
    >>> settings = NotifySettings.from_config(mlops_yaml.get("notify"), env)  # doctest: +SKIP
    >>> result = notify(settings, event_for(summary), summary)  # doctest: +SKIP
    >>> print(result.message)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from pipeline.report import formatting as fmt
from pipeline.report.notify import outbox as outbox_files
from pipeline.report.notify.message import EVENTS, build_message, event_for, subject_for
from pipeline.report.notify.settings import NotifySettings, mask_url
from pipeline.summary import TuneSummary

__all__ = [
    "EVENTS",
    "FlushResult",
    "NotifyResult",
    "NotifySettings",
    "build_message",
    "event_for",
    "flush_outbox",
    "notify",
    "outboxes",
]

logger = logging.getLogger(__name__)
_MAX_BACKOFF = 60.0
_CHAT_LIMIT = 500  # characters of webhook text: a subject line, not a document
QUEUED_ONLY = "not sent: queued for `mlops notify` (--notify queue)"


@dataclass
class NotifyResult:
    """What became of one notification.

    Attributes:
        status: ``sent``, ``queued`` (in the outbox), ``skipped`` (nothing configured) or
            ``failed`` (not even the outbox could keep it; the reason is in ``error``).
        message: one line for a person, e.g. for the CLI to print.
        attempts: SMTP attempts made.
        outbox_file: the queued ``.eml``, when ``queued``.
        webhook: ``sent``, ``queued``, ``failed`` or ``None`` when no webhook is set.
        error: the last delivery error, password removed.
    """

    status: str
    message: str
    attempts: int = 0
    outbox_file: Path | None = None
    webhook: str | None = None
    error: str | None = None


@dataclass
class FlushResult:
    """What ``flush_outbox`` did: items ``sent`` and items still ``remaining``."""

    sent: int
    remaining: int
    errors: list[str]


class _PermanentError(Exception):
    """A failure a retry in the next seconds cannot fix (wrong password, refused address)."""


def _redact(text: str, settings: NotifySettings) -> str:
    if settings.password:
        text = text.replace(settings.password, "***")
    if settings.webhook_url:
        text = text.replace(settings.webhook_url, mask_url(settings.webhook_url))
    return text


def _tls_context(settings: NotifySettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file else None
    return ssl.create_default_context(cafile=cafile)


def _send_once(settings: NotifySettings, msg: EmailMessage) -> None:
    """One SMTP conversation; raises on any failure."""
    host, port, timeout = settings.host or "", settings.smtp_port, settings.timeout
    smtp: smtplib.SMTP
    if settings.security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=_tls_context(settings))
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        if settings.security == "starttls":
            smtp.starttls(context=_tls_context(settings))
            smtp.ehlo()
        if settings.username and settings.password:
            try:
                smtp.login(settings.username, settings.password)
            except smtplib.SMTPAuthenticationError as error:
                raise _PermanentError(
                    f"SMTP login refused ({error.smtp_code}): check MLOPS_SMTP_USER and MLOPS_SMTP_PASSWORD"
                ) from None
        try:
            # the envelope comes from the settings: a queued .eml may have been rewritten
            refused = smtp.send_message(msg, from_addr=settings.sender, to_addrs=settings.recipients)
        except smtplib.SMTPRecipientsRefused as error:
            raise _PermanentError(f"every recipient refused: {list(error.recipients)}") from None
        if refused:
            logger.warning("some recipients refused the result e-mail: %s", sorted(refused))


def _deliver(settings: NotifySettings, msg: EmailMessage, attempts: int) -> tuple[int, str | None]:
    """Try up to ``attempts`` times with exponential backoff; return (tries, last error)."""
    error: str | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(settings.backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
        try:
            _send_once(settings, msg)
            return attempt + 1, None
        except _PermanentError as exc:
            # retrying the same wrong password only risks locking the account
            return attempt + 1, _redact(str(exc), settings)
        # refused, timeout, TLS, 4xx; ValueError: an address the server cannot take (UTF-8)
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            error = _redact(f"{type(exc).__name__}: {exc}", settings)
            logger.info("SMTP attempt %d/%d failed: %s", attempt + 1, attempts, error)
    return attempts, error


def chat_text(text: object) -> str:
    """One line for a Slack-style webhook, with its markup made literal.

    Slack reads ``<url|label>`` as a link and ``<!channel>`` / ``<@U123>`` as mentions, and
    asks for ``&``, ``<`` and ``>`` as entities; ``@`` gets a zero-width joiner for services
    that ping on ``@everyone``.
    """
    line = fmt.one_line(text)[:_CHAT_LIMIT]
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return fmt.neutralize_mentions(line)


def _post_webhook(settings: NotifySettings, payload: dict[str, Any]) -> None:
    # only the text is posted, escaped here: a queued payload may have been rewritten
    request = urllib.request.Request(
        settings.webhook_url or "",
        data=json.dumps({"text": chat_text(payload.get("text", ""))}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=settings.timeout) as response:
        response.read()


def _webhook(
    settings: NotifySettings, payload: dict[str, Any], outbox: Path, meta: dict[str, str], deliver: bool = True
) -> str:
    attempts = settings.retries + 1 if deliver else 0
    error = "" if deliver else QUEUED_ONLY
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(settings.backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
        try:
            _post_webhook(settings, payload)
            return "sent"
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            error = _redact(f"{type(exc).__name__}: {exc}", settings)
    try:
        outbox_files.queue_webhook(outbox, payload, attempts=attempts, error=error, **meta)
    except OSError as exc:
        logger.error("webhook lost: %s; the outbox %s is not writable (%s)", error, outbox, exc)
        return "failed"
    if deliver:
        logger.warning("webhook not delivered (%s): queued in %s", error, outbox)
    return "queued"


def _outbox_dir(settings: NotifySettings, summary: TuneSummary | None, run_dir: Path | None) -> Path:
    if settings.outbox is not None:
        return settings.outbox
    base = run_dir or (Path(summary.run_dir) if summary and summary.run_dir else Path.cwd())
    return base / "outbox"


def notify(
    settings: NotifySettings,
    event: str,
    summary: TuneSummary | None = None,
    *,
    model: str | None = None,
    error: str | None = None,
    run_dir: Path | None = None,
    deliver: bool = True,
) -> NotifyResult:
    """Send the result of one model by e-mail (and webhook), or queue it in the outbox.

    Args:
        settings: from ``NotifySettings.from_config``.
        event: ``goal_met``, ``goal_not_met`` (see ``event_for``), ``restarted`` or ``failed``.
        summary: the tune's summary; ``None`` for a model that failed before tuning.
        model: the model's name, required when ``summary`` is ``None``.
        error: what went wrong, for ``failed`` (and optionally ``restarted``).
        run_dir: the run directory whose ``outbox/`` keeps undelivered mail, when the
            summary does not name one and ``settings.outbox`` is unset.
        deliver: ``False`` renders the message exactly as for sending, then only queues it
            (no network, no password needed) for ``flush_outbox`` / ``mlops notify``.

    Returns:
        A ``NotifyResult``; delivery failures are reported there, never raised.

    Raises:
        ValueError: an unknown ``event`` or no model name (a caller's bug).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}: use one of {', '.join(EVENTS)}")
    name = model or (summary.model if summary else None)
    if not name:
        raise ValueError("notify needs a summary or a model name")
    if not settings.email_enabled and not settings.webhook_url:
        message = "notification skipped: no SMTP host (set MLOPS_SMTP_HOST or notify.host)"
        logger.info(message)
        return NotifyResult(status="skipped", message=message)
    outbox = _outbox_dir(settings, summary, run_dir)
    subject = subject_for(event, name, summary, error)
    webhook = None
    if settings.webhook_url:
        meta = {"model": name, "event": event}
        webhook = _webhook(settings, {"text": subject}, outbox, meta, deliver)
    if not settings.email_enabled:
        message = f"e-mail skipped (no SMTP host); webhook {webhook}"
        logger.info(message)
        return NotifyResult(status="skipped", message=message, webhook=webhook)
    try:
        msg = build_message(settings, event, summary, model=name, error=error)
    except (OSError, ValueError, LookupError, TemplateError) as exc:  # unreadable plot, template
        message = f"result e-mail not built: {exc}"
        logger.error(message)
        return NotifyResult(status="failed", message=message, webhook=webhook, error=str(exc))
    if not deliver:
        return _queue_only(msg, outbox, name, event, webhook)
    attempts, failure = _deliver(settings, msg, settings.retries + 1)
    if failure is None:
        message = f"result e-mail sent to {', '.join(settings.recipients)}: {subject}"
        logger.info(message)
        return NotifyResult("sent", message, attempts=attempts, webhook=webhook)
    try:
        path = outbox_files.queue_email(outbox, msg, model=name, event=event, attempts=attempts, error=failure)
    except OSError as exc:
        message = f"result e-mail lost: {failure}; outbox {outbox} not writable ({exc})"
        logger.error(message)
        return NotifyResult("failed", message, attempts, webhook=webhook, error=failure)
    message = (
        f"result e-mail not delivered after {attempts} attempt(s) ({failure}): queued as "
        f"{path}; flush_outbox() sends it once the server is reachable"
    )
    logger.warning(message)
    return NotifyResult("queued", message, attempts, path, webhook, failure)


def _queue_only(msg: EmailMessage, outbox: Path, name: str, event: str, webhook: str | None) -> NotifyResult:
    """Write the rendered message to the outbox without any SMTP conversation."""
    try:
        path = outbox_files.queue_email(outbox, msg, model=name, event=event, attempts=0, error=QUEUED_ONLY)
    except OSError as exc:
        message = f"result e-mail lost: the outbox {outbox} is not writable ({exc})"
        logger.error(message)
        return NotifyResult("failed", message, webhook=webhook, error=str(exc))
    message = f"result e-mail queued as {path}; `mlops notify` sends it"
    logger.info(message)
    return NotifyResult("queued", message, 0, path, webhook)


def _pin_addresses(msg: EmailMessage, settings: NotifySettings) -> EmailMessage:
    """Set From and To from the settings and drop Cc/Bcc: a queued file is not trusted."""
    for header in ("From", "To", "Cc", "Bcc"):
        del msg[header]
    msg["From"] = settings.sender or ""
    msg["To"] = ", ".join(settings.recipients)
    return msg


def outboxes(settings: NotifySettings, runs_dir: Path) -> list[Path]:
    """Every outbox to deliver from: ``settings.outbox``, else each ``<runs_dir>/<model>/outbox``."""
    if settings.outbox is not None:
        return [settings.outbox]
    return sorted(path for path in Path(runs_dir).glob("*/outbox") if path.is_dir())


def flush_outbox(settings: NotifySettings, outbox: Path | None = None) -> FlushResult:
    """Send what the outbox holds, oldest first, removing each item once it is delivered.

    One attempt per item; the first connection failure stops the flush (the server is still
    down, and every further item would only wait for its own timeout).

    Args:
        settings: the current settings (the webhook URL and SMTP login come from here).
        outbox: the outbox directory; ``settings.outbox`` when omitted.

    Returns:
        How many items were sent and how many remain.

    Raises:
        ValueError: no outbox directory given and ``settings.outbox`` unset.
    """
    directory = outbox or settings.outbox
    if directory is None:
        raise ValueError("flush_outbox needs an outbox directory (argument or settings.outbox)")
    sent, errors = 0, []
    items = outbox_files.pending(directory)
    for item in items:
        if item.kind == "email" and not settings.email_enabled:
            continue
        if item.kind == "webhook" and not settings.webhook_url:
            continue
        claimed = outbox_files.claim(item)
        if claimed is None:
            continue  # another flush took it
        error: str | None = None
        try:
            if item.kind == "email":
                _, error = _deliver(settings, _pin_addresses(outbox_files.read_email(claimed), settings), 1)
            else:
                payload = json.loads(claimed.read_text())
                if not isinstance(payload, dict):
                    raise ValueError("not a webhook payload (a JSON object with text)")
                _post_webhook(settings, payload)
        except (OSError, ValueError) as exc:
            error = _redact(f"{type(exc).__name__}: {exc}", settings)
        outbox_files.release(item, claimed, sent=error is None, error=error)
        if error is None:
            sent += 1
            continue
        errors.append(f"{item.path.name}: {error}")
        logger.warning("outbox item %s still not delivered: %s", item.path.name, error)
        break
    remaining = len(outbox_files.pending(directory))
    return FlushResult(sent=sent, remaining=remaining, errors=errors)
