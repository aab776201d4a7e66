"""The SMTP backend: ``smtplib`` with one connection per worker thread, reused across jobs.

Opening a connection costs a TCP handshake, the greeting, EHLO, with
STARTTLS or implicit TLS a TLS handshake and a second EHLO, and with AUTH one
more round trip: several round trips before the first byte of mail. Each
worker thread therefore keeps its connection open between jobs (smtplib
objects are not thread-safe, so threads never share one).

A kept connection may have been closed by the server meanwhile (idle
timeouts, restarts, "421 closing"). That shows as a disconnect or a 421 reply
to MAIL FROM or RCPT TO — before any of the message was transmitted — so the
message is then sent on a fresh connection at once. A failure at or after
DATA is never repeated here: the server may have the message, and the
decision to send again belongs to the job's attempts and the e-mail log.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from middleware.errors import SRV_6006, JobError

from ..settings import Settings
from .backend import Delivery, Refusal, reply_text
from .message import OutgoingEmail

logger = logging.getLogger("jobs.email")

# A connection idle for longer is closed (politely) and a new one opened:
# servers drop idle clients anyway (RFC 5321 asks for at least 5 minutes,
# many use less), and a fresh connection is cheaper than a failed command.
MAX_IDLE_S = 30.0
QUIT_TIMEOUT_S = 2.0


@functools.cache
def _local_hostname() -> str:
    # smtplib would call getfqdn() (a DNS lookup) for every new connection.
    return socket.getfqdn()


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The client TLS context for ``SMTP_SECURITY`` ``starttls``/``ssl``.

    ``SMTP_CA_FILE`` replaces the system trust store (a private CA);
    ``SMTP_VERIFY_TLS=false`` turns verification off, for tests only (the
    settings refuse it in production).
    """
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file is not None else None
    context = ssl.create_default_context(cafile=cafile)
    if not settings.smtp_verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _ServerClosing(smtplib.SMTPResponseException):
    """A 421 reply: the server is closing the connection."""


@dataclass(eq=False)
class _Pooled:
    conn: smtplib.SMTP
    last_used: float
    closed: bool = False


class SMTPBackend:
    """Sends through ``SMTP_HOST``; see the module docstring for connection reuse.

    Parameters:
      settings: host, port, security, credentials, timeout and TLS options.
      reuse: keep connections between messages (False: one per message, for
        the benchmark's comparison).
      clock: monotonic seconds, for the idle limit.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        reuse: bool = True,
        max_idle_s: float = MAX_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.smtp_host is None:
            raise ValueError("SMTPBackend needs SMTP_HOST")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.timeout_s = settings.smtp_timeout_s
        self.user = settings.smtp_user
        self._password = settings.smtp_password
        self._tls = tls_context(settings) if self.security != "none" else None
        self.reuse = reuse
        self.max_idle_s = max_idle_s
        self.clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Pooled] = set()
        self.connections_opened = 0

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"

    def send(self, email: OutgoingEmail) -> Delivery:
        data = email.as_bytes()
        pooled, reused = self._checkout()
        try:
            try:
                refused = self._envelope(pooled.conn, email, len(data))
            except (smtplib.SMTPServerDisconnected, _ServerClosing):
                if not reused:
                    raise
                # Dropped while idle: nothing of this message reached the server.
                logger.debug("SMTP server %s had closed the kept connection; reconnecting", self.describe())
                self._discard(pooled)
                pooled, _ = self._checkout()
                refused = self._envelope(pooled.conn, email, len(data))
            code, reply = self._data(pooled.conn, data)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
            # A refusal by reply leaves the connection usable once reset.
            if getattr(exc, "smtp_code", None) == 421 or not self._reset(pooled):
                self._discard(pooled)
            raise
        except BaseException:
            self._discard(pooled)
            raise
        pooled.last_used = self.clock()
        if not self.reuse:
            self._discard(pooled, polite=True)
        accepted = len(email.envelope_to) - len(refused)
        return Delivery("smtp", code, reply_text(reply), accepted, refused)

    def close(self) -> None:
        """QUIT every connection this backend holds, in any thread."""
        with self._lock:
            pooled = list(self._open)
        for p in pooled:
            self._discard(p, polite=True)

    # -- one message --------------------------------------------------------------

    def _envelope(self, conn: smtplib.SMTP, email: OutgoingEmail, size: int) -> tuple[Refusal, ...]:
        """MAIL FROM and RCPT TO; returns the recipients refused while others were accepted."""
        options = [f"SIZE={size}"] if conn.has_extn("size") else []
        code, reply = conn.mail(email.envelope_from, options)
        if code == 421:
            raise _ServerClosing(code, reply)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, email.envelope_from)
        refused: dict[str, tuple[int, bytes]] = {}
        for address in email.envelope_to:
            code, reply = conn.rcpt(address)
            if code == 421:
                raise _ServerClosing(code, reply)
            if code not in (250, 251):
                refused[address] = (code, reply)
        if len(refused) == len(email.envelope_to):
            raise smtplib.SMTPRecipientsRefused(refused)
        return tuple(Refusal(a, c, reply_text(r)) for a, (c, r) in refused.items())

    def _data(self, conn: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
        code, reply = conn.data(data)
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return code, reply

    # -- connections ----------------------------------------------------------------

    def _checkout(self) -> tuple[_Pooled, bool]:
        """This thread's connection and whether it was used before (a new one if none or stale)."""
        pooled: _Pooled | None = getattr(self._local, "pooled", None)
        if pooled is not None and (pooled.closed or self.clock() - pooled.last_used > self.max_idle_s):
            self._discard(pooled, polite=True)
            pooled = None
        if pooled is not None:
            return pooled, True
        pooled = _Pooled(self._connect(), self.clock())
        self._local.pooled = pooled
        with self._lock:
            self._open.add(pooled)
            self.connections_opened += 1
        return pooled, False

    def _connect(self) -> smtplib.SMTP:
        conn: smtplib.SMTP
        if self.security == "ssl":
            conn = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=_local_hostname(),
                timeout=self.timeout_s,
                context=self._tls,
            )
        else:
            conn = smtplib.SMTP(
                self.host, self.port, local_hostname=_local_hostname(), timeout=self.timeout_s
            )
        try:
            conn.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                conn.starttls(context=self._tls)
                conn.ehlo_or_helo_if_needed()
            if self.user:
                password = self._password.get_secret_value() if self._password is not None else ""
                conn.login(self.user, password)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException):
            _close(conn)
            raise
        except smtplib.SMTPException as exc:
            # No STARTTLS or AUTH offered, no common AUTH mechanism: the server
            # and the settings disagree, and retrying will not change that.
            _close(conn)
            raise JobError(
                SRV_6006, f"SMTP server {self.describe()} cannot do what the settings ask: {exc}"
            ) from None
        except BaseException:
            _close(conn)
            raise
        return conn

    def _reset(self, pooled: _Pooled) -> bool:
        try:
            code, _ = pooled.conn.rset()
        except (smtplib.SMTPException, OSError):
            return False
        return code == 250

    def _discard(self, pooled: _Pooled, *, polite: bool = False) -> None:
        pooled.closed = True
        if getattr(self._local, "pooled", None) is pooled:
            self._local.pooled = None
        with self._lock:
            self._open.discard(pooled)
        if polite:
            _quit(pooled.conn)
        else:
            _close(pooled.conn)


def _quit(conn: smtplib.SMTP) -> None:
    try:
        if conn.sock is not None:
            conn.sock.settimeout(QUIT_TIMEOUT_S)
            conn.quit()
    except (smtplib.SMTPException, OSError):
        logger.debug("QUIT failed (the server went first); closing")
    finally:
        _close(conn)


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        logger.debug("Closing an SMTP connection failed", exc_info=True)
