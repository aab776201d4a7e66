"""Roll analytics events up into hourly or daily bucket documents, exactly and idempotently.

After :func:`aggregate`, the documents of every bucket in the (widened)
range are exactly what the events say, whatever ran before: each day-sized
chunk is recomputed by one pipeline that ``$merge``-s its rows stamped with a
fresh ``updated_at``, then the chunk's documents older than that stamp —
buckets or types that no longer have events — are deleted. Merging before
deleting means readers never see a chunk emptied; a crash in between leaves
stale rows that the next run of the range removes.

Two runs over the same days at the same moment (the queue runs two jobs at
once) can interleave so that one deletes rows the other has just rewritten
with an older stamp; the range's next run restores them. The scheduler's
unique keys keep its own windows from overlapping like that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from middleware.job_state import report_progress

from ..collections import UTC_CODEC, AggregationType, CollectionNames
from ..mongo_indexes import AGGREGATE_INDEXES, EVENT_INDEXES, ensure_indexes
from .pipeline import ALL_TYPES, merge_pipeline
from .ranges import TimeRange, day_chunks, iso, whole_buckets

logger = logging.getLogger("jobs.analytics")

Clock = Callable[[], datetime]
_MS = timedelta(milliseconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RollupReport:
    aggregation_type: AggregationType
    span: TimeRange  # the widened range that was recomputed
    buckets: int  # buckets in the span holding at least one event
    events: int
    stale_removed: int

    def as_result(self) -> dict[str, Any]:
        return {
            "success": True,
            "buckets": self.buckets,
            "events": self.events,
            "aggregation_type": self.aggregation_type,
            "start": iso(self.span.start),
            "end": iso(self.span.end),
            "stale_removed": self.stale_removed,
        }


def aggregate(
    db: Database[Any],
    requested: TimeRange,
    aggregation_type: AggregationType,
    *,
    names: CollectionNames,
    clock: Clock = utc_now,
) -> RollupReport:
    """Recompute the ``aggregation_type`` buckets that ``requested`` touches.

    The range is widened to whole buckets (see :mod:`jobs.analytics.ranges`)
    and processed one UTC day at a time. Events never leave the database.
    Connection errors propagate (the policy turns them into ``SRV_6002``).
    """
    db = db.with_options(codec_options=UTC_CODEC)
    events = db[names.analytics_events]
    target = db[names.aggregates(aggregation_type)]
    ensure_indexes(events, EVENT_INDEXES)
    ensure_indexes(target, AGGREGATE_INDEXES)

    span = whole_buckets(requested, aggregation_type)
    chunks = list(day_chunks(span))
    buckets = total_events = removed = 0
    for number, chunk in enumerate(chunks, start=1):
        chunk_buckets, chunk_events, chunk_removed = _recompute(
            events, target, chunk, aggregation_type, clock
        )
        buckets += chunk_buckets
        total_events += chunk_events
        removed += chunk_removed
        report_progress(100 * number / len(chunks), f"chunk {number}/{len(chunks)}: {chunk}")
        logger.info(
            "Analytics %s roll-up: chunk %d/%d (%s): %d buckets, %d events, %d stale documents removed",
            aggregation_type,
            number,
            len(chunks),
            chunk,
            chunk_buckets,
            chunk_events,
            chunk_removed,
        )
    return RollupReport(aggregation_type, span, buckets, total_events, removed)


def _recompute(
    events: Collection[Any],
    target: Collection[Any],
    chunk: TimeRange,
    aggregation_type: AggregationType,
    clock: Clock,
) -> tuple[int, int, int]:
    in_chunk = {"bucket": {"$gte": chunk.start, "$lt": chunk.end}}
    stamp = _fresh_stamp(target, in_chunk, clock)
    pipeline = merge_pipeline(chunk, aggregation_type, into=target.name, stamp=stamp)
    events.aggregate(pipeline, allowDiskUse=True).close()
    # Everything this run wrote carries `stamp`; anything else in the chunk
    # not stamped later (by a concurrent run) is a bucket or type whose events
    # are gone. `$not` also catches a document without a date in updated_at.
    stale = {**in_chunk, "updated_at": {"$not": {"$gte": stamp}}}
    removed = target.delete_many(stale).deleted_count
    buckets = total = 0
    for row in target.find({**in_chunk, "type": ALL_TYPES}, {"count": 1, "_id": 0}):
        buckets += 1
        total += int(row["count"])
    return buckets, total, removed


def _fresh_stamp(target: Collection[Any], in_chunk: dict[str, Any], clock: Clock) -> datetime:
    """An ``updated_at`` later than every document already in the chunk.

    MongoDB keeps milliseconds, so the clock alone could repeat a previous
    run's stamp (two runs within 1 ms, a test's fixed clock, a clock set
    back); one past the newest stamp present keeps "older than ours" exact.
    """
    now = clock().astimezone(UTC)
    stamp = now.replace(microsecond=now.microsecond // 1000 * 1000)
    newest = target.find_one(in_chunk, {"updated_at": 1, "_id": 0}, sort=[("updated_at", -1)])
    if newest is not None and isinstance(newest.get("updated_at"), datetime):
        stamp = max(stamp, newest["updated_at"] + _MS)
    return stamp
