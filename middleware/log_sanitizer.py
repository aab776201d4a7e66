"""A logging filter that runs every record through the sanitizer.

It sits on the handlers, not on loggers, so it sees records from every
logger that propagates to them: ours, Dramatiq's, redis-py's, pymongo's.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from .sanitize import redact_text

# Dramatiq's own per-failure line prints the message with all its arguments
# and a traceback; the job-lifecycle middleware logs a sanitized line with the
# error code in its place, so the original is dropped rather than repeated.
REPLACED_RECORDS = frozenset(
    {
        ("dramatiq.worker.WorkerThread", "Failed to process message %s with unhandled exception."),
        ("dramatiq.worker.WorkerThread", "Failed to process message %s with expected exception %s."),
    }
)

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def safe_message_label(message: Message[Any] | MessageProxy) -> str:
    """How a message is named in logs: actor and id, never its arguments."""
    return f"{message.actor_name}[{message.message_id}]"


class SanitizingFilter(logging.Filter):
    """Redact secrets from the message, arguments, exception and extra fields of each record."""

    def __init__(self, *, mask_emails: bool = False) -> None:
        super().__init__()
        self.mask_emails = mask_emails

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name, record.msg) in REPLACED_RECORDS:
            return False
        try:
            self._sanitize(record)
        except Exception:  # a broken record must still not leak: replace it
            record.msg, record.args = "<log record withheld: could not be sanitized>", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True

    def _sanitize(self, record: logging.LogRecord) -> None:
        if getattr(record, "_taatom_sanitized", False):
            # A record reaches one filter per handler: redact once, but mask
            # addresses if this handler wants it and an earlier one did not.
            if self.mask_emails and not getattr(record, "_taatom_masked", False):
                record.msg = redact_text(str(record.msg), mask_emails=True)
                record._taatom_masked = True
            return
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                safe_message_label(a) if isinstance(a, Message | MessageProxy) else a for a in args
            )
        record.msg = redact_text(record.getMessage(), mask_emails=self.mask_emails)
        record.args = ()
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = redact_text(text.rstrip("\n"), mask_emails=self.mask_emails)
            # Formatters (python-json-logger included) re-render exc_info when
            # it is set; only the redacted text may reach them.
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text, mask_emails=self.mask_emails)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, mask_emails=self.mask_emails)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                record.__dict__[key] = redact_text(value, mask_emails=self.mask_emails)
        record._taatom_sanitized = True
        record._taatom_masked = self.mask_emails


# Loggers whose records carry message arguments. A filter on the logger
# object covers the records it creates even where the app, not us, set up
# the handlers (embedded mode inside a web app).
DRAMATIQ_LOGGERS = (
    "dramatiq.worker.WorkerThread",
    "dramatiq.worker.ConsumerThread",
    "dramatiq.broker.RedisBroker",
)


def guard_dramatiq_loggers(*, mask_emails: bool = False) -> None:
    for name in DRAMATIQ_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, SanitizingFilter) for f in target.filters):
            target.addFilter(SanitizingFilter(mask_emails=mask_emails))
