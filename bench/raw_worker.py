"""Worker module for benchmarks: raw Dramatiq, default middleware, plain actor on `email`.

    dramatiq bench.raw_worker --processes 2 --threads 5

The no-op job does one Redis command, as every benchmark job does: an INCR
of the done counter, or, when the message carries ``sent_at`` (a latency
probe), an RPUSH of "sent_at started_at" (epoch seconds) instead.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ.get("REDIS_NAMESPACE", "bench-raw")
broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"), namespace=NAMESPACE
)
dramatiq.set_broker(broker)
COUNTER = f"{NAMESPACE}:bench:done"
START = f"{NAMESPACE}:bench:latency"


@dramatiq.actor(actor_name="noop", queue_name="email")
def noop(n: int, sent_at: float = 0.0) -> None:
    if sent_at:
        broker.client.rpush(START, f"{sent_at!r} {time.time()!r}")
    else:
        broker.client.incr(COUNTER)
