"""send_email end to end: embedded stack, real aiosmtpd servers, the e-mail log in SecantusDB."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.message import Message
from pymongo import MongoClient
from pymongo.database import Database

from middleware.errors import JobError
from tests.conftest import Stack
from tests.services.mongo import temporary_database
from tests.services.smtp import SMTP_AUTH_PASSWORD, SMTP_AUTH_USER, SMTPTestServer
from tests.support.mail import MailServer, StackFactory, email_log_lines, parse, running_mail_server
from tests.support.redis_inspect import dead_letters, wait_until

OTP = "Your code is 418203."
Document = dict[str, Any]


@pytest.fixture(scope="module")
def email_db(mongo_client: MongoClient[Document]) -> Iterator[Database[Document]]:
    with temporary_database(mongo_client) as db:
        yield db


@pytest.fixture(scope="module")
def stacks(
    mongo_url: str, email_db: Database[Document], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackFactory]:
    factory = StackFactory(mongo_url, email_db.name, tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[MailServer]:
    with running_mail_server() as server:
        yield server


@pytest.fixture
def mail_server(shared_server: MailServer) -> MailServer:
    """The module's plain server, with nothing recorded or scripted."""
    shared_server.clear()
    return shared_server


@pytest.fixture(scope="module")
def stack(stacks: StackFactory, shared_server: MailServer) -> Stack:
    """One stack for every test whose settings are the plain server's."""
    return stacks(shared_server)


def _history(stack: Stack, job: str) -> list[str]:
    """The job's states, without ``queued`` (when that one is written is the job state's business)."""
    status = stack.api.status(job)
    assert status is not None
    return [h["state"] for h in status["history"] if h["state"] != "queued"]


def test_delivers_both_parts_with_utf8_headers(stack: Stack, mail_server: MailServer) -> None:
    job = stack.actors.send_email.send(
        to=["Zoë Martins <zoe@example.com>", "bob@example.com"],
        cc="Carla <carla@example.com>",
        bcc=["audit@example.com"],
        reply_to="Suporte Taatom <help@taatom.app>",
        subject="Seu código Taatom — 418203 ✈",
        text=OTP,
        html="<p>Your code is <b>418203</b>.</p>",
    ).message_id
    result = stack.api.result(job, timeout=15)
    [received] = mail_server.messages
    assert result == {
        "success": True,
        "message_id": f"<{job}@taatom.app>",
        "transport": "smtp",
        "smtp_code": 250,
        "accepted": 4,
        "refused": [],
        "already_sent": False,
    }
    assert received.mail_from == "no-reply@taatom.app"
    assert set(received.rcpt_tos) == {
        "zoe@example.com",
        "bob@example.com",
        "carla@example.com",
        "audit@example.com",
    }
    assert received.content.isascii()  # 7-bit clean: encoded words and quoted-printable
    msg = received.parsed()
    assert msg["Subject"] == "Seu código Taatom — 418203 ✈"
    assert msg["To"].addresses[0].display_name == "Zoë Martins"
    assert [a.addr_spec for a in msg["To"].addresses] == ["zoe@example.com", "bob@example.com"]
    assert msg["Cc"] == "Carla <carla@example.com>"
    assert msg["Bcc"] is None  # on the envelope only
    assert msg["Reply-To"] == "Suporte Taatom <help@taatom.app>"
    assert msg["From"] == "Taatom <no-reply@taatom.app>"
    assert msg["Message-ID"] == f"<{job}@taatom.app>"
    assert msg["Date"].datetime is not None and msg["Date"].datetime.tzinfo is not None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.iter_parts()
    assert (plain.get_content_type(), plain.get_content().strip()) == ("text/plain", OTP)
    assert (html.get_content_type(), html.get_content().strip()) == (
        "text/html",
        "<p>Your code is <b>418203</b>.</p>",
    )


def test_html_only_gets_a_derived_text_part(stack: Stack, mail_server: MailServer) -> None:
    html = '<h1>Reset</h1><p>Click <a href="https://taatom.app/r/abc">here</a>.</p>'
    stack.api.result(
        stack.actors.send_email.send(to="ana@example.com", subject="Reset", html=html).message_id, 15
    )
    plain, rich = mail_server.messages[0].parsed().iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == "Reset\n\nClick here (https://taatom.app/r/abc).\n"
    assert rich.get_content().strip() == html


@pytest.mark.parametrize("flavour", ["starttls", "ssl"])
def test_tls_servers_with_a_verified_test_ca(
    request: pytest.FixtureRequest, stacks: StackFactory, flavour: str
) -> None:
    server: SMTPTestServer = request.getfixturevalue(f"smtp_{flavour}_server")
    stack = stacks(server)  # SMTP_CA_FILE names the test CA: verification stays on
    assert stack.settings.smtp_verify_tls is True
    job = stack.actors.send_email.send(to="ana@example.com", subject="TLS", text=OTP).message_id
    assert stack.api.result(job, timeout=15)["smtp_code"] == 250
    [received] = server.messages
    assert received.tls is True


def test_starttls_without_verification_for_tests(
    stacks: StackFactory, smtp_starttls_server: SMTPTestServer
) -> None:
    stack = stacks(smtp_starttls_server, SMTP_CA_FILE="", SMTP_VERIFY_TLS="false")
    job = stack.actors.send_email.send(to="ana@example.com", subject="TLS", text=OTP).message_id
    assert stack.api.result(job, timeout=15)["success"] is True
    assert smtp_starttls_server.messages[0].tls is True


def test_unverifiable_certificate_is_refused(
    stacks: StackFactory, smtp_starttls_server: SMTPTestServer
) -> None:
    stack = stacks(smtp_starttls_server, SMTP_CA_FILE="", EMAIL_MAX_ATTEMPTS="1")
    job = stack.actors.send_email.send(to="ana@example.com", subject="TLS", text=OTP).message_id
    with pytest.raises(JobError, match="CERTIFICATE_VERIFY_FAILED") as info:
        stack.api.result(job, timeout=15)
    assert info.value.code == "SRV_6003"
    assert smtp_starttls_server.messages == []


def test_auth_with_good_credentials(stacks: StackFactory, smtp_auth_server: SMTPTestServer) -> None:
    stack = stacks(smtp_auth_server, SMTP_USER=SMTP_AUTH_USER, SMTP_PASSWORD=SMTP_AUTH_PASSWORD)
    job = stack.actors.send_email.send(to="ana@example.com", subject="Auth", text=OTP).message_id
    assert stack.api.result(job, timeout=15)["success"] is True
    assert smtp_auth_server.messages[0].auth_login == SMTP_AUTH_USER


def test_auth_with_bad_credentials_fails_once_permanently(
    stacks: StackFactory, smtp_auth_server: SMTPTestServer
) -> None:
    stack = stacks(smtp_auth_server, SMTP_USER=SMTP_AUTH_USER, SMTP_PASSWORD="wrong-password-123")
    job = stack.actors.send_email.send(to="ana@example.com", subject="Auth", text=OTP).message_id
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=15)
    assert info.value.code == "SRV_6006" and "535" in info.value.message
    assert "wrong-password-123" not in info.value.message
    assert stack.api.status(job)["attempts"] == 1  # type: ignore[index]
    assert smtp_auth_server.messages == []
    assert smtp_auth_server.connections == 1


def test_temporary_refusal_is_retried_and_delivered_once(stack: Stack, mail_server: MailServer) -> None:
    mail_server.script_replies([451])
    job = stack.actors.send_email.send(to="ana@example.com", subject="Code", text=OTP).message_id
    assert stack.api.result(job, timeout=15)["smtp_code"] == 250
    assert _history(stack, job) == ["running", "retrying", "running", "succeeded"]
    assert [r.reply.split()[0] for r in mail_server.rejected] == ["451"]
    [delivered] = mail_server.messages
    refused_attempt, accepted_attempt = mail_server.data_contents
    # The same Message-ID on both attempts: a receiver holding both can drop one.
    assert (
        parse(refused_attempt)["Message-ID"] == parse(accepted_attempt)["Message-ID"] == f"<{job}@taatom.app>"
    )
    assert delivered.parsed()["Message-ID"] == f"<{job}@taatom.app>"


def test_permanent_refusal_is_attempted_once_and_dead_lettered(stack: Stack, mail_server: MailServer) -> None:
    mail_server.always_reply(550)
    job = stack.actors.send_email.send(to="ana@example.com", subject="Code", text=OTP).message_id
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=15)
    assert info.value.code == "SRV_6006" and "550" in info.value.message
    assert wait_until(lambda: _history(stack, job)[-1] == "dead", timeout=10)
    letters = dead_letters(stack.broker.client, stack.broker.namespace, "email")
    [letter] = [m for m in letters if m["message_id"] == job]
    assert letter["options"]["error_code"] == "SRV_6006"
    assert stack.api.status(job)["attempts"] == 1  # type: ignore[index]
    assert len(mail_server.rejected) == 1 and mail_server.messages == []


def test_some_recipients_refused_is_reported_in_the_result(stack: Stack, mail_server: MailServer) -> None:
    mail_server.reject_recipient("gone@example.com", 550)
    job = stack.actors.send_email.send(
        to=["ana@example.com", "gone@example.com"], subject="Hi", text="x"
    ).message_id
    result = stack.api.result(job, timeout=15)
    assert result["accepted"] == 1
    assert result["refused"] == [{"address": "gone@example.com", "code": 550, "reply": "5.1.1 No such user"}]
    assert mail_server.messages[0].rcpt_tos == ("ana@example.com",)


def test_every_recipient_refused_is_permanent(stack: Stack, mail_server: MailServer) -> None:
    mail_server.reject_recipient("gone@example.com", 550)
    job = stack.actors.send_email.send(to="gone@example.com", subject="Hi", text="x").message_id
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=15)
    assert info.value.code == "SRV_6006"
    assert stack.api.status(job)["attempts"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": "Hello\r\nBcc: victim@example.com"},
        {"subject": "Hello\nX-Injected: 1"},
        {"to": "Ana\r\nBcc: victim@example.com <ana@example.com>"},
        {"to": "ana@example.com\r\nBcc: victim@example.com"},
        {"cc": ["Ana <ana@example.com>\nBcc: victim@example.com"]},
        {"reply_to": "Help\u2028Bcc: victim@example.com <help@taatom.app>"},
    ],
    ids=["crlf-subject", "lf-subject", "display-name", "address", "cc", "unicode-line-separator"],
)
def test_header_injection_is_refused_and_nothing_is_sent(
    stack: Stack, mail_server: MailServer, kwargs: dict[str, object]
) -> None:
    payload: dict[str, object] = {"to": "ana@example.com", "subject": "Hello", "text": "x", **kwargs}
    with pytest.raises(JobError) as info:
        stack.actors.send_email.send(**payload)
    assert info.value.code == "VAL_2001"
    # ...and a message forged past send() is refused by the worker the same way.
    forged: Message[Any] = Message(
        queue_name="email", actor_name="send_email", args=(), kwargs=payload, options={}
    )
    stack.broker.enqueue(forged)
    with pytest.raises(JobError) as worker_info:
        stack.api.result(forged.message_id, timeout=15)
    assert worker_info.value.code == "VAL_2001"
    assert mail_server.connections == 0 and mail_server.messages == []


def test_redelivery_after_a_crash_before_the_ack_sends_nothing(
    stack: Stack, mail_server: MailServer, email_db: Database[Document]
) -> None:
    """The worker died after the server's 250 and before acknowledging: the broker delivers again."""
    message = stack.actors.send_email.send(to="ana@example.com", subject="Code", text=OTP)
    first = stack.api.result(message.message_id, timeout=15)
    stack.broker.enqueue(message)  # the same message, as a redelivery brings it back
    assert wait_until(lambda: _history(stack, message.message_id).count("succeeded") == 2, timeout=15)
    again = stack.api.result(message.message_id, timeout=5)
    assert again == {**first, "already_sent": True}
    assert len(mail_server.messages) == 1
    entry = email_db["email_log"].find_one({"_id": f"job:{message.message_id}"})
    assert entry is not None and entry["state"] == "sent" and entry["smtp_code"] == 250
    assert "subject" not in entry and "text" not in entry and OTP not in str(entry)


def test_same_idempotency_key_sends_once(stack: Stack, mail_server: MailServer) -> None:
    send = stack.actors.send_email.send
    first = send(to="ana@example.com", subject="Reset", text="link", idempotency_key="reset:42").message_id
    r1 = stack.api.result(first, timeout=15)
    second = send(to="ana@example.com", subject="Reset", text="link", idempotency_key="reset:42").message_id
    r2 = stack.api.result(second, timeout=15)
    assert len(mail_server.messages) == 1
    assert r2 == {**r1, "already_sent": True}
    assert r1["message_id"] == mail_server.messages[0].parsed()["Message-ID"]


def test_lost_reply_is_sent_again_with_the_same_message_id(stack: Stack, mail_server: MailServer) -> None:
    """The remaining window (docs/email.md): the server took the message but its 250 never arrived."""
    mail_server.drop_after_accepting(1)
    job = stack.actors.send_email.send(to="ana@example.com", subject="Code", text=OTP).message_id
    assert stack.api.result(job, timeout=15)["success"] is True
    assert "retrying" in _history(stack, job)
    first, second = mail_server.messages
    assert first.parsed()["Message-ID"] == second.parsed()["Message-ID"] == f"<{job}@taatom.app>"


@pytest.fixture(scope="module")
def one_thread_stack(stacks: StackFactory, shared_server: MailServer) -> Stack:
    return stacks(shared_server, EMBEDDED_WORKER_THREADS="1")


def test_one_worker_thread_reuses_its_connection(one_thread_stack: Stack, mail_server: MailServer) -> None:
    stack = one_thread_stack
    jobs = [
        stack.actors.send_email.send(to=f"user{i}@example.com", subject=f"Code {i}", text=OTP).message_id
        for i in range(200)
    ]
    for job in jobs:
        assert stack.api.result(job, timeout=30)["success"] is True
    assert len(mail_server.messages) == 200
    assert mail_server.connections <= 2, mail_server.connections


def test_reconnects_when_the_server_dropped_the_connection(
    one_thread_stack: Stack, mail_server: MailServer
) -> None:
    stack = one_thread_stack
    first = stack.actors.send_email.send(to="ana@example.com", subject="1", text="x").message_id
    stack.api.result(first, timeout=15)
    opened = mail_server.connections  # 0 if the thread kept one from an earlier test
    mail_server.drop_connections()
    second = stack.actors.send_email.send(to="ana@example.com", subject="2", text="x").message_id
    stack.api.result(second, timeout=15)
    assert _history(stack, second) == ["running", "succeeded"]  # no retry was needed
    assert len(mail_server.messages) == 2 and mail_server.connections == opened + 1


def test_log_lines(stack: Stack, mail_server: MailServer) -> None:
    with email_log_lines() as lines:
        job = stack.actors.send_email.send(
            to=["ana.souza@example.com", "bob@example.com"],
            subject="Subject-canary-771",
            text="Body-canary-992",
        ).message_id
        stack.api.result(job, timeout=15)
        assert wait_until(lambda: any("accepted by" in text for _, text in lines), timeout=5)
    info = "\n".join(text for level, text in lines if level >= logging.INFO)
    debug = "\n".join(text for level, text in lines if level == logging.DEBUG)
    assert f"Processing email job {job} to a***@example.com and 1 more" in info
    assert f"Email job {job} accepted by 127.0.0.1:{mail_server.port} (none): 250 2.0.0 OK: queued" in info
    assert "Body-canary-992" not in info + debug
    assert "ana.souza" not in info + debug
    assert "Subject-canary-771" not in info
    assert f"Email job {job} subject: Subject-canary-771" in debug


def test_outbox_without_smtp_host(stacks: StackFactory) -> None:
    stack = stacks(None)
    with email_log_lines() as lines:
        message = stack.actors.send_email.send(to="ana@example.com", subject="Olá ✈", html="<p>Oi</p>")
        result = stack.api.result(message.message_id, timeout=15)
    path = stack.settings.embedded_data_dir / "outbox" / result["outbox_file"]
    assert path.is_file() and path.suffix == ".eml"
    assert result["transport"] == "outbox" and result["smtp_code"] is None
    msg = parse(path.read_bytes())
    assert msg["Subject"] == "Olá ✈" and msg["Message-ID"] == f"<{message.message_id}@taatom.app>"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert any(f"written to the outbox {path.parent} as {path.name}" in text for _, text in lines)
    # a redelivery writes nothing new
    stack.broker.enqueue(message)
    assert wait_until(lambda: _history(stack, message.message_id).count("succeeded") == 2, timeout=15)
    assert list(path.parent.glob("*.eml")) == [path]
