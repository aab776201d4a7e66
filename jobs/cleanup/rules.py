"""What a cleanup deletes: the cutoff, and each collection's old documents as time-field slices.

- ``analytics``: events whose ``created_at`` is before the cutoff.
- ``error_logs``: *resolved* logs whose ``resolved_at`` is before the cutoff,
  or whose ``created_at`` is when ``resolved_at`` is null or missing. An
  unresolved log is never matched, however old; neither is one whose
  ``resolved_at`` holds something other than a date.
- Aggregates (``analytics_hourly``/``analytics_daily``) are never targets.

Each rule is a list of :class:`Slice`: a fixed filter plus one indexed date
field compared with the cutoff, the shape the batched deletion walks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..collections import CollectionNames
from ..mongo_indexes import ERROR_LOG_INDEXES, EVENT_INDEXES, IndexSpec

CleanupType = Literal["analytics", "error_logs", "all"]
TargetName = Literal["analytics_events", "error_logs"]


@dataclass(frozen=True)
class Slice:
    """Documents matching ``base`` whose ``field`` (a date) is before the cutoff."""

    base: Mapping[str, Any]
    field: str

    def old(self, cutoff: datetime) -> dict[str, Any]:
        return {**self.base, self.field: {"$lt": cutoff}}

    def window(self, start: datetime, end: datetime) -> dict[str, Any]:
        return {**self.base, self.field: {"$gte": start, "$lt": end}}


@dataclass(frozen=True)
class Target:
    """One collection a cleanup type covers; ``name`` is its key in the job's result."""

    name: TargetName
    collection: str
    slices: tuple[Slice, ...]
    indexes: tuple[IndexSpec, ...] = field(default=())


def targets(cleanup_type: CleanupType, names: CollectionNames) -> list[Target]:
    events = Target(
        "analytics_events",
        names.analytics_events,
        (Slice({}, "created_at"),),
        EVENT_INDEXES,
    )
    error_logs = Target(
        "error_logs",
        names.error_logs,
        (
            # `$lt: <date>` matches dates only: null or missing resolved_at
            # is left to the second slice.
            Slice({"resolved": True}, "resolved_at"),
            Slice({"resolved": True, "resolved_at": None}, "created_at"),
        ),
        ERROR_LOG_INDEXES,
    )
    chosen = {"analytics": [events], "error_logs": [error_logs], "all": [events, error_logs]}
    return chosen[cleanup_type]


def cutoff_for(now: datetime, older_than_days: int) -> datetime:
    """``now`` minus the days, in UTC, to the millisecond MongoDB compares with."""
    cutoff = now.astimezone(UTC) - timedelta(days=older_than_days)
    return cutoff.replace(microsecond=cutoff.microsecond // 1000 * 1000)
