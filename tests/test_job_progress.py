"""The analytics and cleanup jobs report real progress (chunks and batches done)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.database import Database

from tests.conftest import FAST_POLICY, Stack


def _stack(
    make_stack: Callable[[dict[str, str]], Stack], mongo_url: str, db: Database[Any], tmp: Path
) -> Stack:
    return make_stack(
        {"MONGO_URL": mongo_url, "MONGO_DB": db.name, "EMBEDDED_DATA_DIR": str(tmp), **FAST_POLICY}
    )


def test_analytics_reports_each_day_chunk(
    make_stack: Callable[[dict[str, str]], Stack], mongo_url: str, mongo_db: Database[Any], tmp_path: Path
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    mongo_db.analytics_events.insert_many(
        [
            {
                "type": "view",
                "user_id": f"u{i % 7}",
                "created_at": start + timedelta(hours=i),
                "properties": {},
            }
            for i in range(72)
        ]
    )
    stack = _stack(make_stack, mongo_url, mongo_db, tmp_path)
    job = stack.actors.aggregate_analytics.send(
        start_date="2026-01-01", end_date="2026-01-03", aggregation_type="daily"
    ).message_id
    assert stack.api.result(job, timeout=60)["events"] == 72
    status = stack.api.status(job)
    assert status is not None
    assert status["progress"] == 100.0 and status["progress_note"].startswith("chunk 3/3")


def test_cleanup_reports_progress_through_its_batches(
    make_stack: Callable[[dict[str, str]], Stack], mongo_url: str, mongo_db: Database[Any], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=60)
    mongo_db.analytics_events.insert_many(
        [
            {"type": "view", "user_id": None, "created_at": old + timedelta(minutes=7 * i), "properties": {}}
            for i in range(300)
        ]
    )
    stack = _stack(make_stack, mongo_url, mongo_db, tmp_path)
    job = stack.actors.cleanup.send(cleanup_type="analytics", older_than_days=30).message_id
    assert stack.api.result(job, timeout=60)["deleted"] == {"analytics_events": 300}
    status = stack.api.status(job)
    assert status is not None
    assert 0 < status["progress"] <= 100 and "analytics_events" in status["progress_note"]
    assert "300 deleted" in status["progress_note"]
