"""The one sanitizer: keys, patterns, known secret values; and the log filter applying it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from dramatiq.message import Message
from hypothesis import given
from hypothesis import strategies as st

from jobs.logs import configure_logging
from jobs.settings import Settings
from middleware.sanitize import (
    REDACTED,
    is_secret_key,
    job_secrets,
    mask_email,
    redact,
    redact_text,
    register_secret,
)


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("smtp_password", True),
        ("resetToken", True),
        ("OTP-code", True),
        ("otp", True),
        ("api_key", True),
        ("apiKey", True),
        ("Authorization", True),
        ("cookie", True),
        ("session_id", True),
        ("client_secret", True),
        ("private_key", True),
        ("credentials", True),
        ("sentry_dsn", True),
        ("author", False),
        ("footprint", False),
        ("subject", False),
        ("to", False),
        ("image_url", False),
        ("older_than_days", False),
    ],
)
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ("redis://:hunter2pw@cache:6379/0", "hunter2pw", "redis://:[REDACTED]@cache:6379/0"),
        ("mongodb://app:s3cr3tpw@db:27017/x", "s3cr3tpw", "mongodb://app:[REDACTED]@db"),
        ("Authorization: Bearer abcDEF123456789xyz", "abcDEF123456789xyz", "Authorization: [REDACTED]"),
        ("header bearer abcDEF123456789xyz", "abcDEF123456789xyz", "bearer [REDACTED]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here", "eyJhbGciOiJIUzI1NiJ9", "here"),
        ("password=hunter2 and more", "hunter2", "password=[REDACTED] and more"),
        ('{"otp": "482910"}', "482910", '"otp": "[REDACTED]"'),
        ("reset_token: q8Xz91kd", "q8Xz91kd", "reset_token: [REDACTED]"),
        ("key 0123456789abcdef0123456789abcdef!", "0123456789abcdef0123456789abcdef", "key [REDACTED]!"),
        ("blob dGhpcyBpcyBhIHNlY3JldCBrZXkgb2YgNDAgY2hhcnM0MDQw end", "dGhpcyBpcyBh", "blob [REDACTED] end"),
    ],
)
def test_text_patterns(text: str, gone: str, kept: str) -> None:
    out = redact_text(text)
    assert gone not in out
    assert kept in out


def test_ordinary_text_and_ids_survive() -> None:
    text = "Image processing job 0b6f5c7e-2a9e-4c61-9d2a-8f8a1c3e5b7d took 1234 ms at 2026-01-01T10:00:00Z"
    assert redact_text(text) == text


def test_registered_and_job_secrets_are_redacted_by_value() -> None:
    register_secret("settings-secret-771")
    with job_secrets(["arg-secret-552", {"nested": ["deep-secret-993"]}, 12, "short"]):
        out = redact_text("a settings-secret-771 b arg-secret-552 c deep-secret-993 d short")
    assert out == f"a {REDACTED} b {REDACTED} c {REDACTED} d short"
    # outside the job, its secrets are ordinary text again
    assert redact_text("arg-secret-552") == "arg-secret-552"


def test_redact_data_by_key_and_extra_keys() -> None:
    data = {
        "to": "ana@example.com",
        "subject": "Your code",
        "password": "pw",
        "nested": {"apiKey": "k", "list": [{"token": "t"}, "redis://:pw1234@h/0"]},
        "html": "<p>418203</p>",
        "empty_password": "",
    }
    out = redact(data, extra_keys={"html", "subject"})
    assert out["password"] == REDACTED and out["nested"]["apiKey"] == REDACTED
    assert out["nested"]["list"][0]["token"] == REDACTED
    assert out["nested"]["list"][1] == "redis://:[REDACTED]@h/0"
    assert out["html"] == REDACTED and out["subject"] == REDACTED
    assert out["to"] == "ana@example.com"
    assert data["password"] == "pw"  # a copy, the input is untouched


def test_mask_email() -> None:
    assert mask_email("ana.maria@example.com") == "a***@example.com"
    assert (
        redact_text("to ana@example.com and bo@x.org", mask_emails=True)
        == "to a***@example.com and b***@x.org"
    )


@given(
    secret=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=40
    ),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_any_job_secret_is_gone_wherever_it_stands(secret: str, before: str, after: str) -> None:
    with job_secrets([secret]):
        assert secret not in redact_text(before + secret + after)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_filter_covers_message_args_exceptions_and_extras(captured: io.StringIO, fmt: str) -> None:
    configure_logging(Settings.from_mapping({"LOG_FORMAT": fmt, "LOG_LEVEL": "DEBUG"}), captured)
    message = Message(
        queue_name="email", actor_name="send_email", args=(), kwargs={"text": "otp 556677"}, options={}
    )
    log = logging.getLogger("dramatiq.worker.WorkerThread")
    log.debug("Received message %s with id %r.", message, message.message_id)
    try:
        raise RuntimeError("connect redis://:pw-in-exc-123@h failed")
    except RuntimeError:
        logging.getLogger("jobs.x").exception("boom password=hunter22", extra={"detail": "token=abcd1234"})
    out = captured.getvalue()
    for leaked in ("556677", "pw-in-exc-123", "hunter22", "abcd1234"):
        assert leaked not in out
    assert f"send_email[{message.message_id}]" in out
    assert "RuntimeError" in out  # the traceback is kept, redacted
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines()]
        assert "exc_info" in records[1] and "Traceback" in records[1]["exc_info"]


def test_dramatiq_failure_line_is_replaced(captured: io.StringIO) -> None:
    configure_logging(Settings.from_mapping({}), captured)
    logging.getLogger("dramatiq.worker.WorkerThread").error(
        "Failed to process message %s with unhandled exception.", "x"
    )
    assert captured.getvalue() == ""


def test_production_logs_mask_addresses(captured: io.StringIO) -> None:
    settings = Settings.from_mapping(
        {"APP_ENV": "production", "SMTP_HOST": "smtp", "MONGO_URL": "mongodb://db"}
    )
    configure_logging(settings, captured)
    logging.getLogger("jobs.email").info("Processing email job 1 to %s", "ana@example.com")
    assert "a***@example.com" in captured.getvalue() and "ana@example.com" not in captured.getvalue()


def test_results_keep_hashes_and_ids_but_not_credentials() -> None:
    digest = "3f" * 32
    result = {"processed_url": f"https://cdn.example/i/{digest}.jpg", "source": "redis://:hunter2pw@cache/0"}
    kept = redact(result, opaque=False)
    assert kept["processed_url"] == result["processed_url"]
    assert kept["source"] == "redis://:[REDACTED]@cache/0"
    # in free text (logs, errors) the same hash is treated as a possible key
    assert digest not in redact_text(f"key {digest}")


def test_long_paths_with_digits_are_not_taken_for_tokens() -> None:
    path = "/tmp/pytest-of-root/pytest-43/test_outbox0/outbox/20261128T135912Z.3f4db894-1e9c.eml"
    assert redact_text(f"wrote {path}") == f"wrote {path}"
    fernet_like = "gAAAAABrCtAUoW0Q5j-aoCA3VFt1cMtnT1KwFUPt4GrPxMPkaO8yQyD"
    assert fernet_like not in redact_text(f"token {fernet_like}")
