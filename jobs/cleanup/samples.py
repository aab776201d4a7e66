"""Sample error logs for the demo: old and recent, resolved and not, relative to now.

Written by upsert on fixed ``_id``-s, so each demo run starts from the same
six logs, and a 30-day cleanup of error logs deletes the same two.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from ..collections import CollectionNames


def seed_sample_error_logs(db: Database[Any], names: CollectionNames, now: datetime) -> int:
    """Write the six sample logs; with a 30-day cutoff exactly the first two are old enough."""

    def ago(days: int) -> datetime:
        return now - timedelta(days=days)

    logs: list[dict[str, Any]] = [
        # resolved 60 days ago: deleted
        {"resolved": True, "resolved_at": ago(60), "created_at": ago(61)},
        # resolved, no resolved_at, created 100 days ago: deleted (created_at decides)
        {"resolved": True, "resolved_at": None, "created_at": ago(100)},
        # resolved 2 days ago, created long before: kept (resolved_at decides)
        {"resolved": True, "resolved_at": ago(2), "created_at": ago(200)},
        # never resolved, however old: kept
        {"resolved": False, "resolved_at": None, "created_at": ago(365)},
        {"resolved": False, "resolved_at": None, "created_at": ago(45)},
        # recent: kept
        {"resolved": True, "resolved_at": ago(1), "created_at": ago(3)},
    ]
    writes = [
        ReplaceOne(
            {"_id": f"demo-error-{n}"},
            {"message": f"sample error {n}", "code": "SRV_6001", **log},
            upsert=True,
        )
        for n, log in enumerate(logs)
    ]
    db[names.error_logs].bulk_write(writes, ordered=False)
    return len(logs)
