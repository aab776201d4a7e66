"""The error-code registry and the one exception type jobs fail with.

Every failure of a job carries a registered code. The registry says what the
code means and whether a job failing with it is retried; the app, the logs,
the job state, the dead letters and Sentry all show the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq.middleware import MiddlewareError
from redis.sentinel import MasterNotFoundError

_CODE_PATTERN = re.compile(r"^(VAL_2|FILE_4|SRV_6)\d{3}$")


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    meaning: str
    retried: bool

    def __str__(self) -> str:
        return self.code


_REGISTRY: dict[str, ErrorCode] = {}


def register(code: str, meaning: str, *, retried: bool) -> ErrorCode:
    """Add a code to the registry; codes stay in the VAL_2xxx, FILE_4xxx and SRV_6xxx families."""
    if not _CODE_PATTERN.match(code):
        raise ValueError(f"error code {code!r} is not of the form VAL_2xxx, FILE_4xxx or SRV_6xxx")
    existing = _REGISTRY.get(code)
    entry = ErrorCode(code, meaning, retried)
    if existing is not None and existing != entry:
        raise ValueError(f"error code {code} is already registered as {existing.meaning!r}")
    _REGISTRY[code] = entry
    return entry


def lookup(code: str) -> ErrorCode:
    """Return the registered code, or raise LookupError naming the known ones."""
    try:
        return _REGISTRY[code]
    except KeyError:
        raise UnknownErrorCode(code) from None


def registry() -> Mapping[str, ErrorCode]:
    return dict(_REGISTRY)


class UnknownErrorCode(LookupError):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"{code!r} is not a registered error code; known: {', '.join(sorted(_REGISTRY))}")


# The codes of DESIGN.md.
VAL_2001 = register("VAL_2001", "validation failed (payload, URL not allowed, bad range)", retried=False)
FILE_4001 = register("FILE_4001", "required file or data missing (e.g. no recipient)", retried=False)
FILE_4004 = register(
    "FILE_4004", "file upload or processing failed (undecodable, truncated, bomb, unsupported)", retried=False
)
SRV_6001 = register("SRV_6001", "internal error (unexpected exception)", retried=True)
SRV_6002 = register("SRV_6002", "database connection error", retried=True)
SRV_6003 = register(
    "SRV_6003", "service temporarily unavailable (SMTP 4xx, HTTP 5xx, timeouts, Redis)", retried=True
)
# Ours, in the same families.
VAL_2002 = register(
    "VAL_2002", "message arguments could not be decrypted (wrong or retired key)", retried=False
)
VAL_2003 = register("VAL_2003", "message could not be decoded or names no known actor", retried=False)
SRV_6004 = register("SRV_6004", "job logic not available in this build", retried=False)
SRV_6005 = register("SRV_6005", "time limit exceeded", retried=True)
SRV_6006 = register(
    "SRV_6006", "remote service refused the request permanently (e.g. SMTP 5xx reply)", retried=False
)


class JobError(Exception):
    """A job failure with a registered code and a message safe to show anywhere.

    Parameters:
      code: a registered code (or its string form).
      message: what went wrong, without secrets: it is logged, stored and shown.
      retry: overrides the code's retry flag for this one failure.
      details: extra safe facts (e.g. which payload fields are wrong).
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        retry: bool | None = None,
        details: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.error_code = code if isinstance(code, ErrorCode) else lookup(code)
        self.message = message
        self.retry = self.error_code.retried if retry is None else retry
        self.details = list(details or [])
        super().__init__(f"{self.error_code.code}: {message}")

    @property
    def code(self) -> str:
        return self.error_code.code

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable across process boundaries.
        return (_rebuild_job_error, (self.code, self.message, self.retry, self.details))


class MessageRejected(JobError, MiddlewareError):
    """A JobError raised from a middleware ``before_*`` hook.

    Dramatiq swallows other exceptions raised in those hooks (it logs them and
    carries on); a MiddlewareError propagates, so the message fails with its code.
    """


class EnqueueFailed(JobError):
    """Redis did not take a message (``SRV_6003``): the send may be tried again, with
    backoff and a ``unique_key`` (a send that timed out may still have landed).

    Each subclass is also the redis-py error it stands for, so code that
    catches ``redis.ConnectionError``, ``redis.TimeoutError`` or Sentinel's
    ``MasterNotFoundError`` keeps working.
    """


class EnqueueUnavailable(EnqueueFailed, redis.ConnectionError):
    pass


class EnqueueTimedOut(EnqueueFailed, redis.TimeoutError):
    pass


class EnqueueNoMaster(EnqueueFailed, MasterNotFoundError):
    pass


def enqueue_failed(exc: redis.ConnectionError | redis.TimeoutError) -> EnqueueFailed:
    """The :class:`EnqueueFailed` for a redis-py error raised while enqueueing."""
    if isinstance(exc, MasterNotFoundError):
        return EnqueueNoMaster(SRV_6003, f"no Redis master to enqueue to ({type(exc).__name__})")
    if isinstance(exc, redis.TimeoutError):
        return EnqueueTimedOut(SRV_6003, f"Redis did not answer the enqueue in time ({type(exc).__name__})")
    return EnqueueUnavailable(SRV_6003, f"Redis could not be reached to enqueue ({type(exc).__name__})")


def _rebuild_job_error(code: str, message: str, retry: bool, details: list[Mapping[str, Any]]) -> JobError:
    return JobError(code, message, retry=retry, details=details)
