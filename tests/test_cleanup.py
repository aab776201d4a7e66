"""cleanup: exact deletions by rule, in bounded batches, resumable, with an honest dry run.

Runs against the MongoDB-wire test server. The database-outage case
(SRV_6002, retried) is covered together with the analytics job in
tests/test_analytics.py.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dramatiq.message import Message
from pymongo import monitoring
from pymongo.database import Database

from jobs.cleanup.batches import Batching, delete_by_id_lists
from jobs.cleanup.rules import CleanupType
from jobs.cleanup.run import CleanupReport, cleanup
from jobs.collections import CollectionNames
from middleware.errors import JobError
from tests.conftest import FAST_POLICY, Stack
from tests.services.mongo import client_for
from tests.support.events import error_log_is_old, generate_error_logs, generate_events, utc

Db = Database[dict[str, Any]]
NAMES = CollectionNames()
NOW = utc(2026, 3, 1, 12)
DAYS = 30
CUTOFF = NOW - timedelta(days=DAYS)  # 2026-01-30T12:00Z


def _seed(db: Db, seed: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    events = generate_events(rng, CUTOFF - timedelta(days=6), days=9, count=900)
    ms = timedelta(milliseconds=1)
    events += [
        {"type": "view", "user_id": "edge", "created_at": CUTOFF},  # not older: kept
        {"type": "view", "user_id": "edge", "created_at": CUTOFF - ms},  # older: deleted
        {"type": "view", "user_id": "ancient", "created_at": utc(2019, 5, 5)},
    ]
    logs = generate_error_logs(rng, CUTOFF, count=300)
    db["analytics_events"].insert_many(events)
    db["error_logs"].insert_many(logs)
    return events, logs


def _seed_aggregates(db: Db) -> list[dict[str, Any]]:
    docs = [
        {
            "bucket": utc(2025, 1, 1, h),
            "type": "_all",
            "count": h + 1,
            "unique_users": 1,
            "updated_at": utc(2025, 1, 2),
        }
        for h in range(5)
    ]
    db["analytics_hourly"].insert_many([dict(d) for d in docs])
    db["analytics_daily"].insert_many([dict(d) for d in docs])
    return sorted(db["analytics_hourly"].find({}), key=lambda d: d["bucket"])


def _ids(db: Db, collection: str) -> set[Any]:
    return {d["_id"] for d in db[collection].find({}, {"_id": 1})}


def _run(
    db: Db, cleanup_type: CleanupType, *, dry_run: bool = False, size: int = 60, **kwargs: Any
) -> CleanupReport:
    batching = kwargs.pop("batching", Batching(size=size))
    return cleanup(db, cleanup_type, DAYS, dry_run=dry_run, names=NAMES, batching=batching, now=NOW, **kwargs)


# -- what goes and what stays --------------------------------------------------------------------


@pytest.mark.parametrize("cleanup_type", ["analytics", "error_logs", "all"])
def test_exactly_the_old_documents_of_the_type_are_deleted(mongo_db: Db, cleanup_type: CleanupType) -> None:
    events, logs = _seed(mongo_db)
    aggregates = _seed_aggregates(mongo_db)
    old_events = {e["_id"] for e in events if e["created_at"] < CUTOFF}
    old_logs = {log["_id"] for log in logs if error_log_is_old(log, CUTOFF)}
    assert 0 < len(old_events) < len(events) and 0 < len(old_logs) < len(logs)  # data straddles the cutoff

    report = _run(mongo_db, cleanup_type)

    expected: dict[str, int] = {}
    if cleanup_type in ("analytics", "all"):
        expected["analytics_events"] = len(old_events)
    if cleanup_type in ("error_logs", "all"):
        expected["error_logs"] = len(old_logs)
    assert report.deleted == expected
    assert report.as_result() == {
        "success": True,
        "deleted": expected,
        "dry_run": False,
        "cutoff": "2026-01-30T12:00:00.000Z",
    }
    events_left = {e["_id"] for e in events} - (old_events if "analytics_events" in expected else set())
    logs_left = {log["_id"] for log in logs} - (old_logs if "error_logs" in expected else set())
    assert _ids(mongo_db, "analytics_events") == events_left
    assert _ids(mongo_db, "error_logs") == logs_left
    # unresolved logs are all still there, whatever their age
    assert {log["_id"] for log in logs if not log["resolved"]} <= logs_left
    # aggregates are never touched
    assert sorted(mongo_db["analytics_hourly"].find({}), key=lambda d: d["bucket"]) == aggregates
    assert mongo_db["analytics_daily"].count_documents({}) == len(aggregates)


def test_dry_run_deletes_nothing_and_counts_what_the_real_run_then_deletes(mongo_db: Db) -> None:
    _seed(mongo_db, seed=2)
    before = {c: _ids(mongo_db, c) for c in ("analytics_events", "error_logs")}

    dry = _run(mongo_db, "all", dry_run=True)
    assert {c: _ids(mongo_db, c) for c in before} == before
    assert dry.dry_run is True and dry.as_result()["dry_run"] is True

    real = _run(mongo_db, "all")
    assert real.deleted == dry.deleted
    assert {c: len(before[c]) - len(_ids(mongo_db, c)) for c in before} == dry.deleted
    assert all(n > 0 for n in dry.deleted.values())


def test_indexes_the_deletion_needs_are_ensured(mongo_db: Db) -> None:
    _run(mongo_db, "all", dry_run=True)
    keys = {
        c: [dict(ix["key"]) for ix in mongo_db[c].list_indexes()] for c in ("analytics_events", "error_logs")
    }
    assert {"created_at": 1} in keys["analytics_events"]
    assert {"resolved": 1, "resolved_at": 1, "created_at": 1} in keys["error_logs"]


# -- batches -------------------------------------------------------------------------------------


class _Crash(Exception):
    """The worker dying between two batches."""


def test_run_interrupted_after_some_batches_is_finished_by_the_next(mongo_db: Db) -> None:
    events, _ = _seed(mongo_db, seed=3)
    old = sum(1 for e in events if e["created_at"] < CUTOFF)
    pauses: list[float] = []

    def dying_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise _Crash

    batching = Batching(size=40, pause_s=0.002)
    with pytest.raises(_Crash):
        _run(mongo_db, "analytics", batching=batching, sleep=dying_sleep)
    deleted_before_crash = len(events) - mongo_db["analytics_events"].count_documents({})
    assert 0 < deleted_before_crash < old
    assert pauses == [0.002] * 3  # paused between batches, as asked

    report = _run(mongo_db, "analytics", batching=batching, sleep=lambda s: None)
    assert report.deleted == {"analytics_events": old - deleted_before_crash}
    assert mongo_db["analytics_events"].count_documents({"created_at": {"$lt": CUTOFF}}) == 0
    assert mongo_db["analytics_events"].count_documents({}) == len(events) - old


class _Deletes(monitoring.CommandListener):
    """Documents removed by each delete command, from the server's replies."""

    def __init__(self) -> None:
        self.removed: list[int] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "delete":
            self.removed.append(int(event.reply["n"]))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def watched_db(mongo_url: str, mongo_db: Db) -> Iterator[tuple[Db, _Deletes]]:
    deletes = _Deletes()
    client = client_for(mongo_url, event_listeners=[deletes])
    try:
        yield client[mongo_db.name], deletes
    finally:
        client.close()


def test_no_delete_exceeds_twice_the_batch_even_with_bursts_and_ties(
    watched_db: tuple[Db, _Deletes], caplog: pytest.LogCaptureFixture
) -> None:
    db, deletes = watched_db
    rng = random.Random(4)
    burst = CUTOFF - timedelta(days=3)
    events = [{"type": "view", "created_at": burst} for _ in range(130)]  # one millisecond
    events += [
        {"type": "view", "created_at": burst + timedelta(seconds=rng.uniform(0, 5))} for _ in range(150)
    ]
    events += [
        {"type": "view", "created_at": CUTOFF - timedelta(days=rng.uniform(0, 300))} for _ in range(120)
    ]
    events += [{"type": "view", "created_at": CUTOFF + timedelta(days=rng.uniform(0, 3))} for _ in range(50)]
    db["analytics_events"].insert_many(events)

    with caplog.at_level(logging.INFO, logger="jobs.cleanup"):
        report = _run(db, "analytics", batching=Batching(size=20, progress_every=5))

    assert report.deleted == {"analytics_events": 400}
    assert db["analytics_events"].count_documents({}) == 50
    assert sum(deletes.removed) == 400
    assert max(deletes.removed) <= 40, deletes.removed
    progress = [r.getMessage() for r in caplog.records if "batches," in r.getMessage()]
    assert len(progress) >= 2 and all("done up to" in line for line in progress)


def test_id_list_strategy_deletes_exactly_the_query(mongo_db: Db) -> None:
    """The alternative measured in bench/cleanup.py (and the fallback for ties)."""
    events, _ = _seed(mongo_db, seed=5)
    old = sum(1 for e in events if e["created_at"] < CUTOFF)
    query = {"created_at": {"$lt": CUTOFF}}
    assert (
        delete_by_id_lists(mongo_db["analytics_events"], query, Batching(size=64), sort_field="created_at")
        == old
    )
    assert mongo_db["analytics_events"].count_documents(query) == 0


# -- validation and the worker ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cleanup_type": "analytics", "older_than_days": 6}, "older_than_days"),
        ({"cleanup_type": "analytics", "older_than_days": 0}, "older_than_days"),
        ({"cleanup_type": "analytics", "older_than_days": -30}, "older_than_days"),
        ({"cleanup_type": "analytics", "older_than_days": 30.0}, "older_than_days"),
        ({"cleanup_type": "analytics", "older_than_days": "30"}, "older_than_days"),
        ({"cleanup_type": "analytics", "older_than_days": True}, "older_than_days"),
        ({"cleanup_type": "analytics", "older_than_days": 36_501}, "older_than_days"),
        ({"cleanup_type": "sessions", "older_than_days": 30}, "cleanup_type"),
        ({"cleanup_type": "analytics", "older_than_days": 30, "dry_run": "yes"}, "dry_run"),
    ],
)
def test_invalid_payloads_are_refused_at_send(
    embedded_stack: Stack, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(JobError) as info:
        embedded_stack.actors.cleanup.send(**kwargs)
    assert info.value.code == "VAL_2001"
    assert field in [d["field"] for d in info.value.details]
    assert embedded_stack.broker.do_qsize("cleanup") == 0


@pytest.fixture
def stack(make_stack: Callable[[dict[str, str]], Stack], mongo_url: str, mongo_db: Db) -> Stack:
    return make_stack(
        {"MONGO_URL": mongo_url, "MONGO_DB": mongo_db.name, "CLEANUP_BATCH_SIZE": "25", **FAST_POLICY}
    )


def test_worker_dry_run_then_real_run_and_refusals(stack: Stack, mongo_db: Db) -> None:
    now = datetime.now(UTC)
    # Well clear of the 30-day cutoff, whenever the job reads the clock.
    old = [{"type": "view", "created_at": now - timedelta(days=31 + n % 20, minutes=n)} for n in range(90)]
    recent = [{"type": "view", "created_at": now - timedelta(days=29 - n % 20)} for n in range(40)]
    logs = [
        {
            "message": "a",
            "code": "SRV_6001",
            "resolved": True,
            "resolved_at": now - timedelta(days=40),
            "created_at": now - timedelta(days=41),
        },
        {
            "message": "b",
            "code": "SRV_6001",
            "resolved": True,
            "resolved_at": None,
            "created_at": now - timedelta(days=45),
        },
        {
            "message": "c",
            "code": "SRV_6001",
            "resolved": False,
            "resolved_at": None,
            "created_at": now - timedelta(days=400),
        },
        {
            "message": "d",
            "code": "SRV_6001",
            "resolved": True,
            "resolved_at": now - timedelta(days=2),
            "created_at": now - timedelta(days=90),
        },
    ]
    mongo_db["analytics_events"].insert_many(old + recent)
    mongo_db["error_logs"].insert_many(logs)

    # Refusals forged past send(): the worker checks again; nothing is retried or deleted.
    forged: list[Message[Any]] = [
        Message(queue_name="cleanup", actor_name="cleanup", args=(), kwargs=kwargs, options={})
        for kwargs in (
            {"cleanup_type": "all", "older_than_days": 3},
            {"cleanup_type": "all", "older_than_days": -1},
            {"cleanup_type": "all", "older_than_days": 7.5},
            {"cleanup_type": "everything", "older_than_days": 30},
        )
    ]
    for message in forged:
        stack.broker.enqueue(message)
    for message in forged:
        with pytest.raises(JobError) as info:
            stack.api.result(message.message_id, timeout=15)
        assert info.value.code == "VAL_2001"
        assert stack.api.status(message.message_id)["attempts"] == 1  # type: ignore[index]
    assert mongo_db["analytics_events"].count_documents({}) == 130
    assert mongo_db["error_logs"].count_documents({}) == 4

    expected = {"analytics_events": 90, "error_logs": 2}
    dry = stack.actors.cleanup.send(cleanup_type="all", older_than_days=30, dry_run=True).message_id
    dry_result = stack.api.result(dry, timeout=20)
    assert (dry_result["deleted"], dry_result["dry_run"]) == (expected, True)
    assert mongo_db["analytics_events"].count_documents({}) == 130

    real = stack.actors.cleanup.send(cleanup_type="all", older_than_days=30).message_id
    result = stack.api.result(real, timeout=20)
    assert (result["success"], result["deleted"], result["dry_run"]) == (True, expected, False)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert now - timedelta(days=30) <= cutoff <= datetime.now(UTC) - timedelta(days=30)
    assert mongo_db["analytics_events"].count_documents({}) == 40
    assert sorted(d["message"] for d in mongo_db["error_logs"].find({})) == ["c", "d"]
