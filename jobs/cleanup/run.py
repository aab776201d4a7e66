"""A cleanup run: the cutoff fixed once, then each target deleted (or counted) slice by slice."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database

from ..analytics.ranges import iso
from ..collections import UTC_CODEC, CollectionNames
from ..mongo_indexes import ensure_indexes
from .batches import Batching, Sleep, count_old, delete_in_windows
from .rules import CleanupType, TargetName, cutoff_for, targets

logger = logging.getLogger("jobs.cleanup")


@dataclass(frozen=True)
class CleanupReport:
    deleted: dict[TargetName, int]  # what went, or with dry_run what would go
    dry_run: bool
    cutoff: datetime

    def as_result(self) -> dict[str, Any]:
        return {
            "success": True,
            "deleted": dict(self.deleted),
            "dry_run": self.dry_run,
            "cutoff": iso(self.cutoff),
        }


def cleanup(
    db: Database[Any],
    cleanup_type: CleanupType,
    older_than_days: int,
    *,
    dry_run: bool,
    names: CollectionNames,
    batching: Batching,
    now: datetime,
    sleep: Sleep = time.sleep,
) -> CleanupReport:
    """Delete (``dry_run``: count) what ``cleanup_type`` covers that is older than ``older_than_days``.

    ``now`` is read once by the caller, so every batch and every collection
    of the run share one cutoff. ``deleted`` has one entry per collection the
    type covers, counting only this run's deletions: a run resuming an
    interrupted one reports the remainder it deleted.
    """
    db = db.with_options(codec_options=UTC_CODEC)
    cutoff = cutoff_for(now, older_than_days)
    deleted: dict[TargetName, int] = {}
    for target in targets(cleanup_type, names):
        collection = db[target.collection]
        ensure_indexes(collection, target.indexes)
        if dry_run:
            deleted[target.name] = sum(count_old(collection, part, cutoff) for part in target.slices)
        else:
            deleted[target.name] = sum(
                delete_in_windows(collection, part, cutoff, batching, sleep=sleep) for part in target.slices
            )
        logger.info(
            "Cleanup %s: %d %s older than %s",
            "dry run would delete" if dry_run else "deleted",
            deleted[target.name],
            target.collection,
            iso(cutoff),
        )
    return CleanupReport(deleted, dry_run, cutoff)
