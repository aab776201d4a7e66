"""Real SMTP servers for tests: aiosmtpd in-process on 127.0.0.1 and a free port.

Four flavours match what ``SMTP_SECURITY`` can ask for: plain, STARTTLS (required),
implicit TLS, and one that requires AUTH PLAIN/LOGIN. Each server records what it
accepted, counts TCP connections and can be scripted to refuse the next DATA commands,
so e-mail jobs can be tested against real protocol behaviour instead of mocks.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import ipaddress
import ssl
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "SMTP_AUTH_PASSWORD",
    "SMTP_AUTH_USER",
    "ReceivedMessage",
    "RejectedMessage",
    "SMTPTestServer",
    "TLSFiles",
    "make_tls_files",
    "running_smtp_server",
    "smtp_auth_server",
    "smtp_server",
    "smtp_ssl_server",
    "smtp_starttls_server",
    "smtp_tls_files",
]

SMTP_AUTH_USER = "mailer"
SMTP_AUTH_PASSWORD = "s3cret-test-password"  # a throwaway credential of the test server

Security = Literal["none", "starttls", "ssl"]
Reply = int | str

# Default texts for scripted reply codes, so tests can write ``[451]`` instead of a full line.
_REPLY_TEXTS: dict[int, str] = {
    250: "250 2.0.0 OK: queued",
    421: "421 4.3.2 Service not available, closing channel",
    450: "450 4.2.1 Mailbox busy, try again later",
    451: "451 4.3.0 Try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.1.1 No such user",
    552: "552 5.3.4 Message size exceeds fixed limit",
    553: "553 5.1.3 Mailbox name not allowed",
    554: "554 5.7.1 Message rejected",
}


def _reply_line(reply: Reply) -> str:
    """Turn a bare code into a full reply line; validate a given line."""
    if isinstance(reply, int):
        if not 200 <= reply <= 599:
            raise ValueError(f"not an SMTP reply code: {reply}")
        return _REPLY_TEXTS.get(reply, f"{reply} Scripted reply")
    if len(reply) < 3 or not reply[:3].isdigit() or not 200 <= int(reply[:3]) <= 599:
        raise ValueError(f"an SMTP reply line starts with a 2xx-5xx code: {reply!r}")
    return reply


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted (answered 2xx to its DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls: bool
    auth_login: str | None

    def parsed(self) -> email.message.EmailMessage:
        """The content parsed with the modern e-mail policy, for header and body asserts."""
        message = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        return message


@dataclass(frozen=True)
class RejectedMessage:
    """A DATA command the server refused because a scripted reply told it to."""

    reply: str
    mail_from: str
    rcpt_tos: tuple[str, ...]


class RecordingHandler:
    """aiosmtpd handler: records messages, counts connections, answers as scripted.

    aiosmtpd runs the hooks on its event-loop thread while tests read from the main
    thread, hence one lock (via a condition, so tests can wait for messages).
    """

    def __init__(self, *, require_auth: bool = False) -> None:
        self.require_auth = require_auth
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._rejected: list[RejectedMessage] = []
        self._connections = 0
        self._scripted: deque[str] = deque()
        self._default_reply: str | None = None
        self._rcpt_rejections: dict[str, str] = {}

    # -- called from the server thread -------------------------------------------------

    def note_connection(self) -> None:
        with self._cond:
            self._connections += 1

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        # aiosmtpd's own ``auth_required=True`` combined with ``auth_require_tls=False``
        # emits a UserWarning on every connection, so the requirement is enforced here.
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        with self._cond:
            rejection = self._rcpt_rejections.get(address.lower())
        if rejection is not None:
            return rejection
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._cond:
            reply = self._scripted.popleft() if self._scripted else self._default_reply
            reply = reply or _REPLY_TEXTS[250]
            mail_from = envelope.mail_from or ""
            rcpt_tos = tuple(envelope.rcpt_tos)
            if reply.startswith("2"):
                content = envelope.original_content or b""
                transport = server.transport
                # session.auth_data, not the deprecated login_data (which logs a warning).
                auth = session.auth_data
                self._messages.append(
                    ReceivedMessage(
                        mail_from=mail_from,
                        rcpt_tos=rcpt_tos,
                        content=bytes(content),
                        tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
                        auth_login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                    )
                )
            else:
                self._rejected.append(RejectedMessage(reply, mail_from, rcpt_tos))
            self._cond.notify_all()
        return reply

    # -- read and configured from tests ------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._messages)

    @property
    def rejected(self) -> list[RejectedMessage]:
        with self._cond:
            return list(self._rejected)

    @property
    def connections(self) -> int:
        with self._cond:
            return self._connections

    def script_replies(self, replies: Iterable[Reply]) -> None:
        lines = [_reply_line(r) for r in replies]
        with self._cond:
            self._scripted.extend(lines)

    def always_reply(self, reply: Reply | None) -> None:
        line = None if reply is None else _reply_line(reply)
        with self._cond:
            self._default_reply = line

    def reject_recipient(self, address: str, reply: Reply) -> None:
        line = _reply_line(reply)
        with self._cond:
            self._rcpt_rejections[address.lower()] = line

    def wait_for_messages(self, count: int, timeout: float) -> list[ReceivedMessage]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SMTP test server got {len(self._messages)} message(s), expected {count} "
                    f"within {timeout}s"
                )
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()
            self._rejected.clear()
            self._connections = 0
            self._scripted.clear()
            self._default_reply = None
            self._rcpt_rejections.clear()


class _Controller(Controller):
    """aiosmtpd's threaded controller, bound to 127.0.0.1 on a kernel-chosen port.

    aiosmtpd 1.4 keeps ``port=0`` as given and then fails its own start-up probe
    (it connects to port 0), so the real port is read from the listening socket first.
    Each accepted TCP connection gets a fresh SMTP protocol object from ``factory()``,
    which makes it the one place that sees every connection exactly once (a STARTTLS
    upgrade calls ``connection_made`` a second time on the same object).
    """

    handler: RecordingHandler

    def factory(self) -> SMTP:
        self.handler.note_connection()
        smtp: SMTP = super().factory()  # type: ignore[no-untyped-call]
        return smtp

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SMTPTestServer:
    """A running test SMTP server and what it saw; the object the fixtures yield."""

    def __init__(
        self,
        *,
        security: Security = "none",
        tls_files: TLSFiles | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        if security != "none" and tls_files is None:
            raise ValueError(f"security={security!r} needs tls_files")
        self.security: Security = security
        self.username: str | None = auth[0] if auth is not None else None
        self.password: str | None = auth[1] if auth is not None else None
        self.cafile: str | None = str(tls_files.cafile) if tls_files is not None else None
        self.host = "127.0.0.1"
        self.handler = RecordingHandler(require_auth=auth is not None)
        server_ctx = _server_context(tls_files) if tls_files is not None else None

        smtp_kwargs: dict[str, Any] = {}
        if security == "starttls":
            smtp_kwargs.update(tls_context=server_ctx, require_starttls=True)
        elif auth is not None and server_ctx is not None and security == "none":
            smtp_kwargs.update(tls_context=server_ctx)  # STARTTLS offered, not required
        if auth is not None:
            smtp_kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = _Controller(
            self.handler,
            hostname=self.host,
            port=0,
            ssl_context=server_ctx if security == "ssl" else None,
            # A fixed name avoids socket.getfqdn() (a DNS lookup) on every connection.
            server_hostname="localhost",
            **smtp_kwargs,
        )
        self._started = False

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode(errors="replace") == self.username
            and auth_data.password.decode(errors="replace") == self.password
        )
        # handled=False makes aiosmtpd send the 535 itself; its default (handled=True)
        # means "the authenticator already replied" and the client would wait forever.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def start(self) -> None:
        self._controller.start()
        self._started = True
        # start() returns only after aiosmtpd's own probe connection reached factory(),
        # so resetting here drops exactly that connection from the count.
        self.handler.clear()

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._controller.stop()

    @property
    def port(self) -> int:
        port: int = self._controller.port
        return port

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages, oldest first (a snapshot)."""
        return self.handler.messages

    @property
    def rejected(self) -> list[RejectedMessage]:
        """DATA commands refused by a scripted reply, oldest first (a snapshot)."""
        return self.handler.rejected

    @property
    def connections(self) -> int:
        """TCP connections accepted since start (or the last clear())."""
        return self.handler.connections

    def script_replies(self, replies: Iterable[Reply]) -> None:
        """Answer the next DATA commands with these codes or lines, then go back to normal.

        E.g. ``[451]`` refuses once with "451 4.3.0 Try again later", then accepts.
        """
        self.handler.script_replies(replies)

    def always_reply(self, reply: Reply | None) -> None:
        """Answer every DATA after the scripted ones with this (None: accept)."""
        self.handler.always_reply(reply)

    def reject_recipient(self, address: str, reply: Reply = 550) -> None:
        """Refuse ``RCPT TO:<address>`` with this reply (a bad mailbox, for instance)."""
        self.handler.reject_recipient(address, reply)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted; TimeoutError after ``timeout``."""
        return self.handler.wait_for_messages(count, timeout)

    def clear(self) -> None:
        """Forget messages, rejections, the connection count and any scripted replies."""
        self.handler.clear()

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        if self.cafile is None:
            raise RuntimeError("this server has no TLS certificate")
        return ssl.create_default_context(cafile=self.cafile)


@contextmanager
def running_smtp_server(
    *,
    security: Security = "none",
    tls_files: TLSFiles | None = None,
    auth: tuple[str, str] | None = None,
) -> Iterator[SMTPTestServer]:
    """Start a test SMTP server for the ``with`` block (for combinations no fixture offers)."""
    server = SMTPTestServer(security=security, tls_files=tls_files, auth=auth)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throwaway CA and a server certificate for localhost/127.0.0.1."""

    cafile: Path
    certfile: Path
    keyfile: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """Generate a test CA and a server certificate it signed, valid for localhost and 127.0.0.1.

    A separate CA (rather than one self-signed leaf) keeps clients with strict X.509
    checks (Python 3.13's default context) happy: the trust anchor is a real CA and the
    leaf carries the usual SAN, EKU and key identifiers.
    """
    now = datetime.now(UTC)
    valid_from, valid_to = now - timedelta(minutes=5), now + timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taatom-jobs test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(
        cafile=directory / "ca.pem", certfile=directory / "server.pem", keyfile=directory / "server-key.pem"
    )
    files.cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.keyfile.chmod(0o600)
    return files


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _server_context(files: TLSFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=files.certfile, keyfile=files.keyfile)
    return ctx


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """One certificate set per session: generating keys per test would only cost time."""
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """Plain SMTP, no TLS, no AUTH (``SMTP_SECURITY=none``)."""
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def smtp_starttls_server(smtp_tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    """SMTP that refuses MAIL until the client issued STARTTLS (``SMTP_SECURITY=starttls``)."""
    with running_smtp_server(security="starttls", tls_files=smtp_tls_files) as server:
        yield server


@pytest.fixture
def smtp_ssl_server(smtp_tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    """SMTP over implicit TLS from the first byte (``SMTP_SECURITY=ssl``)."""
    with running_smtp_server(security="ssl", tls_files=smtp_tls_files) as server:
        yield server


@pytest.fixture
def smtp_auth_server(smtp_tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    """SMTP requiring AUTH PLAIN/LOGIN as ``.username``/``.password`` before MAIL.

    AUTH is allowed over plain text (so ``SMTP_SECURITY=none`` with credentials can be
    tested) and STARTTLS is offered but optional (so ``starttls`` plus AUTH works too).
    """
    with running_smtp_server(tls_files=smtp_tls_files, auth=(SMTP_AUTH_USER, SMTP_AUTH_PASSWORD)) as server:
        yield server
