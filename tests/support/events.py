"""Generated analytics events and error logs, and roll-ups computed independently in plain Python.

The reference roll-up shares no code with the job: it truncates datetimes
with ``datetime.replace`` and counts with dicts and sets, so a bug in the
pipeline cannot hide in both.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection

Document = dict[str, Any]
Rollup = dict[tuple[datetime, str], tuple[int, int]]

TYPES = ("view", "like", "comment", "share", "signup")
USERS = tuple(f"u{n}" for n in range(40))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def generate_events(rng: random.Random, start: datetime, days: int, count: int) -> list[Document]:
    """``count`` random events over ``days`` days from ``start``, plus the edge cases.

    Random types and users; about one in six has a null user and one in
    twelve no ``user_id`` at all. Edge cases: events exactly on each hour
    and day edge, on the last millisecond before midnight, and the first of
    the day after the span (outside it).
    """
    events: list[Document] = []
    span_ms = days * 86_400_000
    for _ in range(count):
        events.append(_event(rng, start + timedelta(milliseconds=rng.randrange(span_ms))))
    for day in range(days + 1):
        midnight = start + timedelta(days=day)
        events.append(_event(rng, midnight))
        events.append(_event(rng, midnight - timedelta(milliseconds=1)))
        for hour in (1, 7, 13, 23):
            events.append(_event(rng, midnight + timedelta(hours=hour)))
    return events


def _event(rng: random.Random, created_at: datetime) -> Document:
    doc: Document = {
        "_id": ObjectId(),
        "type": rng.choice(TYPES),
        "created_at": created_at,
        "properties": {"screen": rng.choice(["feed", "trip", "profile"])},
    }
    roll = rng.random()
    if roll < 1 / 12:
        pass  # no user_id field at all
    elif roll < 3 / 12:
        doc["user_id"] = None
    else:
        doc["user_id"] = rng.choice(USERS)
    return doc


def truncate(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == "hourly":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def reference_rollup(events: Iterable[Document], unit: str, start: datetime, end: datetime) -> Rollup:
    """``{(bucket, type): (count, distinct non-null users)}`` for events in ``[start, end)``.

    Each bucket also gets its ``_all`` row.
    """
    counts: dict[tuple[datetime, str], int] = defaultdict(int)
    users: dict[tuple[datetime, str], set[str]] = defaultdict(set)
    for event in events:
        created = _ms(event["created_at"])
        if not start <= created < end:
            continue
        bucket = truncate(created, unit)
        for kind in (event["type"], "_all"):
            counts[(bucket, kind)] += 1
            user = event.get("user_id")
            users[(bucket, kind)]  # the key exists even when no user does
            if user is not None:
                users[(bucket, kind)].add(user)
    return {key: (n, len(users[key])) for key, n in counts.items()}


def stored_rollup(collection: Collection[Document]) -> Rollup:
    """What the job wrote, in the reference's shape; every document must have the design's fields."""
    rows: Rollup = {}
    for doc in collection.find({}):
        assert set(doc) == {"_id", "bucket", "type", "count", "unique_users", "updated_at"}, doc
        key = (_aware(doc["bucket"]), doc["type"])
        assert key not in rows, f"duplicate document for {key}"
        rows[key] = (doc["count"], doc["unique_users"])
    return rows


def _ms(moment: datetime) -> datetime:
    # MongoDB keeps milliseconds; compare what it compares.
    moment = _aware(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def generate_error_logs(rng: random.Random, cutoff: datetime, count: int) -> list[Document]:
    """Error logs on both sides of ``cutoff``: resolved or not, with and without ``resolved_at``.

    Includes logs exactly at the cutoff (not older, so kept) and one
    millisecond before it (older, so deleted when resolved).
    """
    logs: list[Document] = []
    for n in range(count):
        created = cutoff + timedelta(hours=rng.uniform(-24 * 40, 24 * 10))
        resolved = rng.random() < 0.6
        doc: Document = {
            "_id": ObjectId(),
            "message": f"error {n}",
            "code": "SRV_6001",
            "resolved": resolved,
            "created_at": created,
        }
        shape = rng.random()
        if resolved and shape < 0.6:
            doc["resolved_at"] = created + timedelta(hours=rng.uniform(0, 24 * 5))
        elif shape < 0.8:
            doc["resolved_at"] = None
        logs.append(doc)  # else: no resolved_at field at all
    for resolved_at in (cutoff, cutoff - timedelta(milliseconds=1)):
        for resolved in (True, False):
            logs.append(
                {
                    "_id": ObjectId(),
                    "message": "edge",
                    "code": "SRV_6002",
                    "resolved": resolved,
                    "created_at": resolved_at - timedelta(days=60),
                    "resolved_at": resolved_at if resolved else None,
                }
            )
    # Inconsistent but possible data: not resolved, yet a resolved_at long past.
    logs.append(
        {
            "_id": ObjectId(),
            "message": "reopened",
            "code": "SRV_6001",
            "resolved": False,
            "created_at": cutoff - timedelta(days=90),
            "resolved_at": cutoff - timedelta(days=80),
        }
    )
    return logs


def error_log_is_old(doc: Document, cutoff: datetime) -> bool:
    """The cleanup rule, restated independently: resolved, and resolved (or created) before the cutoff."""
    if doc.get("resolved") is not True:
        return False
    when = doc.get("resolved_at")
    if when is None:
        when = doc["created_at"]
    return _ms(when) < cutoff
