"""Translate any exception into a :class:`JobError` with a registered code.

Third-party errors are translated here, at the boundary, so that every
failure has a code and a retry decision. The table is ordered: the first
matching rule wins; an exception no rule knows is ``SRV_6001`` (retried).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence

import pymongo.errors
import redis.exceptions
from dramatiq.errors import Retry
from dramatiq.middleware.time_limit import TimeLimitExceeded
from pydantic import ValidationError

from .errors import SRV_6001, SRV_6002, SRV_6003, SRV_6005, SRV_6006, VAL_2001, JobError
from .sanitize import redact_text

MAX_MESSAGE_CHARS = 500

Rule = tuple[tuple[type[BaseException], ...], Callable[[BaseException], JobError]]


def _describe(exc: BaseException) -> str:
    """Type and text of an exception, sanitized: what logs and state may show."""
    text = str(exc).strip()
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _validation(exc: BaseException) -> JobError:
    assert isinstance(exc, ValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '(value)'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return JobError(VAL_2001, _bounded(f"validation failed: {'; '.join(problems)}"))


def _smtp_reply(exc: BaseException) -> JobError:
    assert isinstance(exc, smtplib.SMTPResponseException)
    code = exc.smtp_code
    if 400 <= code < 500:
        return JobError(SRV_6003, f"SMTP server answered {code} (temporary): {_reply_text(exc.smtp_error)}")
    return JobError(SRV_6006, f"SMTP server answered {code} (permanent): {_reply_text(exc.smtp_error)}")


def _smtp_recipients(exc: BaseException) -> JobError:
    assert isinstance(exc, smtplib.SMTPRecipientsRefused)
    codes = sorted({code for code, _ in exc.recipients.values()})
    if any(400 <= code < 500 for code in codes):
        return JobError(SRV_6003, f"SMTP server refused recipients for now (replies {codes})")
    return JobError(SRV_6006, f"SMTP server refused every recipient (replies {codes})")


def _reply_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return redact_text(text)[:200]


def _retry_request(exc: BaseException) -> JobError:
    return JobError(SRV_6003, "the job asked to be retried")


def _code(code_entry: object, prefix: str) -> Callable[[BaseException], JobError]:
    def translate(exc: BaseException) -> JobError:
        return JobError(code_entry, _bounded(f"{prefix}: {_describe(exc)}"))  # type: ignore[arg-type]

    return translate


RULES: Sequence[Rule] = (
    ((ValidationError,), _validation),
    ((TimeLimitExceeded,), _code(SRV_6005, "time limit exceeded")),
    ((pymongo.errors.ConnectionFailure,), _code(SRV_6002, "database unavailable")),
    ((pymongo.errors.ExecutionTimeout, pymongo.errors.WTimeoutError), _code(SRV_6002, "database timed out")),
    ((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError), _code(SRV_6003, "Redis unavailable")),
    ((smtplib.SMTPRecipientsRefused,), _smtp_recipients),
    ((smtplib.SMTPResponseException,), _smtp_reply),
    ((smtplib.SMTPServerDisconnected,), _code(SRV_6003, "SMTP server disconnected")),
    ((Retry,), _retry_request),
    # Timeouts, refused or reset connections, DNS failures, TLS handshakes.
    (
        (TimeoutError, socket.timeout, ConnectionError, socket.gaierror, ssl.SSLError),
        _code(SRV_6003, "network"),
    ),
)


def translate(exc: BaseException) -> JobError:
    """The :class:`JobError` for ``exc``: itself, a table match, or ``SRV_6001``."""
    if isinstance(exc, JobError):
        # Job code promises a safe message; hold it to that promise anyway.
        safe = _bounded(redact_text(exc.message))
        return (
            exc
            if safe == exc.message
            else JobError(exc.error_code, safe, retry=exc.retry, details=exc.details)
        )
    for types, rule in RULES:
        if isinstance(exc, types):
            return rule(exc)
    return JobError(SRV_6001, _bounded(f"unexpected error: {_describe(exc)}"))
