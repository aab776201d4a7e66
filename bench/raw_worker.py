"""Worker module for benchmarks: raw Dramatiq, default middleware, plain actor on `email`.

    dramatiq bench.raw_worker --processes 2 --threads 5
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ.get("REDIS_NAMESPACE", "bench-raw")
broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"), namespace=NAMESPACE)
dramatiq.set_broker(broker)
COUNTER = f"{NAMESPACE}:bench:done"
START = f"{NAMESPACE}:bench:latency"


@dramatiq.actor(actor_name="noop", queue_name="email")
def noop(n: int, sent_at: float = 0.0) -> None:
    broker.client.incr(COUNTER)
