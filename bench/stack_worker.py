"""Worker module for benchmarks: our stack with parts switched off by BENCH_VARIANT.

`full`: the production stack (fleet broker with caps and leases, job state,
unique keys, every policy middleware). `no-state`: the production stack
without the job-state middleware (a diagnostic: what state, results, job log
lines and counters cost). `bare`: the same policy middleware minus job state
and unique keys, on Dramatiq's plain RedisBroker consumer (no caps). All run
the same no-op actor on the `email` queue.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobs.actor import JobActor
from jobs.payloads import Payload
from jobs.settings import Settings
from jobs.wiring import build_broker, policy_middleware, redis_client
from middleware.job_state import JobState
from middleware.unique import UniqueJobs

VARIANT = os.environ.get("BENCH_VARIANT", "full")
settings = Settings.load()


class NoopPayload(Payload):
    n: int


def build() -> RedisBroker:
    if VARIANT == "full":
        return build_broker(settings)
    if VARIANT == "no-state":
        stack = build_broker(settings)
        stack.middleware[:] = [m for m in stack.middleware if not isinstance(m, JobState)]
        return stack
    middleware = [m for m in policy_middleware(settings) if not isinstance(m, JobState | UniqueJobs)]
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=redis_client(settings), middleware=middleware, namespace=settings.redis_namespace
    )


broker = build()
dramatiq.set_broker(broker)
COUNTER = f"{settings.redis_namespace}:bench:done"


def noop(payload: NoopPayload) -> dict[str, int]:
    broker.client.incr(COUNTER)
    return {"n": payload.n}


noop_actor = JobActor(
    noop, broker=broker, actor_name="noop", queue_name="email", payload=NoopPayload, label="noop"
)
