"""The ``send_email`` job function: build, check the e-mail log, send, record.

Order matters for idempotency: the claim in ``email_log`` comes before the
send and the ``sent`` record right after the server's 250, before anything
else can fail. What this leaves open is stated in docs/email.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dramatiq.middleware import CurrentMessage
from pymongo.database import Database

from middleware.sanitize import mask_email

from ..payloads import EmailPayload, Payload
from ..runtime import Runtime
from ..settings import Settings, SettingsError
from .addresses import Mailbox, parse_mailbox
from .backend import Backend, Delivery
from .idempotency import EmailLog, MongoDocument
from .message import build_email, message_token
from .outbox import OutboxBackend, outbox_dir
from .smtp import SMTPBackend

logger = logging.getLogger("jobs.email")

JobResult = dict[str, Any]

# A claim outlives the job's time limit by this much, so a run that is still
# sending is never taken over by another.
LEASE_MARGIN = timedelta(seconds=30)


def make_backend(settings: Settings) -> Backend:
    """SMTP when ``SMTP_HOST`` is set; otherwise the outbox (the settings allow that outside production)."""
    if settings.smtp_host:
        return SMTPBackend(settings)
    return OutboxBackend(outbox_dir(settings))


def sender_of(settings: Settings) -> Mailbox:
    try:
        return parse_mailbox(settings.email_from)
    except ValueError as exc:
        raise SettingsError([f"EMAIL_FROM={settings.email_from!r}: {exc}"]) from None


class EmailJob:
    """The job function of ``send_email``: called with the parsed payload inside a worker."""

    def __init__(
        self,
        settings: Settings,
        database: Callable[[], Database[MongoDocument]],
        *,
        backend: Backend | None = None,
        email_log: EmailLog | None = None,
    ) -> None:
        self.sender = sender_of(settings)
        try:
            self.backend = backend or make_backend(settings)
        except OSError as exc:  # an unreadable SMTP_CA_FILE
            raise SettingsError([f"SMTP_CA_FILE: cannot be read ({exc.strerror or exc})"]) from None
        time_limit = timedelta(milliseconds=settings.queue_policy("email").time_limit_ms)
        self.email_log = email_log or EmailLog(
            database,
            collection=settings.email_log_collection,
            lease=time_limit + LEASE_MARGIN,
            retention=timedelta(days=settings.email_log_retention_days),
        )

    def __call__(self, payload: Payload) -> JobResult:
        if not isinstance(payload, EmailPayload):
            raise TypeError(f"send_email takes an EmailPayload, not {type(payload).__name__}")
        message = CurrentMessage.get_current_message()
        if message is None:
            raise RuntimeError("send_email's job function runs inside a worker; use EmailJob.run() elsewhere")
        enqueued_at = datetime.fromtimestamp(message.message_timestamp / 1000, UTC)
        return self.run(payload, job_id=message.message_id, enqueued_at=enqueued_at)

    def run(self, payload: EmailPayload, *, job_id: str, enqueued_at: datetime) -> JobResult:
        """Send ``payload`` as job ``job_id`` (its id names the message and the log entry)."""
        token = message_token(job_id, payload.idempotency_key)
        email = build_email(payload, sender=self.sender, token=token, date=enqueued_at)
        more = len(email.envelope_to) - 1
        logger.info(
            "Processing email job %s to %s%s",
            job_id,
            mask_email(email.envelope_to[0]),
            f" and {more} more" if more else "",
        )
        logger.debug("Email job %s subject: %s", job_id, payload.subject)

        key = f"key:{payload.idempotency_key}" if payload.idempotency_key else f"job:{job_id}"
        claim = self.email_log.claim(key, job_id)
        if claim.sent is not None:
            logger.info(
                "Email job %s was already sent (%s at %s); not sending it again",
                job_id,
                claim.sent.get("message_id"),
                claim.sent.get("sent_at"),
            )
            return _result(claim.sent, already_sent=True)
        if claim.took_over:
            logger.warning(
                "Email job %s: an earlier run stopped while sending and its outcome is unknown; "
                "sending again with the same Message-ID",
                job_id,
            )
        try:
            delivery = self.backend.send(email)
        except BaseException:
            self.email_log.release(claim)
            raise
        record = _record(job_id, email.message_id, delivery)
        self.email_log.record_sent(claim, record)
        _log_delivery(job_id, delivery, self.backend)
        return _result(record, already_sent=False)

    def close(self) -> None:
        self.backend.close()


def make_email_job(runtime: Runtime, settings: Settings) -> EmailJob:
    """The ``send_email`` job for this process: opens nothing until the first job runs."""
    return EmailJob(settings, runtime.mongo_db)


def _record(job_id: str, message_id: str, delivery: Delivery) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "message_id": message_id,
        "transport": delivery.transport,
        "smtp_code": delivery.code,
        "accepted": delivery.accepted,
        "refused": [r.as_dict() for r in delivery.refused],
        # The name only: the folder is the deployment's business (and long
        # paths look like secrets to the sanitizer of the job state).
        "outbox_file": Path(delivery.location).name if delivery.location else None,
    }


def _result(record: Mapping[str, Any], *, already_sent: bool) -> JobResult:
    result = {
        "success": True,
        "message_id": record.get("message_id"),
        "transport": record.get("transport"),
        "smtp_code": record.get("smtp_code"),
        "accepted": record.get("accepted"),
        "refused": list(record.get("refused") or []),
        "already_sent": already_sent,
    }
    if record.get("outbox_file"):
        result["outbox_file"] = record["outbox_file"]
    return result


def _log_delivery(job_id: str, delivery: Delivery, backend: Backend) -> None:
    if delivery.transport == "outbox":
        # Folder and name apart: as one long path the sanitizer could take it for a token.
        where = Path(delivery.location or "")
        logger.info("Email job %s written to the outbox %s as %s", job_id, where.parent, where.name)
    else:
        logger.info(
            "Email job %s accepted by %s: %s %s", job_id, backend.describe(), delivery.code, delivery.reply
        )
    if delivery.refused:
        logger.warning(
            "Email job %s: %d recipient(s) refused, the others accepted: %s",
            job_id,
            len(delivery.refused),
            ", ".join(f"{mask_email(r.address)} ({r.code})" for r in delivery.refused),
        )
