"""The SMTP backend on its own against real aiosmtpd servers: connections, security modes, failures."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jobs.mail.addresses import Mailbox
from jobs.mail.message import OutgoingEmail, build_email
from jobs.mail.smtp import SMTPBackend
from jobs.payloads import EmailPayload
from jobs.settings import Settings
from middleware.errors import JobError
from middleware.translate import translate
from tests.services.smtp import SMTP_AUTH_USER, SMTPTestServer
from tests.support.mail import MailServer, running_mail_server


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    with running_mail_server() as server:
        yield server


def _email(n: int = 0, to: str = "ana@example.com") -> OutgoingEmail:
    payload = EmailPayload.parse({"to": to, "subject": f"Message {n}", "text": f"body {n}"})
    return build_email(
        payload, sender=Mailbox("no-reply@taatom.app"), token=f"job-{n}", date=datetime.now(UTC)
    )


def _settings(server: SMTPTestServer | None, port: int | None = None, **env: str) -> Settings:
    values = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port or (server.port if server else 25)),
        "SMTP_SECURITY": server.security if server else "none",
        "SMTP_TIMEOUT_S": "5",
        **({"SMTP_CA_FILE": server.cafile} if server and server.cafile else {}),
        **env,
    }
    return Settings.from_mapping(values)


def _backend(server: SMTPTestServer | None, port: int | None = None, **env: str) -> SMTPBackend:
    return SMTPBackend(_settings(server, port, **env))


def _code(exc: BaseException) -> str:
    return translate(exc).code


def test_one_connection_per_thread_reused_across_messages(mail_server: MailServer) -> None:
    backend = _backend(mail_server)
    errors: list[BaseException] = []

    def send_many(first: int) -> None:
        try:
            for n in range(first, first + 25):
                assert backend.send(_email(n)).code == 250
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=send_many, args=(i * 100,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(mail_server.messages) == 100
    assert mail_server.connections == backend.connections_opened == 4
    backend.close()


def test_without_reuse_every_message_opens_a_connection(mail_server: MailServer) -> None:
    backend = SMTPBackend(_settings(mail_server), reuse=False)
    for n in range(5):
        backend.send(_email(n))
    assert mail_server.connections == 5 and len(mail_server.messages) == 5


def test_idle_connection_is_replaced(mail_server: MailServer) -> None:
    now = [0.0]
    settings = _settings(mail_server)
    backend = SMTPBackend(settings, max_idle_s=30, clock=lambda: now[0])
    backend.send(_email(1))
    now[0] = 29.0
    backend.send(_email(2))
    assert mail_server.connections == 1
    now[0] = 60.0
    backend.send(_email(3))
    assert mail_server.connections == 2 and len(mail_server.messages) == 3


def test_dropped_connection_is_replaced_without_losing_the_message(mail_server: MailServer) -> None:
    backend = _backend(mail_server)
    backend.send(_email(1))
    mail_server.drop_connections()
    delivery = backend.send(_email(2))
    assert delivery.code == 250
    assert [m.parsed()["Subject"] for m in mail_server.messages] == ["Message 1", "Message 2"]
    assert mail_server.connections == 2


def test_lost_reply_after_data_is_not_retried_in_process(mail_server: MailServer) -> None:
    backend = _backend(mail_server)
    mail_server.drop_after_accepting(1)
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        backend.send(_email(1))
    assert _code(info.value) == "SRV_6003"
    # The server has it; sending again is the job's decision (attempts + e-mail log), not the backend's.
    assert len(mail_server.messages) == 1 and mail_server.connections == 1
    backend.send(_email(2))  # and the backend recovers with a new connection
    assert mail_server.connections == 2


@pytest.mark.parametrize(
    ("reply", "code"), [(451, "SRV_6003"), (452, "SRV_6003"), (550, "SRV_6006"), (554, "SRV_6006")]
)
def test_refusals_map_to_codes_and_keep_the_connection(
    mail_server: MailServer, reply: int, code: str
) -> None:
    backend = _backend(mail_server)
    mail_server.script_replies([reply])
    with pytest.raises(smtplib.SMTPDataError) as info:
        backend.send(_email(1))
    assert _code(info.value) == code
    backend.send(_email(2))
    assert len(mail_server.messages) == 1 and mail_server.connections == 1


def test_recipient_refusals(mail_server: MailServer) -> None:
    backend = _backend(mail_server)
    mail_server.reject_recipient("busy@example.com", 450)
    mail_server.reject_recipient("gone@example.com", 550)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as temporary:
        backend.send(_email(1, to="busy@example.com"))
    assert _code(temporary.value) == "SRV_6003"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as permanent:
        backend.send(_email(2, to="gone@example.com"))
    assert _code(permanent.value) == "SRV_6006"
    payload = EmailPayload.parse(
        {"to": ["ana@example.com", "gone@example.com"], "cc": "busy@example.com", "subject": "s", "text": "t"}
    )
    partial = backend.send(
        build_email(payload, sender=Mailbox("no-reply@taatom.app"), token="p", date=datetime.now(UTC))
    )
    assert (partial.code, partial.accepted) == (250, 1)
    assert {(r.address, r.code) for r in partial.refused} == {
        ("gone@example.com", 550),
        ("busy@example.com", 450),
    }
    assert mail_server.connections == 1


def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    backend = _backend(None, port=closed_port)
    with pytest.raises(ConnectionRefusedError) as info:
        backend.send(_email())
    assert _code(info.value) == "SRV_6003"


def test_starttls_asked_of_a_server_without_it_is_permanent(mail_server: MailServer) -> None:
    backend = _backend(mail_server, SMTP_SECURITY="starttls")
    with pytest.raises(JobError, match="STARTTLS") as info:
        backend.send(_email())
    assert info.value.code == "SRV_6006"
    assert mail_server.messages == []


def test_auth_asked_of_a_server_without_it_is_permanent(mail_server: MailServer) -> None:
    backend = _backend(mail_server, SMTP_USER="someone", SMTP_PASSWORD="pw-123456")
    with pytest.raises(JobError, match="AUTH") as info:
        backend.send(_email())
    assert info.value.code == "SRV_6006"


def test_implicit_tls_against_a_plain_server_fails_transiently(mail_server: MailServer) -> None:
    backend = _backend(mail_server, SMTP_SECURITY="ssl")
    with pytest.raises(OSError) as info:
        backend.send(_email())
    assert _code(info.value) == "SRV_6003"


def test_security_modes_and_auth(
    smtp_starttls_server: SMTPTestServer, smtp_ssl_server: SMTPTestServer, smtp_auth_server: SMTPTestServer
) -> None:
    for server in (smtp_starttls_server, smtp_ssl_server):
        _backend(server).send(_email())
        assert server.messages[0].tls is True
    auth = _backend(
        smtp_auth_server,
        SMTP_SECURITY="starttls",
        SMTP_USER=SMTP_AUTH_USER,
        SMTP_PASSWORD=smtp_auth_server.password or "",
    )
    auth.send(_email())
    [received] = smtp_auth_server.messages
    assert (received.tls, received.auth_login) == (True, SMTP_AUTH_USER)


def test_close_quits_every_thread_connection(mail_server: MailServer) -> None:
    backend = _backend(mail_server)
    threads = [threading.Thread(target=backend.send, args=(_email(n),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert backend.connections_opened == 3
    backend.close()
    backend.send(_email(9))  # this thread had none: a fresh connection
    assert backend.connections_opened == 4 and len(mail_server.messages) == 4
