"""Notify: result e-mails (SMTP) and chat webhooks, queued in an outbox when they cannot go now."""

from pipeline.report.notify.deliver import event_for, flush_outbox, notify, outboxes
from pipeline.report.notify.settings import NotifySettings

__all__ = ["NotifySettings", "event_for", "flush_outbox", "notify", "outboxes"]
