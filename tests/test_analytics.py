"""aggregate_analytics: exact, idempotent roll-ups computed in the database (MongoDB-wire test server).

Every roll-up is compared document by document with a reference computed
here in plain Python (tests/support/events.py).
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

from jobs.analytics.ranges import TimeRange, day_chunks, requested_range, whole_buckets
from jobs.analytics.rollup import RollupReport, aggregate
from jobs.collections import AggregationType, CollectionNames
from jobs.mongo_indexes import AGGREGATE_INDEXES, EVENT_INDEXES, ensure_indexes
from jobs.payloads import AnalyticsPayload
from middleware.errors import JobError
from tests.conftest import FAST_POLICY, Stack
from tests.services.mongo import MongoDaemon, client_for
from tests.support.events import generate_events, reference_rollup, stored_rollup, utc
from tests.support.redis_inspect import wait_until

Db = Database[dict[str, Any]]
NAMES = CollectionNames()


def _run(db: Db, start: str, end: str, kind: AggregationType, **kwargs: Any) -> RollupReport:
    return aggregate(db, requested_range(start, end), kind, names=NAMES, **kwargs)


def _target(db: Db, kind: AggregationType) -> Any:
    return db[NAMES.aggregates(kind)]


# -- the result, document by document -------------------------------------------------------


@pytest.mark.parametrize("kind", ["hourly", "daily"])
def test_rollup_equals_plain_python_reference(mongo_db: Db, kind: AggregationType) -> None:
    events = generate_events(random.Random(7), utc(2026, 1, 1), days=3, count=1500)
    mongo_db["analytics_events"].insert_many(events)

    report = _run(mongo_db, "2026-01-01", "2026-01-03", kind)

    expected = reference_rollup(events, kind, utc(2026, 1, 1), utc(2026, 1, 4))
    assert stored_rollup(_target(mongo_db, kind)) == expected
    # the generator's edge events are there: nulls, missing users, bucket edges
    assert any(users < count for (_, t), (count, users) in expected.items() if t != "_all")
    assert (utc(2026, 1, 2), "_all") in expected
    all_rows = {k: v for k, v in expected.items() if k[1] == "_all"}
    assert (report.buckets, report.events) == (len(all_rows), sum(c for c, _ in all_rows.values()))
    assert report.as_result()["start"] == "2026-01-01T00:00:00.000Z"
    assert report.as_result()["end"] == "2026-01-04T00:00:00.000Z"


def test_all_counts_distinct_users_across_types_not_a_sum(mongo_db: Db) -> None:
    at = utc(2026, 1, 1, 10, 5)
    mongo_db["analytics_events"].insert_many(
        [
            {"type": "view", "user_id": "ana", "created_at": at},
            {"type": "view", "user_id": "ana", "created_at": at},
            {"type": "like", "user_id": "ana", "created_at": at},
            {"type": "like", "user_id": "rui", "created_at": at},
            {"type": "like", "user_id": None, "created_at": at},
            {"type": "like", "created_at": at},
        ]
    )
    _run(mongo_db, "2026-01-01", "2026-01-01", "hourly")
    assert stored_rollup(_target(mongo_db, "hourly")) == {
        (utc(2026, 1, 1, 10), "view"): (2, 1),
        (utc(2026, 1, 1, 10), "like"): (4, 2),
        (utc(2026, 1, 1, 10), "_all"): (6, 2),
    }


# -- range semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "kind", "expected"),
    [
        # YYYY-MM-DD: whole days, the end day included
        ("2026-01-01", "2026-01-01", "hourly", (utc(2026, 1, 1), utc(2026, 1, 2))),
        ("2026-01-01", "2026-01-03", "daily", (utc(2026, 1, 1), utc(2026, 1, 4))),
        # datetimes: the end excluded; already whole buckets stay as they are
        (
            "2026-01-01T10:00:00Z",
            "2026-01-01T12:00:00Z",
            "hourly",
            (utc(2026, 1, 1, 10), utc(2026, 1, 1, 12)),
        ),
        # partial buckets at the edges are widened to whole ones
        (
            "2026-01-01T10:30:00Z",
            "2026-01-01T12:15:00Z",
            "hourly",
            (utc(2026, 1, 1, 10), utc(2026, 1, 1, 13)),
        ),
        ("2026-01-01T06:00:00Z", "2026-01-01T18:00:00Z", "daily", (utc(2026, 1, 1), utc(2026, 1, 2))),
        # offsets are converted to UTC; no offset means UTC
        (
            "2026-01-02T01:00:00+02:00",
            "2026-01-02T03:00:00",
            "hourly",
            (utc(2026, 1, 1, 23), utc(2026, 1, 2, 3)),
        ),
        ("2026-01-01T23:30:00-01:00", "2026-01-02", "daily", (utc(2026, 1, 2), utc(2026, 1, 3))),
        # a date and a datetime mixed
        ("2026-01-01", "2026-01-01T05:20:00.250Z", "hourly", (utc(2026, 1, 1), utc(2026, 1, 1, 6))),
    ],
)
def test_range_rule(start: str, end: str, kind: AggregationType, expected: tuple[datetime, datetime]) -> None:
    assert whole_buckets(requested_range(start, end), kind) == TimeRange(*expected)


def test_day_chunks_cut_at_utc_midnight_on_bucket_edges() -> None:
    span = TimeRange(utc(2026, 1, 1, 10), utc(2026, 1, 3, 5))
    assert list(day_chunks(span)) == [
        TimeRange(utc(2026, 1, 1, 10), utc(2026, 1, 2)),
        TimeRange(utc(2026, 1, 2), utc(2026, 1, 3)),
        TimeRange(utc(2026, 1, 3), utc(2026, 1, 3, 5)),
    ]


def _edge_events() -> list[dict[str, Any]]:
    ms = timedelta(milliseconds=1)
    moments = [
        utc(2025, 12, 31) - ms,  # before every range below
        utc(2026, 1, 1),
        utc(2026, 1, 2, 22, 59, 59) + timedelta(milliseconds=999),
        utc(2026, 1, 2, 23),
        utc(2026, 1, 3) - ms,  # last millisecond of the 2nd
        utc(2026, 1, 3),  # first of the 3rd
    ]
    return [{"type": "view", "user_id": f"u{n}", "created_at": m} for n, m in enumerate(moments)]


def test_date_end_day_is_included_whole(mongo_db: Db) -> None:
    events = _edge_events()
    mongo_db["analytics_events"].insert_many(events)
    _run(mongo_db, "2026-01-01", "2026-01-02", "daily")
    rows = stored_rollup(_target(mongo_db, "daily"))
    assert rows == reference_rollup(events, "daily", utc(2026, 1, 1), utc(2026, 1, 3))
    assert rows[(utc(2026, 1, 2), "_all")] == (3, 3)  # 22:59:59.999, 23:00 and 23:59:59.999
    assert (utc(2026, 1, 3), "_all") not in rows


def test_datetime_end_is_excluded_and_offsets_are_utc(mongo_db: Db) -> None:
    events = _edge_events()
    mongo_db["analytics_events"].insert_many(events)
    # 2026-01-03T02:00+02:00 is midnight UTC: the event at midnight is not in the range
    report = _run(mongo_db, "2026-01-02T22:00:00", "2026-01-03T02:00:00+02:00", "hourly")
    rows = stored_rollup(_target(mongo_db, "hourly"))
    assert rows == reference_rollup(events, "hourly", utc(2026, 1, 2, 22), utc(2026, 1, 3))
    assert set(rows) == {
        (utc(2026, 1, 2, 22), "view"),
        (utc(2026, 1, 2, 22), "_all"),
        (utc(2026, 1, 2, 23), "view"),
        (utc(2026, 1, 2, 23), "_all"),
    }
    assert report.events == 3


def test_partial_edge_buckets_are_recomputed_whole(mongo_db: Db) -> None:
    minutes = (5, 29, 30, 59)
    events = [
        {"type": "view", "user_id": f"u{h}{m}", "created_at": utc(2026, 1, 1, h, m)}
        for h in (9, 10, 11, 12, 13)
        for m in minutes
    ]
    mongo_db["analytics_events"].insert_many(events)
    report = _run(mongo_db, "2026-01-01T10:30:00Z", "2026-01-01T12:15:00Z", "hourly")
    rows = stored_rollup(_target(mongo_db, "hourly"))
    # hours 10 and 12 hold all their events, not only those inside 10:30-12:15
    assert rows == reference_rollup(events, "hourly", utc(2026, 1, 1, 10), utc(2026, 1, 1, 13))
    assert rows[(utc(2026, 1, 1, 10), "_all")] == (4, 4)
    assert rows[(utc(2026, 1, 1, 12), "_all")] == (4, 4)
    assert report.span == TimeRange(utc(2026, 1, 1, 10), utc(2026, 1, 1, 13))


# -- idempotency and convergence ----------------------------------------------------------


def test_rerun_after_events_added_and_deleted_converges_to_the_new_truth(mongo_db: Db) -> None:
    rng = random.Random(11)
    events_coll = mongo_db["analytics_events"]
    events = generate_events(rng, utc(2026, 1, 1), days=2, count=800)
    events_coll.insert_many(events)
    target = _target(mongo_db, "hourly")
    outside = {
        "bucket": utc(2025, 12, 1),
        "type": "_all",
        "count": 9,
        "unique_users": 9,
        "updated_at": utc(2025, 12, 2),
    }
    target.insert_one(dict(outside))

    _run(mongo_db, "2026-01-01", "2026-01-02", "hourly")
    first = {d["_id"]: d for d in target.find({})}
    _run(mongo_db, "2026-01-01", "2026-01-02", "hourly")
    second = {d["_id"]: d for d in target.find({})}
    # the same documents (same _id), only updated_at moved forward
    assert second.keys() == first.keys()
    for key, doc in second.items():
        assert {k: v for k, v in doc.items() if k != "updated_at"} == {
            k: v for k, v in first[key].items() if k != "updated_at"
        }
        if doc["bucket"] >= datetime(2026, 1, 1):
            assert doc["updated_at"] > first[key]["updated_at"]

    # events deleted: every event of one hour, and every "like" of another
    gone_hour = (utc(2026, 1, 1, 5), utc(2026, 1, 1, 6))
    gone_type = (utc(2026, 1, 2, 13), utc(2026, 1, 2, 14))
    events_coll.delete_many({"created_at": {"$gte": gone_hour[0], "$lt": gone_hour[1]}})
    events_coll.delete_many({"type": "like", "created_at": {"$gte": gone_type[0], "$lt": gone_type[1]}})
    # events added: to an existing bucket, of a new type, and in an hour that had none
    added: list[dict[str, Any]] = [
        {"type": "view", "user_id": "new-user", "created_at": utc(2026, 1, 1, 7, 7)},
        {"type": "bookmark", "user_id": "u1", "created_at": utc(2026, 1, 2, 9, 9)},
        {"type": "view", "user_id": None, "created_at": utc(2026, 1, 1, 5, 30)},
    ]
    events_coll.insert_many(added)
    now = list(events_coll.find({}))

    report = _run(mongo_db, "2026-01-01", "2026-01-02", "hourly")

    expected = reference_rollup(now, "hourly", utc(2026, 1, 1), utc(2026, 1, 3))
    expected[(utc(2025, 12, 1), "_all")] = (9, 9)  # outside the range: untouched
    assert stored_rollup(target) == expected
    assert (gone_type[0], "like") not in expected  # the stale type document was removed
    assert expected[(utc(2026, 1, 1, 5), "_all")] == (1, 0)
    assert report.stale_removed >= 2


def test_half_done_earlier_run_is_simply_recomputed(mongo_db: Db) -> None:
    """Wrong or stale documents left behind (even stamped in the future by a skewed clock) are replaced."""
    events = generate_events(random.Random(3), utc(2026, 1, 1), days=1, count=300)
    mongo_db["analytics_events"].insert_many(events)
    target = _target(mongo_db, "daily")
    ensure_indexes(target, AGGREGATE_INDEXES)
    future = datetime.now(UTC) + timedelta(days=3)
    target.insert_many(
        [
            {"bucket": utc(2026, 1, 1), "type": "_all", "count": 1, "unique_users": 1, "updated_at": future},
            {"bucket": utc(2026, 1, 1), "type": "ghost", "count": 5, "unique_users": 5, "updated_at": future},
            {"bucket": utc(2026, 1, 1), "type": "view", "count": 2, "unique_users": 1},  # no updated_at
        ]
    )
    _run(mongo_db, "2026-01-01", "2026-01-01", "daily")
    assert stored_rollup(target) == reference_rollup(events, "daily", utc(2026, 1, 1), utc(2026, 1, 2))


def test_a_fixed_clock_still_replaces_the_previous_run(mongo_db: Db) -> None:
    mongo_db["analytics_events"].insert_one(
        {"type": "view", "user_id": "a", "created_at": utc(2026, 1, 1, 3)}
    )
    fixed = lambda: utc(2026, 2, 1)  # noqa: E731
    _run(mongo_db, "2026-01-01", "2026-01-01", "hourly", clock=fixed)
    mongo_db["analytics_events"].delete_many({})
    _run(mongo_db, "2026-01-01", "2026-01-01", "hourly", clock=fixed)
    assert stored_rollup(_target(mongo_db, "hourly")) == {}


# -- how it runs: chunks, operators, indexes --------------------------------------------------


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def watched_db(mongo_url: str, mongo_db: Db) -> Iterator[tuple[Db, _Commands]]:
    """The test's database through a client that records every command sent."""
    commands = _Commands()
    client = client_for(mongo_url, event_listeners=[commands])
    try:
        yield client[mongo_db.name], commands
    finally:
        client.close()


def test_long_range_runs_in_day_chunks_in_the_database_with_progress(
    watched_db: tuple[Db, _Commands], caplog: pytest.LogCaptureFixture
) -> None:
    db, commands = watched_db
    events = generate_events(random.Random(5), utc(2026, 1, 1), days=3, count=600)
    db["analytics_events"].insert_many(events)
    commands.sent.clear()
    with caplog.at_level(logging.INFO, logger="jobs.analytics"):
        _run(db, "2026-01-01", "2026-01-03", "hourly")

    pipelines = [e.command["pipeline"] for e in commands.sent if e.command_name == "aggregate"]
    assert len(pipelines) == 3  # one per day
    for pipeline in pipelines:
        match = pipeline[0]["$match"]["created_at"]
        assert match["$lt"] - match["$gte"] <= timedelta(days=1)
        assert "$merge" in pipeline[-1]  # results written by the server, not by us
    # events are never read into Python: no find on the events collection
    assert not [e for e in commands.sent if e.command.get("find") == "analytics_events"]
    progress = [r.getMessage() for r in caplog.records if "roll-up: chunk" in r.getMessage()]
    assert [line.split("chunk ")[1][:3] for line in progress] == ["1/3", "2/3", "3/3"]


def test_indexes_are_created_once_and_reused(mongo_db: Db) -> None:
    events = mongo_db["analytics_events"]
    events.create_index("created_at", name="app_made_this_one")
    _run(mongo_db, "2026-01-01", "2026-01-01", "daily")
    _run(mongo_db, "2026-01-01", "2026-01-01", "daily")
    event_keys = sorted(tuple(ix["key"].items()) for ix in events.list_indexes())
    assert event_keys == [(("_id", 1),), (("created_at", 1),), (("created_at", 1), ("type", 1))]
    [key_index] = [ix for ix in _target(mongo_db, "daily").list_indexes() if ix["name"] != "_id_"]
    assert dict(key_index["key"]) == {"bucket": 1, "type": 1} and key_index["unique"] is True
    assert ensure_indexes(events, EVENT_INDEXES) == []


def test_a_non_unique_key_index_is_reported_not_retried(mongo_db: Db) -> None:
    _target(mongo_db, "hourly").create_index([("bucket", 1), ("type", 1)])
    with pytest.raises(JobError) as info:
        _run(mongo_db, "2026-01-01", "2026-01-01", "hourly")
    assert info.value.code == "SRV_6001" and info.value.retry is False


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start_date": "2026-02-30", "end_date": "2026-03-01"}, "start_date"),
        ({"start_date": "01/02/2026", "end_date": "2026-03-01"}, "start_date"),
        ({"start_date": "2026-01-01", "end_date": "2026-01-01T25:00:00Z"}, "end_date"),
        ({"start_date": "2026-01-01", "end_date": "tomorrow!!"}, "end_date"),
        ({"start_date": "2026-01-03", "end_date": "2026-01-02"}, "(payload)"),
        ({"start_date": "2026-01-01T10:00:00Z", "end_date": "2026-01-01T10:00:00Z"}, "(payload)"),
        ({"start_date": "2026-01-01T10:00:00Z", "end_date": "2026-01-01T12:00:00+03:00"}, "(payload)"),
        ({"start_date": "1969-12-31", "end_date": "2026-01-01"}, "start_date"),
        (
            {"start_date": "2026-01-01", "end_date": "2026-01-02", "aggregation_type": "weekly"},
            "aggregation_type",
        ),
        ({"start_date": 20260101, "end_date": "2026-01-02"}, "start_date"),
    ],
)
def test_invalid_payloads_are_refused_at_send(
    embedded_stack: Stack, kwargs: dict[str, Any], field: str
) -> None:
    payload = {"aggregation_type": "hourly", **kwargs}
    with pytest.raises(JobError) as info:
        embedded_stack.actors.aggregate_analytics.send(**payload)
    assert info.value.code == "VAL_2001"
    assert field in [d["field"] for d in info.value.details]


def test_range_longer_than_the_maximum_is_refused_by_the_schema() -> None:
    payload = {"start_date": "2026-01-01", "end_date": "2026-01-31", "aggregation_type": "daily"}
    assert AnalyticsPayload.parse(payload, {"analytics_max_range_days": 31})
    with pytest.raises(JobError) as info:
        AnalyticsPayload.parse(payload, {"analytics_max_range_days": 30})
    assert info.value.code == "VAL_2001" and "ANALYTICS_MAX_RANGE_DAYS" in info.value.message


# -- through the worker -------------------------------------------------------------------------


@pytest.fixture
def stack(make_stack: Callable[[dict[str, str]], Stack], mongo_url: str, mongo_db: Db) -> Stack:
    return make_stack(
        {"MONGO_URL": mongo_url, "MONGO_DB": mongo_db.name, "ANALYTICS_MAX_RANGE_DAYS": "7", **FAST_POLICY}
    )


def test_worker_runs_the_job_and_returns_totals(stack: Stack, mongo_db: Db) -> None:
    events = generate_events(random.Random(9), utc(2026, 1, 1), days=2, count=400)
    mongo_db["analytics_events"].insert_many(events)
    job = stack.actors.aggregate_analytics.send(
        start_date="2026-01-01", end_date="2026-01-02", aggregation_type="daily"
    ).message_id
    result = stack.api.result(job, timeout=20)
    expected = reference_rollup(events, "daily", utc(2026, 1, 1), utc(2026, 1, 3))
    assert stored_rollup(_target(mongo_db, "daily")) == expected
    assert result == {
        "success": True,
        "aggregation_type": "daily",
        "start": "2026-01-01T00:00:00.000Z",
        "end": "2026-01-03T00:00:00.000Z",
        "buckets": 2,
        "events": expected[(utc(2026, 1, 1), "_all")][0] + expected[(utc(2026, 1, 2), "_all")][0],
        "stale_removed": 0,
    }


BAD_AT_RUN = [
    {"start_date": "2026-01-01", "end_date": "2026-01-31", "aggregation_type": "daily"},  # > 7 days
    {"start_date": "2026-01-05", "end_date": "2026-01-01", "aggregation_type": "daily"},
    {"start_date": "2026-01-01", "end_date": "2026-01-01", "aggregation_type": "monthly"},
]


def test_worker_refuses_bad_ranges_with_val_2001_and_does_not_retry(stack: Stack, mongo_db: Db) -> None:
    mongo_db["analytics_events"].insert_one({"type": "view", "user_id": "a", "created_at": utc(2026, 1, 2)})
    # Forged past send(): the worker's own checks are what is tested.
    messages: list[Message[Any]] = [
        Message(queue_name="analytics", actor_name="aggregate_analytics", args=(), kwargs=kwargs, options={})
        for kwargs in BAD_AT_RUN
    ]
    for message in messages:
        stack.broker.enqueue(message)
    for message in messages:
        with pytest.raises(JobError) as info:
            stack.api.result(message.message_id, timeout=15)
        assert info.value.code == "VAL_2001", message.kwargs
        status = stack.api.status(message.message_id)
        assert status is not None and status["attempts"] == 1, status
    assert "analytics_daily" not in mongo_db.list_collection_names()


@pytest.mark.slow
def test_database_outage_is_srv_6002_retried_then_both_jobs_succeed(
    make_stack: Callable[[dict[str, str]], Stack], mongo_daemon: MongoDaemon
) -> None:
    """MongoDB down: each job fails with SRV_6002 and is retried; once it is back, both succeed.

    Covers the cleanup job too (issue 8), to pay for the 5 s server-selection timeout once.
    """
    url = mongo_daemon.url
    mongo_daemon.stop()
    stack = make_stack(
        {
            "MONGO_URL": url,
            "MONGO_DB": "outage",
            **FAST_POLICY,
            # Room to restart the daemon and seed it before the second attempts.
            "ANALYTICS_BACKOFF_MIN_MS": "3000",
            "CLEANUP_BACKOFF_MIN_MS": "3000",
        }
    )
    analytics = stack.actors.aggregate_analytics.send(
        start_date="2026-01-01", end_date="2026-01-01", aggregation_type="hourly"
    ).message_id
    # The cleanup's cutoff (400 days) is well before the analytics range, so the two cannot race.
    cleanup = stack.actors.cleanup.send(cleanup_type="analytics", older_than_days=400).message_id

    def retrying(job: str) -> bool:
        status = stack.api.status(job) or {}
        return status.get("state") == "retrying" and status.get("error_code") == "SRV_6002"

    assert wait_until(lambda: retrying(analytics) and retrying(cleanup), timeout=20)
    mongo_daemon.start()  # same port, empty (in-memory storage)
    client = mongo_daemon.client()
    try:
        old = datetime.now(UTC) - timedelta(days=500)
        client["outage"]["analytics_events"].insert_many(
            [
                {"type": "view", "user_id": "a", "created_at": utc(2026, 1, 1, 4)},
                {"type": "like", "user_id": "b", "created_at": old},
            ]
        )
        assert stack.api.result(analytics, timeout=20)["events"] == 1
        assert stack.api.result(cleanup, timeout=20)["deleted"] == {"analytics_events": 1}
        for job in (analytics, cleanup):
            assert stack.api.status(job)["attempts"] == 2  # type: ignore[index]
        assert client["outage"]["analytics_hourly"].count_documents({}) == 2
    finally:
        client.close()
        # Before the daemon's teardown: it stops in 0.05 s with no client
        # connected, and takes seconds to give up on connected ones.
        stack.runtime.close()
