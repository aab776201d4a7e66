"""Delete old documents in bounded batches, so the live database never sees one long operation.

The job deletes by *time windows* on the slice's indexed date field
(:func:`delete_in_windows`): each batch is one ``delete_many`` over
``[start, end)``, a window sized from the density seen so far to hold about
``size`` documents, and counted before it is deleted, so no batch exceeds
twice the size. Deleting by ``_id`` lists (:func:`delete_by_id_lists`) is the
other classic way; measured on the test server (bench/results/cleanup.md) it
is several times slower per document, and it also has to re-read the
remaining old documents for every batch. It remains the fallback for a
single millisecond holding more than a window may.

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

from ..collections import UTC_CODEC
from .rules import Slice

logger = logging.getLogger("jobs.cleanup")

Sleep = Callable[[float], None]
_MS = timedelta(milliseconds=1)
# A window may hold this many times the batch size before it is narrowed.
_OVERSIZE = 2
# How fast a window may grow or shrink from one batch to the next.
_MAX_STEP = 4.0


@dataclass(frozen=True)
class Batching:
    """How deletions are cut: ``size`` documents a batch, ``pause_s`` between batches."""

    size: int
    pause_s: float = 0.0
    progress_every: int = 10


class _Batches:
    """Pauses between batches and logs progress every ``progress_every`` of them."""

    def __init__(self, label: str, batching: Batching, sleep: Sleep, expected: int | None) -> None:
        self.label = label
        self.batching = batching
        self.sleep = sleep
        self.expected = expected
        self.batches = 0
        self.deleted = 0

    def before(self) -> None:
        if self.batches and self.batching.pause_s > 0:
            self.sleep(self.batching.pause_s)

    def after(self, deleted: int) -> None:
        self.batches += 1
        self.deleted += deleted
        if self.batches % self.batching.progress_every == 0:
            of = f" of ~{self.expected}" if self.expected is not None else ""
            logger.info("Cleanup of %s: %d batches, %d deleted%s", self.label, self.batches, self.deleted, of)


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
    old = part.old(cutoff)
    oldest = collection.find_one(old, {part.field: 1, "_id": 0}, sort=[(part.field, 1)])
    if oldest is None:
        return 0
    start: datetime = oldest[part.field]
    expected = collection.count_documents(old)
    label = f"{collection.name} ({part.field})"
    batches = _Batches(label, batching, sleep, expected)
    width = _initial_width(cutoff - start, expected, batching.size)
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
            _delete_ids(collection, window, batching.size, batches)
        elif found:
            batches.before()
            batches.after(collection.delete_many(window).deleted_count)
        start = end
        width = _scaled(width, batching.size / found if found else _MAX_STEP)
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
    batches = _Batches(collection.name, batching, sleep, None)
    _delete_ids(collection, query, batching.size, batches, sort_field)
    return batches.deleted


def _delete_ids(
    collection: Collection[Any],
    query: Mapping[str, Any],
    size: int,
    batches: _Batches,
    sort_field: str | None = None,
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
        batches.after(collection.delete_many({"$and": [dict(query), {"_id": {"$in": ids}}]}).deleted_count)
        if len(ids) < size:
            return


def _initial_width(span: timedelta, expected: int, size: int) -> timedelta:
    # Assume the old documents are spread evenly; the windows adapt from there.
    if expected <= size:
        return max(span, _MS)
    return max(_MS, _whole_ms(span * (size / expected)))


def _scaled(width: timedelta, factor: float) -> timedelta:
    factor = min(_MAX_STEP, max(1 / _MAX_STEP, factor))
    return max(_MS, _whole_ms(width * factor))


def _whole_ms(width: timedelta) -> timedelta:
    # MongoDB dates are milliseconds: a finer window edge would be rounded away.
    return timedelta(milliseconds=int(width / _MS))
