"""The indexes the analytics and cleanup jobs rely on, created idempotently when a job starts.

The app writes ``analytics_events`` and ``error_logs``; it may already have
indexes of its own, under other names. An index is therefore looked up by
its key pattern, and created (with MongoDB's default name) only when no index
has those keys. Checking costs one ``listIndexes`` per collection per job,
cheap next to the job itself, and it puts back an index somebody dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection

from middleware.errors import SRV_6001, JobError

logger = logging.getLogger(__name__)

Keys = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class IndexSpec:
    """An index by key pattern; ``why`` says which query needs it."""

    keys: Keys
    why: str
    unique: bool = False


# $match on the created_at range of an aggregation chunk, and the cleanup's
# time slices of old events.
EVENTS_BY_TIME = IndexSpec((("created_at", 1),), "analytics ranges, cleanup slices")
# Asked for by the analytics issue: ranges narrowed by type stay on the index.
EVENTS_BY_TIME_AND_TYPE = IndexSpec((("created_at", 1), ("type", 1)), "analytics ranges by type")
# One document per (bucket, type): the key $merge matches on, which MongoDB
# requires to be backed by a unique index.
AGGREGATE_KEY = IndexSpec((("bucket", 1), ("type", 1)), "roll-up key for $merge", unique=True)
# Both cleanup passes over error logs: {resolved: true, resolved_at < cutoff}
# and {resolved: true, resolved_at: null, created_at < cutoff}.
ERROR_LOGS_BY_RESOLUTION = IndexSpec(
    (("resolved", 1), ("resolved_at", 1), ("created_at", 1)), "cleanup of resolved error logs"
)

EVENT_INDEXES = (EVENTS_BY_TIME, EVENTS_BY_TIME_AND_TYPE)
AGGREGATE_INDEXES = (AGGREGATE_KEY,)
ERROR_LOG_INDEXES = (ERROR_LOGS_BY_RESOLUTION,)


def _key_pattern(index: Mapping[str, Any]) -> Keys:
    # listIndexes may report directions as floats (1.0); compare as ints.
    return tuple((str(field), int(direction)) for field, direction in index["key"].items())


def ensure_indexes(collection: Collection[Any], specs: Iterable[IndexSpec]) -> list[str]:
    """Create each index of ``specs`` that ``collection`` lacks; return the names created.

    Raises:
      JobError: ``SRV_6001``, not retried, when an index with the keys of a
        unique spec exists without the unique option: an operator has to
        resolve that, and retrying cannot.
    """
    existing = {_key_pattern(index): index for index in collection.list_indexes()}
    created = []
    for spec in specs:
        found = existing.get(spec.keys)
        if found is None:
            name = collection.create_index(list(spec.keys), unique=spec.unique)
            logger.info("Created index %s on %s (%s)", name, collection.name, spec.why)
            created.append(name)
        elif spec.unique and not found.get("unique", False):
            raise JobError(
                SRV_6001,
                f"index {found['name']} on {collection.name} must be unique for {spec.why}; "
                "drop it and the job recreates it as a unique index",
                retry=False,
            )
    return created
