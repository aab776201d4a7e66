"""The error-code registry, the translation table and the backoff schedule."""

from __future__ import annotations

import pickle
import smtplib
import socket
import ssl

import pymongo.errors
import pytest
import redis.exceptions
from dramatiq.errors import Retry
from dramatiq.middleware.time_limit import TimeLimitExceeded
from pydantic import BaseModel, ValidationError

from middleware.attempts import backoff_ms
from middleware.errors import JobError, UnknownErrorCode, lookup, register, registry
from middleware.policy import QueuePolicy
from middleware.translate import translate

DESIGN_CODES = {
    "VAL_2001": False,
    "FILE_4001": False,
    "FILE_4004": False,
    "SRV_6001": True,
    "SRV_6002": True,
    "SRV_6003": True,
}


def test_design_codes_are_registered_with_their_retry_flags() -> None:
    assert {code: registry()[code].retried for code in DESIGN_CODES} == DESIGN_CODES
    assert all(entry.meaning for entry in registry().values())


def test_registry_refuses_foreign_families_and_conflicts() -> None:
    with pytest.raises(ValueError, match="VAL_2xxx"):
        register("E_1", "nope", retried=False)
    with pytest.raises(ValueError, match="already registered"):
        register("VAL_2001", "something else", retried=True)
    with pytest.raises(UnknownErrorCode, match="VAL_2001"):
        lookup("SRV_6999")


def test_job_error_carries_code_message_and_retry() -> None:
    err = JobError("SRV_6003", "smtp busy")
    assert (err.code, err.message, err.retry, str(err)) == (
        "SRV_6003",
        "smtp busy",
        True,
        "SRV_6003: smtp busy",
    )
    assert JobError("SRV_6003", "x", retry=False).retry is False
    again = pickle.loads(pickle.dumps(JobError("VAL_2001", "bad", details=[{"field": "to"}])))
    assert (again.code, again.message, again.details) == ("VAL_2001", "bad", [{"field": "to"}])


class _Model(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Model.model_validate({"n": "not a number: secret-ish"})
    except ValidationError as exc:
        return exc
    raise AssertionError


@pytest.mark.parametrize(
    ("exception", "code", "retried"),
    [
        (JobError("FILE_4004", "truncated"), "FILE_4004", False),
        (_validation_error(), "VAL_2001", False),
        (TimeLimitExceeded(), "SRV_6005", True),
        (pymongo.errors.ServerSelectionTimeoutError("no primary"), "SRV_6002", True),
        (pymongo.errors.AutoReconnect("reset"), "SRV_6002", True),
        (pymongo.errors.NetworkTimeout("slow"), "SRV_6002", True),
        (pymongo.errors.ExecutionTimeout("maxTimeMS"), "SRV_6002", True),
        (redis.exceptions.ConnectionError("refused"), "SRV_6003", True),
        (redis.exceptions.TimeoutError("slow"), "SRV_6003", True),
        (smtplib.SMTPResponseException(451, b"4.3.0 try later"), "SRV_6003", True),
        (smtplib.SMTPDataError(452, b"full"), "SRV_6003", True),
        (smtplib.SMTPResponseException(550, b"5.1.1 no such user"), "SRV_6006", False),
        (smtplib.SMTPSenderRefused(553, b"bad sender", "a@b"), "SRV_6006", False),
        (smtplib.SMTPRecipientsRefused({"a@x": (550, b"no"), "b@x": (551, b"no")}), "SRV_6006", False),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"busy")}), "SRV_6003", True),
        (smtplib.SMTPServerDisconnected("gone"), "SRV_6003", True),
        (Retry(), "SRV_6003", True),
        (TimeoutError("read timed out"), "SRV_6003", True),
        (TimeoutError("timed out"), "SRV_6003", True),
        (ConnectionRefusedError(111, "refused"), "SRV_6003", True),
        (ConnectionResetError(104, "reset"), "SRV_6003", True),
        (socket.gaierror(-2, "Name or service not known"), "SRV_6003", True),
        (ssl.SSLError(1, "handshake"), "SRV_6003", True),
        (KeyError("x"), "SRV_6001", True),
        (ZeroDivisionError("division by zero"), "SRV_6001", True),
        (RuntimeError(), "SRV_6001", True),
    ],
)
def test_translation_table(exception: BaseException, code: str, retried: bool) -> None:
    error = translate(exception)
    assert (error.code, error.retry) == (code, retried)
    assert registry()[code].retried is retried
    assert error.message


def test_translated_messages_are_sanitized_and_bounded() -> None:
    error = translate(
        RuntimeError("connect to redis://:hunter2hunter2@db:6379 failed; token=abcdef123456 " + "x" * 900)
    )
    assert "hunter2hunter2" not in error.message and "abcdef123456" not in error.message
    assert len(error.message) <= 500
    assert "secret-ish" not in translate(_validation_error()).message


POLICY = QueuePolicy(
    "q", 1, 5, backoff_min_ms=2000, backoff_max_ms=10_000, backoff_jitter=0.25, time_limit_ms=1
)


@pytest.mark.parametrize(("attempt", "base"), [(1, 2000), (2, 4000), (3, 8000), (4, 10_000), (9, 10_000)])
def test_backoff_is_exponential_capped_and_jittered_upwards(attempt: int, base: int) -> None:
    assert backoff_ms(attempt, POLICY, rng=lambda: 0.0) == base
    assert backoff_ms(attempt, POLICY, rng=lambda: 1.0) == base * 1.25
    assert base <= backoff_ms(attempt, POLICY) <= base * 1.25
