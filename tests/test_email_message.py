"""Message building and the plain text derived from HTML (no services: pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jobs.mail.addresses import Mailbox
from jobs.mail.html_text import html_to_text
from jobs.mail.message import OutgoingEmail, build_email, message_token
from jobs.payloads import EmailPayload
from tests.support.mail import parse

SENDER = Mailbox("no-reply@taatom.app", "Taatom")
WHEN = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)


def _build(token: str = "job-1", **kwargs: Any) -> OutgoingEmail:
    payload = EmailPayload.parse({"to": "ana@example.com", "subject": "Hi", **kwargs})
    return build_email(payload, sender=SENDER, token=token, date=WHEN)


def test_text_only_is_a_single_plain_part() -> None:
    email = _build(text="Your code is 418203.")
    msg = parse(email.as_bytes())
    assert msg.get_content_type() == "text/plain"
    assert not msg.is_multipart()
    assert msg.get_content().replace("\r\n", "\n") == "Your code is 418203.\n"
    assert msg["Date"].datetime == WHEN


def test_both_parts_make_an_alternative_with_html_last() -> None:
    msg = parse(_build(text="plain", html="<p>rich</p>").as_bytes())
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_bytes_are_7bit_crlf_and_utf8_survives() -> None:
    email = _build(
        to=["Zoë Ünal <zoe@exämple.com>"],
        subject="Código de acesso — ✈ " + "longo " * 30,
        text="Olá, Zoë! " + "é" * 200,
    )
    raw = email.as_bytes()
    assert raw.isascii()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert msg["Subject"] == "Código de acesso — ✈ " + "longo " * 29 + "longo "
    assert msg["To"].addresses[0].display_name == "Zoë Ünal"
    assert msg["To"].addresses[0].addr_spec == "zoe@xn--exmple-cua.com"
    assert msg.get_content().replace("\r\n", "\n") == "Olá, Zoë! " + "é" * 200 + "\n"


def test_message_id_comes_from_the_job_and_the_sender_domain() -> None:
    first, again = _build(token="3f2c-job", text="x"), _build(token="3f2c-job", text="x")
    assert first.message_id == again.message_id == "<3f2c-job@taatom.app>"
    assert parse(first.as_bytes())["Message-ID"] == "<3f2c-job@taatom.app>"
    assert _build(token="other", text="x").message_id != first.message_id


def test_idempotency_key_token_is_a_digest_shared_by_jobs_with_that_key() -> None:
    key = "reset:ana@example.com"
    token = message_token("job-a", key)
    assert token == message_token("job-b", key) != message_token("job-b", "reset:bob@example.com")
    assert token.startswith("k") and len(token) == 33 and "ana" not in token
    assert message_token("job-a", None) == "job-a"


def test_envelope_has_every_recipient_once_and_no_bcc_header() -> None:
    email = _build(
        text="x",
        to=["ana@example.com", "Ana Again <ANA@example.com>"],
        cc=["Carla <carla@example.com>"],
        bcc=["audit@example.com", "Ana@Example.com"],
    )
    assert email.envelope_from == "no-reply@taatom.app"
    # one RCPT per mailbox, matched case-insensitively; the first spelling is kept
    assert email.envelope_to == ("ana@example.com", "carla@example.com", "audit@example.com")
    msg = parse(email.as_bytes())
    assert msg["Bcc"] is None and b"audit@example.com" not in email.as_bytes()
    assert msg["Cc"] == "Carla <carla@example.com>"
    assert msg["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hello</p><p>World</p>", "Hello\n\nWorld\n"),
        ("Line one<br>Line two", "Line one\nLine two\n"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two\n"),
        (
            'Reset: <a href="https://taatom.app/r?t=abc&amp;u=1">here</a>',
            "Reset: here (https://taatom.app/r?t=abc&u=1)\n",
        ),
        ('<a href="https://taatom.app/x">https://taatom.app/x</a>', "https://taatom.app/x\n"),
        ('<a href="mailto:help@taatom.app">write to us</a>', "write to us (help@taatom.app)\n"),
        ('<a href="javascript:alert(1)">click</a>', "click\n"),
        ("<head><title>T</title><style>p{}</style></head><p>Body</p><script>x()</script>", "Body\n"),
        ("<p>Tom &amp; Jerry&nbsp;&lt;3 &#x2708;</p>", "Tom & Jerry <3 ✈\n"),
        ("<p>  lots   of\n\n  space </p>", "lots of space\n"),
        ("<pre>a  b\n  c</pre>", "a  b\n  c\n"),
        ('<img src="logo.png" alt="Taatom"><h1>Welcome</h1>', "Taatom\n\nWelcome\n"),
        ("<table><tr><td>Code</td><td>418203</td></tr></table>", "Code 418203\n"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_html_only_email_gets_the_derived_text() -> None:
    msg = parse(_build(html="<h1>Reset</h1><p><a href='https://taatom.app/r'>Reset it</a></p>").as_bytes())
    plain, rich = msg.iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == "Reset\n\nReset it (https://taatom.app/r)\n"
    assert rich.get_content_type() == "text/html"


def test_blank_text_next_to_html_is_replaced_by_the_derived_text() -> None:
    plain, _ = parse(_build(html="<p>Hi</p>", text="   ").as_bytes()).iter_parts()
    assert plain.get_content().strip() == "Hi"
