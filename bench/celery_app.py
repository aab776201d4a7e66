"""Celery app for benchmarks: the same no-op job as bench.raw_worker, on a Redis broker.

    celery -A bench.celery_app worker --pool threads --concurrency 5   (x2: two processes)

Settings chosen to match raw Dramatiq's guarantees and shape, nothing tuned
beyond that: late acks (a job is acknowledged after it ran, as Dramatiq
does), results disabled, JSON serializer, default prefetch (4 per thread).
Keys live under ``REDIS_NAMESPACE:`` (kombu's ``global_keyprefix``), so the
benchmark's namespace clean-up removes them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

NAMESPACE = os.environ.get("REDIS_NAMESPACE", "bench-celery")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
QUEUE = "email"
COUNTER = f"{NAMESPACE}:bench:done"
START = f"{NAMESPACE}:bench:latency"
READY = "celery worker ready for action"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": f"{NAMESPACE}:"},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_send_task_events=False,
)
client = redis.Redis.from_url(REDIS_URL)


@app.task(name="noop")  # type: ignore[untyped-decorator]  # celery ships no types
def noop(n: int, sent_at: float = 0.0) -> None:
    if sent_at:
        client.rpush(START, f"{sent_at!r} {time.time()!r}")
    else:
        client.incr(COUNTER)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce(**_: Any) -> None:
    print(READY, flush=True)


def worker_commands(processes: int = 2, threads: int = 5, loglevel: str = "WARNING") -> list[list[str]]:
    """``processes`` separate worker invocations of ``threads`` threads each (Celery's thread pool
    is one process; two invocations give Dramatiq's 2 x 5 shape). Gossip, mingle and worker
    heartbeats are off: they are cross-worker broadcasts Dramatiq has no counterpart of."""
    import sys

    return [
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(threads),
            "--loglevel",
            loglevel,
            "--hostname",
            f"bench{i}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        for i in range(processes)
    ]
