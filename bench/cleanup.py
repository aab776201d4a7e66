"""cleanup of old analytics events: documents per second and the longest single database operation.

    python -m bench cleanup [--events N] [--batch-sizes 1000,5000] [--id-events N] [--no-unbatched]

For each batch size, ``--events`` old events (spread over 90 days before the
cutoff, plus 1% recent ones that must stay) are deleted by the job's own
code (``jobs.cleanup.run.cleanup``: time windows on ``created_at``), and, on
``--id-events`` events, by the alternative it was measured against: ``_id``
lists of the oldest documents, ``delete_many({_id: {$in: ids}})``. A single
unbatched ``delete_many`` is timed too, as the operation batching avoids.
Every command the client sends is timed (pymongo command monitoring, round
trip); the longest one is reported with its name.

The server is ``MONGO_URL`` when one answers there (1,000,000 events by
default against a real ``mongod``), else a SecantusDB daemon started here
(100,000 events by default).
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import monitoring

from bench.analytics import Server, _nproc, mongo_server
from bench.harness import machine, publish, today
from jobs.cleanup.batches import Batching, delete_by_id_lists
from jobs.cleanup.run import cleanup
from jobs.collections import CollectionNames
from jobs.mongo_indexes import EVENT_INDEXES, ensure_indexes

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 30
CUTOFF = NOW - timedelta(days=DAYS)


class Timings(monitoring.CommandListener):
    """Round-trip time of every command, as the worker sees it."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, float]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.ops.append((event.command_name, event.duration_micros / 1000))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.ops.append((event.command_name, event.duration_micros / 1000))


@dataclass
class Row:
    strategy: str
    batch: str
    deleted: int
    wall_s: float
    deletes: int
    longest_ms: float
    longest_op: str
    longest_delete_ms: float


def seed(db: Any, old: int, rng: random.Random) -> int:
    """``old`` events before the cutoff and 1% after it; return how many are recent."""
    events = db["analytics_events"]
    # The job's indexes exist already, as after its first run: building them
    # is a one-time cost, not part of deleting.
    ensure_indexes(events, EVENT_INDEXES)
    recent = max(1, old // 100)
    batch = 10_000
    span_ms = 90 * 86_400_000
    for offset in range(0, old + recent, batch):
        docs = []
        for n in range(offset, min(offset + batch, old + recent)):
            if n < old:
                at = CUTOFF - timedelta(milliseconds=1 + rng.randrange(span_ms))
            else:
                at = CUTOFF + timedelta(milliseconds=rng.randrange(86_400_000))
            docs.append({"type": "view", "user_id": f"u{n % 5000}", "created_at": at, "properties": {}})
        events.insert_many(docs, ordered=False)
    return recent


def measure(
    server: Server, count: int, strategy: str, batch: str, run: Callable[[Any], int], rng: random.Random
) -> Row:
    from tests.services.mongo import client_for

    timings = Timings()
    client = client_for(server.url, tz_aware=True, event_listeners=[timings], serverSelectionTimeoutMS=10_000)
    db_name = f"bench_cleanup_{uuid.uuid4().hex[:8]}"
    try:
        db = client[db_name]
        recent = seed(db, count, rng)
        timings.ops.clear()
        started = time.perf_counter()
        deleted = run(db)
        wall = time.perf_counter() - started
        left = db["analytics_events"].count_documents({})
        assert (deleted, left) == (count, recent), (deleted, left, count, recent)
        name, longest = max(timings.ops, key=lambda op: op[1])
        deletes = [ms for op, ms in timings.ops if op == "delete"]
        row = Row(strategy, batch, deleted, wall, len(deletes), longest, name, max(deletes))
        print(f"  {strategy} {batch}: {count / wall:,.0f} docs/s, longest op {longest:.0f} ms ({name})")
        return row
    finally:
        client.drop_database(db_name)
        client.close()


def windows(size: int) -> Callable[[Any], int]:
    def run(db: Any) -> int:
        report = cleanup(
            db,
            "analytics",
            DAYS,
            dry_run=False,
            names=CollectionNames(),
            batching=Batching(size=size, progress_every=10**9),
            now=NOW,
        )
        return report.deleted["analytics_events"]

    return run


def id_lists(size: int) -> Callable[[Any], int]:
    def run(db: Any) -> int:
        query = {"created_at": {"$lt": CUTOFF}}
        return delete_by_id_lists(db["analytics_events"], query, Batching(size=size), sort_field="created_at")

    return run


def unbatched(db: Any) -> int:
    return int(db["analytics_events"].delete_many({"created_at": {"$lt": CUTOFF}}).deleted_count)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cleanup", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events", type=int, help="old events per run (default 100,000; 1,000,000 on mongod)"
    )
    parser.add_argument("--batch-sizes", default="1000,5000", help="comma-separated (default 1000,5000)")
    parser.add_argument("--id-events", type=int, help="old events for the _id-list runs (default events/50)")
    parser.add_argument("--no-unbatched", action="store_true", help="skip the single delete_many")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rng = random.Random(2026)

    rows: list[Row] = []
    with mongo_server() as server:
        count = args.events or (1_000_000 if server.real_mongod else 100_000)
        id_count = args.id_events or max(1, count // 50)
        print(f"server: {server.label}")
        for size in sizes:
            rows.append(measure(server, count, "time windows (the job)", f"{size:,}", windows(size), rng))
        for size in sizes:
            rows.append(measure(server, id_count, "_id lists", f"{size:,}", id_lists(size), rng))
        if not args.no_unbatched:
            rows.append(measure(server, count, "one delete_many", "-", unbatched, rng))

    table = "\n".join(
        f"| {r.strategy} | {r.batch} | {r.deleted:,} | {r.wall_s:.1f} | {r.deleted / r.wall_s:,.0f} | "
        f"{r.deletes} | {r.longest_delete_ms:,.0f} | {r.longest_ms:,.0f} ({r.longest_op}) |"
        for r in rows
    )
    text = f"""# cleanup: deleting old analytics events in batches

- date: {today()}; machine: {machine()} (`nproc` {_nproc()}, `uname -m` {os.uname().machine})
- server: {server.label}
- command: `python -m bench cleanup{" " + " ".join(argv) if argv else ""}`
- data: old events spread over 90 days before the cutoff, plus 1% recent ones (all kept, checked);
  the `_id`-list runs use {id_count:,} events, not {count:,}: they are that slow here
- time windows: count the window, then `delete_many` on `[start, end)`, windows sized from the
  density seen so far (at most 2x the batch size each); `_id` lists: read the oldest ids, then
  `delete_many({{_id: {{$in: ids}}}})`
- longest op: the slowest single command of the run, of any kind (round trip seen by the worker);
  the job's indexes are built before seeding, as after its first run. For the time windows it is
  the one `find` of the oldest old document: SecantusDB sorts every match to answer it, where
  MongoDB reads one key of the `created_at` index

| strategy | batch size | deleted | wall s | docs/s | delete ops | longest delete ms | longest op ms |
|---|---:|---:|---:|---:|---:|---:|---:|
{table}
"""
    publish("cleanup", text)
    return 0
