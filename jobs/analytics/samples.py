"""Sample analytics events for the demo, and a short printout of what the roll-ups made of them.

The events are the same on every run (fixed seed, fixed ``_id``-s written by
upsert), so running the demo again against the same embedded store leaves
one copy of them, and the roll-ups print the same figures.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from ..collections import UTC_CODEC, CollectionNames
from .pipeline import ALL_TYPES

DEMO_DAY = date(2026, 1, 1)
TYPES = ("view", "like", "comment", "share", "signup")


def seed_sample_events(db: Database[Any], names: CollectionNames, count: int = 480) -> int:
    """Write ``count`` events spread over :data:`DEMO_DAY`; return how many."""
    rng = random.Random(2026)
    midnight = datetime(DEMO_DAY.year, DEMO_DAY.month, DEMO_DAY.day, tzinfo=UTC)
    writes = []
    for n in range(count):
        event = {
            "type": rng.choice(TYPES),
            # about one in eight is anonymous: no user to count
            "user_id": None if rng.random() < 0.125 else f"traveller-{rng.randrange(40)}",
            "created_at": midnight + timedelta(seconds=rng.randrange(86_400)),
            "properties": {"screen": rng.choice(("feed", "trip", "profile"))},
        }
        writes.append(ReplaceOne({"_id": f"demo-event-{n:04d}"}, event, upsert=True))
    db[names.analytics_events].bulk_write(writes, ordered=False)
    return count


def describe_rollups(db: Database[Any], names: CollectionNames, hours: int = 3) -> str:
    """The daily row per type of :data:`DEMO_DAY` and its first ``hours`` hourly ``_all`` rows."""
    db = db.with_options(codec_options=UTC_CODEC)
    midnight = datetime(DEMO_DAY.year, DEMO_DAY.month, DEMO_DAY.day, tzinfo=UTC)
    daily = list(db[names.analytics_daily].find({"bucket": midnight}).sort("type", 1))
    hourly = list(
        db[names.analytics_hourly]
        .find({"bucket": {"$gte": midnight, "$lt": midnight + timedelta(hours=hours)}, "type": ALL_TYPES})
        .sort("bucket", 1)
    )
    lines = [f"\nRoll-ups of the sample events: {DEMO_DAY} by type, and its first {hours} hours"]
    lines.append(f"  {'roll-up':<7}  {'bucket':<17}  {'type':<8}  {'count':>5}  {'unique_users':>12}")
    for kind, rows in (("daily", daily), ("hourly", hourly)):
        for row in rows:
            bucket = row["bucket"].strftime("%Y-%m-%dT%H:%MZ")
            lines.append(
                f"  {kind:<7}  {bucket:<17}  {row['type']:<8}  {row['count']:>5}  {row['unique_users']:>12}"
            )
    if not daily and not hourly:
        lines.append("  (no roll-ups: the analytics samples did not succeed)")
    return "\n".join(lines) + "\n"
