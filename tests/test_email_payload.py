"""The e-mail payload: addresses, header injection, caps, and which code a bad payload gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.mail.addresses import Mailbox, parse_mailbox
from jobs.payloads import MAX_EMAIL_BODY_BYTES, MAX_EMAIL_RECIPIENTS, EmailPayload
from jobs.settings import Settings, SettingsError
from middleware.errors import JobError

BASE: dict[str, Any] = {"to": "ana@example.com", "subject": "Hello", "text": "Body"}


def _refused(**changes: Any) -> JobError:
    payload = {**BASE, **changes}
    with pytest.raises(JobError) as info:
        EmailPayload.parse({k: v for k, v in payload.items() if v is not ...})
    return info.value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ana@example.com", Mailbox("ana@example.com")),
        ("  ana@example.com ", Mailbox("ana@example.com")),
        ("Ana Souza <ana@example.com>", Mailbox("ana@example.com", "Ana Souza")),
        ('"Souza, Ana" <ana@example.com>', Mailbox("ana@example.com", "Souza, Ana")),
        ('"Ana \\"A\\" S" <ana@example.com>', Mailbox("ana@example.com", 'Ana "A" S')),
        ("Zoë Ünal <zoe@example.com>", Mailbox("zoe@example.com", "Zoë Ünal")),
        ("<ana@example.com>", Mailbox("ana@example.com")),
        ("zoe@exämple.com", Mailbox("zoe@xn--exmple-cua.com")),  # IDN domain in punycode
        ("Ana@EXAMPLE.com", Mailbox("Ana@example.com")),  # the domain is case-insensitive, the local part not
    ],
)
def test_mailboxes_are_parsed(value: str, expected: Mailbox) -> None:
    assert parse_mailbox(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "ana",
        "ana@",
        "@example.com",
        "ana@@example.com",
        "ana@example",
        "ana@localhost",
        "ana@host.invalid",
        "ana example@example.com",
        "ánä@example.com",  # an internationalised local part needs SMTPUTF8: refused
        "Ana <ana@example.com",
        "Ana ana@example.com>",
        "A <b> <ana@example.com>",
        "ana@example.com, bob@example.com",
        "x" * 600 + "@example.com",
        "N" * 201 + " <ana@example.com>",
    ],
)
def test_invalid_addresses_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_mailbox(value)
    assert _refused(to=value).code == "VAL_2001"


@pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r", "\t", "\x00", "\x7f", "\x85", "\u2028", "\u2029"])
@pytest.mark.parametrize("field", ["subject", "to", "display name", "cc", "bcc", "reply_to"])
def test_line_breaks_and_controls_in_any_header_are_refused(field: str, breaker: str) -> None:
    injected = f"Bcc: victim@example.com{breaker}"
    cases: dict[str, dict[str, Any]] = {
        "subject": {"subject": f"Hi{breaker}Bcc: victim@example.com"},
        "to": {"to": f"ana@example.com{breaker}{injected}"},
        "display name": {"to": f"Ana{breaker}{injected} <ana@example.com>"},
        "cc": {"cc": ["ok@example.com", f"cc@example.com{breaker}"]},
        "bcc": {"bcc": f"Bob{breaker} <bob@example.com>"},
        "reply_to": {"reply_to": f"Help{breaker}X: y <help@taatom.app>"},
    }
    changes = cases[field]
    error = _refused(**changes)
    assert error.code == "VAL_2001"
    assert error.details[0]["field"] == field.replace("display name", "to")
    assert "victim" not in json.dumps(error.details)


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"to": ...}, "FILE_4001", "to"),
        ({"to": []}, "FILE_4001", "to"),
        ({"to": ""}, "FILE_4001", "to"),
        ({"to": "   "}, "FILE_4001", "to"),
        ({"to": None}, "FILE_4001", "to.str"),
        ({"to": ["ana@example.com", "bad"]}, "VAL_2001", "to"),
        ({"to": 42}, "VAL_2001", "to.str"),
        ({"subject": ""}, "VAL_2001", "subject"),
        ({"subject": "   "}, "VAL_2001", "subject"),
        ({"subject": ...}, "VAL_2001", "subject"),
        ({"subject": "x" * 999}, "VAL_2001", "subject"),
        ({"text": ...}, "VAL_2001", "(payload)"),
        ({"text": "  ", "html": ""}, "VAL_2001", "(payload)"),
        ({"text": "nul\x00byte"}, "VAL_2001", "text"),
        ({"cc": "not-an-address"}, "VAL_2001", "cc"),
        ({"reply_to": ["help@taatom.app"]}, "VAL_2001", "reply_to"),
        ({"idempotency_key": "has space"}, "VAL_2001", "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "VAL_2001", "idempotency_key"),
        ({"priority": "high"}, "VAL_2001", "priority"),
    ],
)
def test_codes_and_fields(changes: dict[str, Any], code: str, field: str) -> None:
    error = _refused(**changes)
    assert (error.code, error.retry) == (code, False)
    assert field in [d["field"] for d in error.details], error.details


def test_recipient_cap_counts_to_cc_and_bcc_together() -> None:
    third = MAX_EMAIL_RECIPIENTS // 3 + 1
    addresses = [f"u{i}@example.com" for i in range(third * 3)]
    error = _refused(to=addresses[:third], cc=addresses[third : 2 * third], bcc=addresses[2 * third :])
    assert error.code == "VAL_2001" and f"at most {MAX_EMAIL_RECIPIENTS} recipients" in error.message
    EmailPayload.parse({**BASE, "to": addresses[:MAX_EMAIL_RECIPIENTS]})
    assert _refused(to=[f"u{i}@example.com" for i in range(MAX_EMAIL_RECIPIENTS + 1)]).code == "VAL_2001"


def test_body_cap_counts_utf8_bytes_of_both_parts() -> None:
    half = "é" * (MAX_EMAIL_BODY_BYTES // 4)  # two bytes each: half the cap per part
    EmailPayload.parse({**BASE, "text": half, "html": half})
    error = _refused(text=half, html=half + "é")
    assert error.code == "VAL_2001" and f"{MAX_EMAIL_BODY_BYTES} bytes" in error.message


def test_valid_payload_keeps_the_shape_the_app_sent() -> None:
    payload = EmailPayload.parse(
        {
            "to": "Ana <ana@example.com>",
            "subject": "Olá ✈",
            "html": "<p>x</p>",
            "cc": "c@example.com",
            "bcc": ["b@example.com"],
            "reply_to": "help@taatom.app",
            "idempotency_key": "otp:user-42:2026-11-28T10:00",
        }
    )
    assert payload.recipients == ["Ana <ana@example.com>"]
    assert payload.to_kwargs() == {
        "to": "Ana <ana@example.com>",
        "subject": "Olá ✈",
        "html": "<p>x</p>",
        "cc": "c@example.com",
        "bcc": ["b@example.com"],
        "reply_to": "help@taatom.app",
        "idempotency_key": "otp:user-42:2026-11-28T10:00",
    }


def test_tls_verification_cannot_be_turned_off_in_production() -> None:
    production = {"APP_ENV": "production", "SMTP_HOST": "smtp.example.com", "MONGO_URL": "mongodb://db"}
    with pytest.raises(SettingsError, match="SMTP_VERIFY_TLS='false': must be true in production"):
        Settings.from_mapping({**production, "SMTP_VERIFY_TLS": "false"})
    assert Settings.from_mapping({**production, "SMTP_CA_FILE": "/etc/ssl/private-ca.pem"}).smtp_verify_tls
    assert Settings.from_mapping({"APP_ENV": "test", "SMTP_VERIFY_TLS": "false"}).smtp_verify_tls is False


def test_bad_email_from_stops_the_process_at_start(tmp_path: Any) -> None:
    from jobs.mail.job import sender_of

    with pytest.raises(SettingsError, match="EMAIL_FROM="):
        sender_of(Settings.from_mapping({"EMAIL_FROM": "Taatom <no-reply>"}))
    assert sender_of(Settings.from_mapping({})) == Mailbox("no-reply@taatom.app", "Taatom")
