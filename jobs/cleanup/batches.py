"""Delete old documents in bounded batches, so the live database never sees one long operation.

The job deletes by *time windows* on the slice's indexed date field
(:func:`delete_in_windows`): each batch is one ``delete_many`` over
``[start, end)``, a window sized from the density seen so far to hold about
``size`` documents, and counted before it is deleted, so no batch exceeds
twice the size. Deleting by ``_id`` lists (:func:`delete_by_id_lists`) is the
other classic way; on the test server it was 12-15x slower per document
(bench/results/cleanup.md: 450-600 against ~7,000 documents/s, a single
``$in`` delete of 1,000 ids taking 2 s). It remains the fallback for one
millisecond holding more documents than a window may.

Every batch stands alone, so a cleanup that dies half-way is resumed by
running it again: the next run starts from the oldest document left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from middleware.job_state import report_progress

from ..collections import UTC_CODEC
from .rules import Slice

logger = logging.getLogger("jobs.cleanup")

Sleep = Callable[[float], None]
_MS = timedelta(milliseconds=1)
# A window may hold this many times the batch size before it is narrowed.
_OVERSIZE = 2
# How fast a window may grow or shrink from one batch to the next.
_MAX_STEP = 4.0
_FIRST_WIDTH = timedelta(minutes=1)


@dataclass(frozen=True)
class Batching:
    """How deletions are cut: ``size`` documents a batch, ``pause_s`` between batches."""

    size: int
    pause_s: float = 0.0
    progress_every: int = 10


class _Batches:
    """Pauses between batches and logs progress every ``progress_every`` of them."""

    def __init__(self, label: str, batching: Batching, sleep: Sleep) -> None:
        self.label = label
        self.batching = batching
        self.sleep = sleep
        self.batches = 0
        self.deleted = 0

    def before(self) -> None:
        if self.batches and self.batching.pause_s > 0:
            self.sleep(self.batching.pause_s)

    def after(self, deleted: int, reached: datetime | None = None) -> None:
        self.batches += 1
        self.deleted += deleted
        if self.batches % self.batching.progress_every == 0:
            where = f", done up to {reached.isoformat()}" if reached is not None else ""
            logger.info(
                "Cleanup of %s: %d batches, %d deleted%s", self.label, self.batches, self.deleted, where
            )


def count_old(collection: Collection[Any], part: Slice, cutoff: datetime) -> int:
    """How many documents of ``part`` are before ``cutoff`` (a dry run)."""
    return collection.count_documents(part.old(cutoff))


def delete_in_windows(
    collection: Collection[Any],
    part: Slice,
    cutoff: datetime,
    batching: Batching,
    *,
    sleep: Sleep = time.sleep,
) -> int:
    """Delete the documents of ``part`` before ``cutoff``, window by window; return how many."""
    collection = collection.with_options(codec_options=UTC_CODEC)
    # On MongoDB the oldest document is one index probe away. (SecantusDB
    # sorts everything matched first: this is its slowest step of a run.)
    oldest = collection.find_one(part.old(cutoff), {part.field: 1, "_id": 0}, sort=[(part.field, 1)])
    if oldest is None:
        return 0
    start: datetime = oldest[part.field]
    first, total_span = start, max(cutoff - start, timedelta(milliseconds=1))
    label = f"{collection.name} ({part.field})"
    batches = _Batches(label, batching, sleep)
    # No count of everything to delete up front: on a large collection that
    # would be the longest operation of the run. The windows find the
    # density themselves, from one minute growing at most 4x a batch.
    width = _FIRST_WIDTH
    limit = _OVERSIZE * batching.size
    while start < cutoff:
        end = min(start + width, cutoff)
        window = part.window(start, end)
        found = collection.count_documents(window)
        if found > limit and width > _MS:
            # Narrowed to the density just measured, and counted again
            # before anything is deleted.
            width = max(_MS, _whole_ms(width * (batching.size / found)))
            continue
        if found > limit:
            # More than a window may hold within one millisecond.
            _delete_ids(collection, window, batching.size, batches, reached=end)
        elif found:
            batches.before()
            batches.after(collection.delete_many(window).deleted_count, end)
        start = end
        width = _scaled(width, batching.size / found if found else _MAX_STEP)
        if found:
            # How far through the time span this slice covers: real progress without a count.
            report_progress(100 * (start - first) / total_span, f"{label}: {batches.deleted} deleted")
    logger.info("Cleanup of %s: deleted %d in %d batches", label, batches.deleted, batches.batches)
    return batches.deleted


def delete_by_id_lists(
    collection: Collection[Any],
    query: Mapping[str, Any],
    batching: Batching,
    *,
    sort_field: str | None = None,
    sleep: Sleep = time.sleep,
) -> int:
    """Delete what ``query`` matches, ``batching.size`` ``_id``-s at a time; return how many."""
    batches = _Batches(collection.name, batching, sleep)
    _delete_ids(collection, query, batching.size, batches, sort_field)
    return batches.deleted


def _delete_ids(
    collection: Collection[Any],
    query: Mapping[str, Any],
    size: int,
    batches: _Batches,
    sort_field: str | None = None,
    reached: datetime | None = None,
) -> None:
    while True:
        cursor = collection.find(query, {"_id": 1}).limit(size)
        if sort_field is not None:
            cursor = cursor.sort(sort_field, 1)
        ids = [doc["_id"] for doc in cursor]
        if not ids:
            return
        batches.before()
        # The query again: only what still matches goes, whatever changed since the read.
        removed = collection.delete_many({"$and": [dict(query), {"_id": {"$in": ids}}]}).deleted_count
        batches.after(removed, reached)
        if len(ids) < size:
            return


def _scaled(width: timedelta, factor: float) -> timedelta:
    factor = min(_MAX_STEP, max(1 / _MAX_STEP, factor))
    return max(_MS, _whole_ms(width * factor))


def _whole_ms(width: timedelta) -> timedelta:
    # MongoDB dates are milliseconds: a finer window edge would be rounded away.
    return timedelta(milliseconds=int(width / _MS))
