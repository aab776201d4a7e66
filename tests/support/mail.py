"""E-mail test support: an aiosmtpd server that can also misbehave, and stack settings.

``MailServer`` is the plain test server of tests/services/smtp.py (same
handler: scripted replies, recorded messages, connection counting) plus what
the e-mail job's failure modes need: the content of every DATA, refused ones
included (to compare Message-IDs across a retry), closing the connection right
after accepting a message (the reply never arrives: the ambiguous case), and
closing every open connection at once (an idle timeout or a restart).
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from jobs.actors import declare_actors
from jobs.api import JobsAPI
from jobs.mail.job import EmailJob
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.wiring import build_broker
from tests.conftest import Stack
from tests.services.smtp import RecordingHandler, SMTPTestServer, _Controller


def parse(content: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


class _KeepingHandler(RecordingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.data_contents: list[bytes] = []
        self.drop_after_accepting = 0
        self._guard = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._guard:
            self.data_contents.append(bytes(envelope.original_content or b""))
            drop = self.drop_after_accepting > 0
            if drop:
                self.drop_after_accepting -= 1
        reply = await super().handle_DATA(server, session, envelope)
        if drop and server.transport is not None:
            # The message is recorded as accepted; the client never reads the reply.
            server.transport.close()
        return reply


class _TrackingController(_Controller):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTP] = []

    def factory(self) -> SMTP:
        smtp = super().factory()
        self.sessions.append(smtp)
        return smtp


class MailServer(SMTPTestServer):
    """A plain SMTP test server (``SMTP_SECURITY=none``) with failure modes; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.keeper = _KeepingHandler()
        self.tracker = _TrackingController(
            self.keeper, hostname=self.host, port=0, server_hostname="localhost"
        )
        self.handler, self._controller = self.keeper, self.tracker

    @property
    def data_contents(self) -> list[bytes]:
        """Every DATA the server received, accepted or refused, oldest first."""
        with self.keeper._guard:
            return list(self.keeper.data_contents)

    def drop_after_accepting(self, count: int = 1) -> None:
        """Accept the next ``count`` messages, then close the connection before the 250 goes out."""
        with self.keeper._guard:
            self.keeper.drop_after_accepting = count

    def clear(self) -> None:
        """Forget everything, as the base server does, and cancel a pending drop."""
        super().clear()
        with self.keeper._guard:
            self.keeper.data_contents.clear()
            self.keeper.drop_after_accepting = 0

    def drop_connections(self, timeout: float = 5.0) -> None:
        """Close every open client connection from the server side, and return once closed."""

        async def close_all() -> None:
            for smtp in self.tracker.sessions:
                if smtp.transport is not None and not smtp.transport.is_closing():
                    smtp.transport.close()
            await asyncio.sleep(0)  # let the loop run the close callbacks

        loop = self.tracker.loop
        asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout)


@contextmanager
def running_mail_server() -> Iterator[MailServer]:
    server = MailServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def email_env(
    server: SMTPTestServer | None, mongo_url: str, mongo_db: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """Settings of an embedded stack sending to ``server`` (None: the outbox); e-mail log in ``mongo_db``."""
    env = {
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db,
        "JOBS_BACKOFF_MIN_MS": "50",
        "JOBS_BACKOFF_MAX_MS": "400",
        "EMBEDDED_DATA_DIR": str(data_dir),
    }
    if server is not None:
        env.update(SMTP_HOST=server.host, SMTP_PORT=str(server.port), SMTP_SECURITY=server.security)
        if server.cafile is not None:
            env["SMTP_CA_FILE"] = server.cafile
    env.update(extra)
    return env


class StackFactory:
    """Embedded stacks for e-mail tests, stopped together at the end of a module.

    An embedded worker takes ~2 s to stop (its consumers' idle wait), so the
    stacks of a module are shared where the settings allow and stopped in
    parallel, instead of one after the other at each test's teardown.
    """

    def __init__(self, mongo_url: str, mongo_db: str, data_dirs: pytest.TempPathFactory) -> None:
        self.mongo_url = mongo_url
        self.mongo_db = mongo_db
        self.data_dirs = data_dirs
        self.built: list[Stack] = []

    def __call__(self, server: SMTPTestServer | None, **extra: str) -> Stack:
        env = email_env(server, self.mongo_url, self.mongo_db, self.data_dirs.mktemp("email"), **extra)
        settings = Settings.from_mapping(env)
        broker = build_broker(settings)
        runtime = Runtime(settings)
        actors = declare_actors(broker, settings, runtime)
        stack = Stack(settings, broker, actors, runtime, JobsAPI(broker, settings))
        self.built.append(stack)
        return stack

    def close(self) -> None:
        def stop(stack: Stack) -> None:
            if stack.embedded is not None:
                stack.embedded.stop()
            job = stack.actors.send_email.job_fn
            if isinstance(job, EmailJob):
                job.close()
            stack.broker.close()
            stack.runtime.close()

        threads = [threading.Thread(target=stop, args=(s,)) for s in self.built]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@contextmanager
def email_log_lines() -> Iterator[list[tuple[int, str]]]:
    """``(level, message)`` of every ``jobs.email`` record, as the job wrote it.

    The handler sits on the ``jobs.email`` logger itself, so it sees each
    record before any root handler's sanitizing filter rewrites it in place:
    the tests check what the job writes, not what the sanitizer saves.
    """
    logger = logging.getLogger("jobs.email")
    capture = _Capture()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        yield capture.lines
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
