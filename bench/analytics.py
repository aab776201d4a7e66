"""aggregate_analytics over one day of events: wall time and the worker's peak memory.

    python -m bench analytics [--events N] [--small N]

Events (8 types, 50,000 users, 10% without a user) are spread over one UTC
day and rolled up hourly and daily. Each roll-up runs in a fresh child
process, the "worker", whose peak RSS (``ru_maxrss``) is reported next to
its RSS once the job code is imported and connected: with the work done in
the database it must not grow with the number of events, which the run
shows by doing everything for ``--small`` events and for ``--events``.

The server is ``MONGO_URL`` when one answers there (1,000,000 events by
default against a real ``mongod``), else a SecantusDB daemon started here
(``secantusd-py``, in-memory storage; 100,000 events by default).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.harness import machine, publish, today
from jobs.collections import AggregationType

DAY = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ("view", "like", "comment", "share", "signup", "login", "search", "follow")


@dataclass(frozen=True)
class Server:
    url: str
    label: str  # what the figures were measured against
    real_mongod: bool


@contextmanager
def mongo_server() -> Iterator[Server]:
    """``MONGO_URL`` when it answers, else a SecantusDB daemon for the duration."""
    from tests.services.mongo import ping, start_mongo_daemon, stop_mongo_daemon

    env_url = os.environ.get("MONGO_URL", "").strip()
    if env_url and ping(env_url):
        yield describe(env_url)
        return
    with tempfile.TemporaryDirectory(prefix="bench-mongo-") as tmp:
        proc, url = start_mongo_daemon(Path(tmp))
        try:
            server = describe(url)
            yield Server(url, f"{server.label} (secantusd-py daemon, in-memory storage)", False)
        finally:
            stop_mongo_daemon(proc)


def describe(url: str) -> Server:
    client: MongoClient[dict[str, Any]] = connect(url)
    try:
        info = client.admin.command("buildInfo")
    finally:
        client.close()
    if "secantusVersion" in info:
        return Server(url, f"SecantusDB {info['secantusVersion']} (reports MongoDB {info['version']})", False)
    return Server(url, f"MongoDB {info['version']}", True)


def connect(url: str) -> MongoClient[dict[str, Any]]:
    from tests.services.mongo import client_for

    return client_for(url, tz_aware=True, serverSelectionTimeoutMS=10_000)


def seed_events(db: Any, count: int, rng: random.Random) -> float:
    """Insert ``count`` events over :data:`DAY`; return the seconds it took."""
    started = time.perf_counter()
    events = db["analytics_events"]
    events.create_index("created_at")
    batch = 10_000
    for offset in range(0, count, batch):
        events.insert_many(
            [
                {
                    "type": rng.choice(TYPES),
                    "user_id": None if rng.random() < 0.1 else f"u{rng.randrange(50_000)}",
                    "created_at": DAY + timedelta(milliseconds=rng.randrange(86_400_000)),
                    "properties": {"screen": "feed"},
                }
                for _ in range(min(batch, count - offset))
            ],
            ordered=False,
        )
    return time.perf_counter() - started


def _worker(url: str, db_name: str, kind: AggregationType, out: Any) -> None:
    """The child process: import, connect, run the job's roll-up, report time and memory."""
    from jobs.analytics.ranges import requested_range
    from jobs.analytics.rollup import aggregate
    from jobs.collections import CollectionNames

    client = connect(url)
    client.admin.command("ping")
    ready_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = aggregate(
        client[db_name], requested_range("2026-01-01", "2026-01-01"), kind, names=CollectionNames()
    )
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client.close()
    out.put(
        {
            "wall_s": wall,
            "ready_mb": ready_kb / 1024,
            "peak_mb": peak_kb / 1024,
            "events": report.events,
            "buckets": report.buckets,
        }
    )


def run_in_worker(url: str, db_name: str, kind: AggregationType) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(url, db_name, kind, out))
    proc.start()
    result: dict[str, Any] = out.get(timeout=900)
    proc.join(timeout=60)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench analytics", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events", type=int, help="events in the big run (default 100,000; 1,000,000 on mongod)"
    )
    parser.add_argument("--small", type=int, default=10_000, help="events in the small run (default 10,000)")
    args = parser.parse_args(argv)

    with mongo_server() as server:
        big = args.events or (1_000_000 if server.real_mongod else 100_000)
        rng = random.Random(2026)
        client = connect(server.url)
        rows = []
        try:
            for count in (args.small, big):
                db_name = f"bench_analytics_{uuid.uuid4().hex[:8]}"
                try:
                    seed_s = seed_events(client[db_name], count, rng)
                    print(f"seeded {count} events in {seed_s:.1f}s")
                    kinds: tuple[AggregationType, ...] = ("hourly", "daily")
                    for kind in kinds:
                        r = run_in_worker(server.url, db_name, kind)
                        assert r["events"] == count, r  # every event counted once
                        rows.append((count, kind, r))
                        print(f"  {kind}: {r['wall_s']:.2f}s, worker peak RSS {r['peak_mb']:.1f} MB")
                finally:
                    client.drop_database(db_name)
        finally:
            client.close()

    table = "\n".join(
        f"| {count:,} | {kind} | {r['buckets']} | {r['wall_s']:.2f} | {count / r['wall_s']:,.0f} | "
        f"{r['ready_mb']:.1f} | {r['peak_mb']:.1f} |"
        for count, kind, r in rows
    )
    text = f"""# aggregate_analytics: one day of events, hourly and daily

- date: {today()}; machine: {machine()} (`nproc` {_nproc()}, `uname -m` {os.uname().machine})
- server: {server.label}
- command: `python -m bench analytics{" " + " ".join(argv) if argv else ""}`
- events: one UTC day, 8 types, 50,000 users, 10% without a user; one chunk (one pipeline with
  `$merge`) per day; the roll-up runs in a fresh child process (the worker)
- worker RSS: `ready` once the job code is imported and connected, `peak` after the roll-up
  (`ru_maxrss`); events never enter the worker, so the peak does not follow the event count

| events | roll-up | buckets | wall s | events/s | worker RSS ready MB | worker RSS peak MB |
|---:|---|---:|---:|---:|---:|---:|
{table}
"""
    publish("analytics", text)
    return 0


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())
