"""Date ranges of ``aggregate_analytics``: parsing, the whole-bucket rule, day-sized chunks.

Pure functions, used by the payload schema (at send) and by the job (at run).

- ``YYYY-MM-DD`` is a whole UTC day: as ``start_date`` its midnight, as
  ``end_date`` the midnight after it, so the end day is included whole.
- An ISO-8601 datetime is an instant; as ``end_date`` it is excluded. An
  offset is converted to UTC; a value without one is UTC.
- The whole-bucket rule: the range is *widened* to whole buckets (start
  floored, end ceiled to the hour or the day), so every bucket the range
  touches is recomputed from all of its events. A bucket document therefore
  always describes its whole hour or day, never the part a range happened to
  cover.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ..collections import AggregationType

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?$")
# Far from datetime's limits, so widening and chunking never overflow.
MIN_YEAR, MAX_YEAR = 1970, 9998

BUCKET_WIDTH: dict[AggregationType, timedelta] = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
CHUNK_WIDTH = timedelta(days=1)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RangeError(ValueError):
    """A start/end the job cannot use; the message says why (it becomes VAL_2001)."""


@dataclass(frozen=True)
class TimeRange:
    """``[start, end)`` in aware UTC datetimes."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{iso(self.start)}..{iso(self.end)}"


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with a ``Z``, to the millisecond MongoDB stores."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_bound(text: str, *, end: bool) -> datetime:
    """One bound of a range as an aware UTC datetime (see the module docstring)."""
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            raise RangeError(f"is not a valid date ({exc})") from None
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if end:
            moment += timedelta(days=1)
    elif _DATETIME.match(text):
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise RangeError(f"is not a valid datetime ({exc})") from None
        moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    else:
        raise RangeError("must be YYYY-MM-DD or an ISO-8601 datetime such as 2026-01-01T10:00:00Z")
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise RangeError(f"must fall between the years {MIN_YEAR} and {MAX_YEAR}")
    return moment


def requested_range(start_date: str, end_date: str, *, max_days: int | None = None) -> TimeRange:
    """The range a payload asks for, before widening.

    Raises:
      RangeError: a bound is unreadable, the range is empty or reversed, or
        it spans more than ``max_days`` days.
    """
    try:
        start = parse_bound(start_date, end=False)
    except RangeError as exc:
        raise RangeError(f"start_date {exc}") from None
    try:
        end = parse_bound(end_date, end=True)
    except RangeError as exc:
        raise RangeError(f"end_date {exc}") from None
    if start >= end:
        raise RangeError(
            "start_date must come before end_date "
            "(a YYYY-MM-DD end day is included whole; a datetime end is excluded)"
        )
    if max_days is not None and end - start > timedelta(days=max_days):
        days = (end - start) / timedelta(days=1)
        raise RangeError(
            f"the range spans {days:g} days, more than the {max_days} allowed (ANALYTICS_MAX_RANGE_DAYS)"
        )
    return TimeRange(start, end)


def floor_to(moment: datetime, width: timedelta) -> datetime:
    """The start of the bucket of ``width`` holding ``moment`` (buckets align to the epoch, UTC)."""
    return moment - (moment - _EPOCH) % width


def whole_buckets(requested: TimeRange, aggregation_type: AggregationType) -> TimeRange:
    """The whole-bucket rule: widen ``requested`` to the buckets it touches."""
    width = BUCKET_WIDTH[aggregation_type]
    start = floor_to(requested.start, width)
    end = floor_to(requested.end, width)
    if end < requested.end:
        end += width
    return TimeRange(start, end)


def day_chunks(span: TimeRange) -> Iterator[TimeRange]:
    """``span`` cut at UTC midnights: one database operation per chunk keeps each one bounded.

    Chunk edges fall on bucket edges (midnight is both an hour and a day
    boundary), so no bucket is ever split between two chunks.
    """
    start = span.start
    while start < span.end:
        end = min(floor_to(start, CHUNK_WIDTH) + CHUNK_WIDTH, span.end)
        yield TimeRange(start, end)
        start = end
