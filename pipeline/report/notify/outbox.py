"""The outbox: notifications that could not be delivered, kept on disk until they can.

Each queued item is one file, so ``flush_outbox`` can claim it with an atomic rename and two
flushes never send the same mail twice: ``<stamp>-<model>-<event>-<id>.eml`` (the whole
message, sendable byte for byte) or ``...webhook.json`` (the webhook payload; the URL itself
is a secret and comes from the settings at flush time). ``outbox.jsonl`` is the append-only
journal of what was queued and sent, for a person reading the directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from pipeline.sdk.checkpoints import replace_file

logger = logging.getLogger(__name__)

JOURNAL = "outbox.jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class QueuedItem:
    """One undelivered notification on disk."""

    path: Path
    kind: str  # "email" or "webhook"


def _stem(model: str, event: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{_UNSAFE.sub('_', model)}-{event}-{uuid.uuid4().hex[:8]}"


def journal(outbox: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to the journal (one ``write`` call, so lines never interleave)."""
    outbox.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record})
    with (outbox / JOURNAL).open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def queue_email(outbox: Path, msg: EmailMessage, *, model: str, event: str, attempts: int, error: str) -> Path:
    """Write ``msg`` as a ``.eml`` file plus a journal line; return the file."""
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{_stem(model, event)}.eml"
    replace_file(path, msg.as_bytes(policy=policy.SMTP))  # a flush never sees half a message
    journal(
        outbox,
        {
            "action": "queued",
            "kind": "email",
            "file": path.name,
            "model": model,
            "event": event,
            "subject": str(msg["Subject"]),
            "sender": str(msg["From"]),
            "recipients": [a.strip() for a in str(msg["To"]).split(",")],
            "attempts": attempts,
            "error": error,
        },
    )
    return path


def queue_webhook(outbox: Path, payload: dict[str, Any], *, model: str, event: str, attempts: int, error: str) -> Path:
    """Write a webhook payload plus a journal line; return the file."""
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{_stem(model, event)}.webhook.json"
    replace_file(path, json.dumps(payload).encode())
    journal(
        outbox,
        {
            "action": "queued",
            "kind": "webhook",
            "file": path.name,
            "model": model,
            "event": event,
            "attempts": attempts,
            "error": error,
        },
    )
    return path


def pending(outbox: Path) -> list[QueuedItem]:
    """The queued items, oldest first (names start with a UTC time stamp)."""
    if not outbox.is_dir():
        return []
    items = []
    for path in sorted(outbox.iterdir()):
        if path.name.endswith(".webhook.json"):
            items.append(QueuedItem(path, "webhook"))
        elif path.suffix == ".eml":
            items.append(QueuedItem(path, "email"))
    return items


def claim(item: QueuedItem) -> Path | None:
    """Rename the item so a concurrent flush skips it; ``None`` when another flush won."""
    claimed = item.path.with_name(f".{item.path.name}.sending-{os.getpid()}")
    try:
        item.path.rename(claimed)
    except FileNotFoundError:
        return None
    return claimed


def release(item: QueuedItem, claimed: Path, *, sent: bool, error: str | None = None) -> None:
    """Remove a sent item, or put an unsent one back; record either in the journal."""
    if sent:
        claimed.unlink(missing_ok=True)
        journal(item.path.parent, {"action": "sent", "kind": item.kind, "file": item.path.name})
    else:
        claimed.rename(item.path)
        journal(
            item.path.parent,
            {"action": "retry_failed", "kind": item.kind, "file": item.path.name, "error": error},
        )


def read_email(path: Path) -> EmailMessage:
    """Parse a queued ``.eml`` back into a message."""
    with path.open("rb") as handle:
        msg = BytesParser(policy=policy.default).parse(handle)
    assert isinstance(msg, EmailMessage)  # policy.default always builds EmailMessage
    return msg
