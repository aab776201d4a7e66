"""The ``email_log`` collection: one entry per accepted e-mail, checked before sending.

A job may run again after its e-mail was accepted — the worker died before
acknowledging the message, a retry followed a timeout after the server's
250, the app sent the same ``idempotency_key`` twice. Before sending, the job
claims its key here with a short lease; after the server (or the outbox)
accepted the message, the entry becomes ``sent``, and a later run with the
same key returns the recorded result instead of sending again.

Entry ``_id`` is ``key:<idempotency_key>`` or ``job:<message id>`` (a string
``_id``: the unique index every MongoDB has, and the fast path). Fields:
``state`` (``sending``/``sent``), ``job_id``, ``claim`` and ``lease_until``
while sending; ``message_id``, ``transport``, ``smtp_code``, ``accepted``,
``refused``, ``sent_at`` once sent; ``expires_at`` for the TTL index. Never a
subject, a body or the recipient list.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from middleware.errors import SRV_6003, JobError

logger = logging.getLogger("jobs.email")

MongoDocument = dict[str, Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    """The right to send under ``key`` (``token``), or the record of an earlier send (``sent``)."""

    key: str
    job_id: str
    token: str | None = None
    sent: Mapping[str, Any] | None = None
    # An earlier run of the same job (or one whose lease ran out) held the
    # claim and never recorded an outcome: it may or may not have sent.
    took_over: bool = False


class EmailLog:
    """Claims, releases and records sends in ``email_log``.

    Parameters:
      database: returns the database (opened lazily: importing jobs opens nothing).
      collection: the collection's name (``EMAIL_LOG_COLLECTION``).
      lease: how long a claim keeps other jobs with the same key waiting;
        longer than the e-mail queue's time limit.
      retention: how long an entry is kept (TTL index on ``expires_at``).
    """

    def __init__(
        self,
        database: Callable[[], Database[MongoDocument]],
        *,
        collection: str = "email_log",
        lease: timedelta,
        retention: timedelta,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.database = database
        self.name = collection
        self.lease = lease
        self.retention = retention
        self.clock = clock
        self._indexed = False
        self._lock = threading.Lock()

    def collection(self) -> Collection[MongoDocument]:
        collection = self.database()[self.name]
        if not self._indexed:
            with self._lock:
                if not self._indexed:
                    try:
                        collection.create_index("expires_at", expireAfterSeconds=0)
                    except OperationFailure as exc:
                        # An index on expires_at with other options: retention is
                        # then someone else's, and sending must not depend on it.
                        logger.warning("No TTL index on %s.expires_at: %s", self.name, exc.code)
                    self._indexed = True
        return collection

    def claim(self, key: str, job_id: str) -> Claim:
        """Claim ``key`` for this run of ``job_id``, or find that it was sent already.

        Raises JobError ``SRV_6003`` (retried) while another job holds a live
        claim on the same key; MongoDB errors propagate (``SRV_6002``): no
        e-mail goes out unguarded.
        """
        collection = self.collection()
        now = self.clock()
        token = f"{job_id}/{uuid.uuid4().hex[:12]}"
        fields = {
            "state": "sending",
            "job_id": job_id,
            "claim": token,
            "claimed_at": now,
            "lease_until": now + self.lease,
            "expires_at": now + self.retention,
        }
        for _ in range(3):
            try:
                collection.insert_one({"_id": key, **fields})
                return Claim(key, job_id, token)
            except DuplicateKeyError:
                pass
            current = collection.find_one({"_id": key})
            if current is None:
                continue  # released meanwhile: claim again
            if current.get("state") == "sent":
                return Claim(key, job_id, sent=current)
            # A redelivered job finds its own earlier claim: that run is gone.
            if current.get("job_id") == job_id or _aware(current["lease_until"]) <= now:
                taken = collection.find_one_and_update(
                    {"_id": key, "state": "sending", "claim": current.get("claim")},
                    {"$set": fields},
                    return_document=ReturnDocument.AFTER,
                )
                if taken is not None:
                    return Claim(key, job_id, token, took_over=True)
                continue
            raise JobError(SRV_6003, "another job is sending an e-mail with the same idempotency key")
        raise JobError(SRV_6003, "the e-mail log entry for this e-mail kept changing; will retry")

    def release(self, claim: Claim) -> None:
        """Give the claim up after a failed send, so a retry need not wait for the lease.

        Failures are logged, not raised: the send's own error is what matters,
        and an unreleased claim only delays a later run of the same job.
        """
        if claim.token is None:
            return
        try:
            self.collection().delete_one({"_id": claim.key, "claim": claim.token, "state": "sending"})
        except PyMongoError as exc:
            logger.warning(
                "Could not release the e-mail log claim of job %s: %s", claim.job_id, type(exc).__name__
            )

    def record_sent(self, claim: Claim, record: Mapping[str, Any]) -> bool:
        """Mark the key sent. Tried twice; a failure is logged, not raised (the e-mail is out)."""
        now = self.clock()
        update = {
            "$set": {**record, "state": "sent", "sent_at": now, "expires_at": now + self.retention},
            "$unset": {"claim": "", "lease_until": ""},
        }
        for attempt in (1, 2):
            try:
                self.collection().update_one({"_id": claim.key}, update, upsert=True)
                return True
            except PyMongoError as exc:
                failure = exc
                logger.warning("Recording a sent e-mail failed (try %d/2): %s", attempt, type(exc).__name__)
        logger.error(
            "E-mail %s was accepted but could not be recorded (%s): a redelivery of this job "
            "could send it again",
            record.get("message_id"),
            type(failure).__name__,
        )
        return False


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
