"""One sanitizer for every sink: logs, stored errors and state, Sentry, pages.

It redacts three ways:

* by key: a mapping value whose key names a secret (``password``,
  ``resetToken``, ``otp_code``, ``Authorization``, Sentry's default deny list
  and a few more) is replaced whole;
* by pattern: bearer/basic credentials, JWTs, passwords inside URLs,
  ``password=...`` pairs and long hex/base64 strings in free text;
* by value: literal secrets the process knows — passwords and keys from the
  settings, and the sensitive arguments of the job being processed (held in a
  context variable, so an exception message that echoes an OTP is caught even
  though nothing about it looks secret).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sentry_sdk.scrubber import DEFAULT_DENYLIST

REDACTED = "[REDACTED]"

# Shortest literal secret we redact by value: shorter ones would shred
# ordinary text ("ok", "1234" inside timestamps) without protecting much.
MIN_SECRET_LENGTH = 6

_norm = re.compile(r"[^a-z0-9]+")
_camel = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_DENY_KEYS = frozenset(_norm.sub("_", k.lower()).strip("_") for k in DEFAULT_DENYLIST) | {
    "password_hash",
    "access_key",
    "secret_key",
    "client_secret",
    "refresh_token",
    "access_token",
    "id_token",
    "reset_token",
    "otp",
    "pin",
    "dsn",
    "encryption_key",
}
# A key is secret when any of its words is one of these (so `resetToken`,
# `smtp_password`, `OTP-code` all match while `author` does not).
_DENY_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "auth",
        "authorization",
        "cookie",
        "session",
        "sessionid",
        "credential",
        "credentials",
        "apikey",
        "otp",
        "privatekey",
        "dsn",
        "csrf",
        "xsrf",
    }
)

_SECRET_WORDS = (
    r"pass(?:word|wd)?|pwd|secret|token|api[_-]?key|otp|auth(?:orization)?|credentials?|private[_-]?key"  # noqa: S105
)
_TEXT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host -> keep the user, drop the password
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*):([^\s/@]+)@"), r"\1:" + REDACTED + "@"),
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"), REDACTED),
    # password=..., "token": "...", otp: 123456
    (
        re.compile(
            r"(?i)\b((?:[a-z0-9_-]*?)(?:" + _SECRET_WORDS + r"))([\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]+)"
        ),
        r"\1\2" + REDACTED,
    ),
]
# Strings that look like keys or tokens. In free text (logs, errors) they are
# redacted; in data our own jobs return (content hashes in URLs, ids) they are
# expected, so results skip these two.
_OPAQUE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), REDACTED),
    (
        re.compile(
            # no "/" in the class: long file paths with digits are not tokens
            r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+_-]*\d)(?=[A-Za-z0-9+_-]*[A-Za-z])[A-Za-z0-9+_-]{40,}={0,2}"
        ),
        REDACTED,
    ),
]
_EMAIL = re.compile(r"\b([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")

_known_secrets: set[str] = set()
_known_lock = threading.Lock()
_job_secrets: ContextVar[tuple[str, ...]] = ContextVar("taatom_job_secrets", default=())


def register_secret(value: str | None) -> None:
    """Remember a literal secret (a password from settings) for every sink of this process."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _known_lock:
            _known_secrets.add(value)


@contextmanager
def job_secrets(values: Iterable[Any]) -> Iterator[None]:
    """Treat these values as secrets in everything sanitized inside the block."""
    token = _job_secrets.set(tuple(_literal_secrets(values)))
    try:
        yield
    finally:
        _job_secrets.reset(token)


def set_job_secrets(values: Iterable[Any]) -> object:
    """Non-context-manager form for middleware hooks; pass the result to :func:`reset_job_secrets`."""
    return _job_secrets.set(tuple(_literal_secrets(values)))


def reset_job_secrets(token: object) -> None:
    _job_secrets.reset(token)  # type: ignore[arg-type]


def add_job_secrets(values: Iterable[Any]) -> None:
    """Add to the current job's secrets (e.g. arguments just decrypted)."""
    _job_secrets.set((*_job_secrets.get(), *_literal_secrets(values)))


def clear_job_secrets() -> None:
    _job_secrets.set(())


def _literal_secrets(values: Iterable[Any]) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            if len(value) >= MIN_SECRET_LENGTH:
                yield value
        elif isinstance(value, Mapping):
            yield from _literal_secrets(value.values())
        elif isinstance(value, list | tuple | set):
            yield from _literal_secrets(value)


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


# The same few names (payload fields, result keys) come by for every job; the
# lists are fixed, so each name is judged once (two regex passes, ~1 us).
@functools.lru_cache(maxsize=4096)
def _is_secret_name(key: str) -> bool:
    flat = _norm.sub("_", key.lower()).strip("_")
    if flat in _DENY_KEYS:
        return True
    words = _norm.split(_camel.sub("_", key).lower())
    return any(w in _DENY_WORDS for w in words)


def redact_text(text: str, *, mask_emails: bool = False, opaque: bool = True) -> str:
    """Remove every secret this process can recognise from free text.

    ``opaque=False`` keeps long hex/base64 strings (content hashes, ids in the
    data our jobs return) while still removing credentials and known secrets.
    """
    if not text:
        return text
    secrets = _job_secrets.get()
    if _known_secrets or secrets:
        with _known_lock:
            literals = [*_known_secrets, *secrets]
        # Longest first, so a secret containing another is removed whole.
        for literal in sorted(literals, key=len, reverse=True):
            if literal in text:
                text = text.replace(literal, REDACTED)
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    if opaque:
        for pattern, replacement in _OPAQUE_PATTERNS:
            text = pattern.sub(replacement, text)
    if mask_emails:
        text = _EMAIL.sub(r"\1***@\2", text)
    return text


def mask_email(address: str) -> str:
    """``user@example.com`` -> ``u***@example.com`` (for production logs)."""
    return _EMAIL.sub(r"\1***@\2", address)


def redact(
    data: Any, *, extra_keys: Iterable[str] = (), mask_emails: bool = False, opaque: bool = True
) -> Any:
    """Return a copy of JSON-like data with secret keys and secret text redacted.

    ``extra_keys`` names more keys to redact whole (an actor's sensitive
    arguments, such as an e-mail's ``html``).
    """
    extra = frozenset(extra_keys)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value, mask_emails=mask_emails, opaque=opaque)
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if (k in extra or is_secret_key(k)) and v not in (None, "") else walk(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, bytes | bytearray):
            return f"<{len(value)} bytes>"
        return value

    return walk(data)
