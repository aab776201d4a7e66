"""email_log: the idempotency record of sent e-mails, against SecantusDB (MongoDB wire protocol)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from jobs.mail.idempotency import Claim, EmailLog
from jobs.mail.job import EmailJob
from jobs.mail.outbox import OutboxBackend
from jobs.payloads import EmailPayload
from jobs.settings import Settings
from middleware.errors import JobError
from middleware.translate import translate
from tests.support.mail import email_log_lines

Document = dict[str, Any]
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(mongo_db: Database[Document], clock: Clock) -> EmailLog:
    return EmailLog(lambda: mongo_db, lease=timedelta(seconds=90), retention=timedelta(days=30), clock=clock)


def test_claim_then_record_then_later_runs_see_it_sent(log: EmailLog, mongo_db: Database[Document]) -> None:
    claim = log.claim("job:a", "a")
    assert claim.token is not None and claim.sent is None and not claim.took_over
    entry = mongo_db["email_log"].find_one({"_id": "job:a"})
    assert entry is not None and entry["state"] == "sending" and entry["job_id"] == "a"
    assert log.record_sent(claim, {"message_id": "<a@taatom.app>", "smtp_code": 250}) is True
    again = log.claim("job:a", "a")
    assert again.token is None and again.sent is not None
    assert (again.sent["state"], again.sent["smtp_code"], again.sent["message_id"]) == (
        "sent",
        250,
        "<a@taatom.app>",
    )
    assert "claim" not in again.sent and "lease_until" not in again.sent
    expires = again.sent["expires_at"]
    assert expires.replace(tzinfo=UTC) == T0 + timedelta(days=30)
    ttl = [i for i in mongo_db["email_log"].list_indexes() if dict(i["key"]) == {"expires_at": 1}]
    assert ttl and ttl[0]["expireAfterSeconds"] == 0


def test_another_job_with_the_key_waits_while_the_lease_lives(log: EmailLog, clock: Clock) -> None:
    log.claim("key:reset-42", "job-1")
    with pytest.raises(JobError) as info:
        log.claim("key:reset-42", "job-2")
    assert info.value.code == "SRV_6003" and info.value.retry is True
    clock.now += timedelta(seconds=91)  # job-1's worker died mid-send: its lease ran out
    taken = log.claim("key:reset-42", "job-2")
    assert taken.token is not None and taken.took_over is True


def test_a_redelivered_job_takes_its_own_stale_claim_over_at_once(log: EmailLog) -> None:
    first = log.claim("job:x", "x")  # the worker died between claiming and recording
    second = log.claim("job:x", "x")
    assert second.took_over is True and second.token != first.token
    log.release(first)  # the dead run's token no longer releases anything
    assert log.claim("job:x", "x").took_over is True


def test_release_lets_a_retry_claim_without_waiting(log: EmailLog, mongo_db: Database[Document]) -> None:
    claim = log.claim("job:r", "r")
    log.release(claim)
    assert mongo_db["email_log"].find_one({"_id": "job:r"}) is None
    assert log.claim("job:r", "r").took_over is False


def test_database_down_claim_fails_transiently_and_record_does_not_raise() -> None:
    client: MongoClient[Document] = MongoClient(
        "mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=150, connectTimeoutMS=150
    )
    down = EmailLog(lambda: client["x"], lease=timedelta(seconds=90), retention=timedelta(days=1))
    try:
        with pytest.raises(PyMongoError) as info:
            down.claim("job:d", "d")
        assert translate(info.value).code == "SRV_6002"
        with email_log_lines() as lines:
            assert down.record_sent(Claim("job:d", "d", "t"), {"message_id": "<d@taatom.app>"}) is False
        assert any(
            level == logging.ERROR and "was accepted but could not be recorded" in text
            for level, text in lines
        )
    finally:
        client.close()


def _job(mongo_db: Database[Document], outbox: Path) -> EmailJob:
    settings = Settings.from_mapping({"EMAIL_OUTBOX_DIR": str(outbox)})
    return EmailJob(settings, lambda: mongo_db, backend=OutboxBackend(outbox))


def test_running_the_job_twice_with_one_message_id_sends_once(
    mongo_db: Database[Document], tmp_path: Path
) -> None:
    job = _job(mongo_db, tmp_path)
    payload = EmailPayload.parse({"to": "ana@example.com", "subject": "Code", "text": "418203"})
    first = job.run(payload, job_id="m-1", enqueued_at=T0)
    second = job.run(payload, job_id="m-1", enqueued_at=T0)
    assert first["already_sent"] is False and second == {**first, "already_sent": True}
    assert len(list(tmp_path.glob("*.eml"))) == 1


def test_crash_between_claim_and_record_sends_again_with_a_warning(
    mongo_db: Database[Document], tmp_path: Path
) -> None:
    job = _job(mongo_db, tmp_path)
    job.email_log.claim("job:m-2", "m-2")  # what the crashed run left behind
    payload = EmailPayload.parse({"to": "ana@example.com", "subject": "Code", "text": "418203"})
    with email_log_lines() as lines:
        result = job.run(payload, job_id="m-2", enqueued_at=T0)
    assert result["already_sent"] is False
    assert any(
        level == logging.WARNING and "stopped while sending and its outcome is unknown" in text
        for level, text in lines
    )


def test_failed_send_releases_the_claim(mongo_db: Database[Document], tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the outbox folder should be")
    job = _job(mongo_db, blocked)
    payload = EmailPayload.parse({"to": "ana@example.com", "subject": "Code", "text": "418203"})
    with pytest.raises(OSError):
        job.run(payload, job_id="m-3", enqueued_at=T0)
    assert mongo_db["email_log"].find_one({"_id": "job:m-3"}) is None
