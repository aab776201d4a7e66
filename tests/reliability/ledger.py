"""Ledger actors: every execution writes its start and its end to a ledger in Redis.

The ledger may live in another Redis than the broker (``RELIABILITY_LEDGER_URL``
for the worker module), so a test can restart or fail over the broker's Redis
while the record of what ran stays put. Per namespace:

- ``{ns}:ledger:starts`` and ``{ns}:ledger:ends``: hash, job key -> how many times
  it started / finished; a key that finished twice ran twice (a duplicate);
- ``{ns}:ledger:events``: list of ``{"key", "event", "pid", "at", "attempt"}``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from dramatiq.middleware import CurrentMessage
from pydantic import Field, StrictBool, StrictInt

from jobs.actor import JobActor
from jobs.payloads import Payload
from middleware.fleet import FleetBroker

# ledger actor name per queue
LEDGER_ACTORS = {
    "email": "ledger_email",
    "image-processing": "ledger_image",
    "analytics": "ledger_analytics",
    "cleanup": "ledger_cleanup",
}


class LedgerPayload(Payload):
    key: Annotated[str, Field(min_length=1, max_length=100)]
    # Idle work (I/O-like), in 10 ms steps.
    sleep_ms: Annotated[StrictInt, Field(ge=0, le=600_000)] = 0
    # Pure-Python CPU work of this many ms of the thread's own CPU time.
    cpu_ms: Annotated[StrictInt, Field(ge=0, le=600_000)] = 0
    # Work only on the first start of this key (a rerun after a kill is quick).
    first_run_only: StrictBool = False


@dataclass(frozen=True)
class Ledger:
    client: redis.Redis
    namespace: str

    @property
    def starts_key(self) -> str:
        return f"{self.namespace}:ledger:starts"

    @property
    def ends_key(self) -> str:
        return f"{self.namespace}:ledger:ends"

    @property
    def events_key(self) -> str:
        return f"{self.namespace}:ledger:events"

    def record(self, event: str, key: str, attempt: int) -> int:
        """Write one start or end; returns how many times ``key`` has had this event."""
        entry = {"key": key, "event": event, "pid": os.getpid(), "at": time.time(), "attempt": attempt}
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.starts_key if event == "start" else self.ends_key, key, 1)
        pipe.rpush(self.events_key, json.dumps(entry))
        count, _ = pipe.execute()
        return int(count)

    def counts(self, event: str = "end") -> dict[str, int]:
        raw = self.client.hgetall(self.starts_key if event == "start" else self.ends_key)
        return {text(k): int(v) for k, v in raw.items()}

    def finished(self) -> int:
        return int(self.client.hlen(self.ends_key))

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        entries = [json.loads(raw) for raw in self.client.lrange(self.events_key, 0, -1)]
        return [e for e in entries if key is None or e["key"] == key]


def text(value: object) -> str:
    """A Redis reply as text (replies are bytes; the stubs also allow str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _work(sleep_ms: int, cpu_ms: int) -> None:
    if cpu_ms:
        # Bytecode the interpreter runs while holding the GIL between switches,
        # as CPU-heavy Python code does; the keeper thread must still get its turn.
        until = time.thread_time() + cpu_ms / 1000
        total = 0
        while time.thread_time() < until:
            for i in range(2000):
                total += i * i
    deadline = time.monotonic() + sleep_ms / 1000
    while time.monotonic() < deadline:
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))


def declare_ledger_actor(broker: FleetBroker, ledger: Ledger, queue: str) -> JobActor:
    def run(p: LedgerPayload) -> dict[str, Any]:
        current = CurrentMessage.get_current_message()
        attempt = int(current.options.get("attempt", 1)) if current is not None else 0
        if ledger.record("start", p.key, attempt) == 1 or not p.first_run_only:
            _work(p.sleep_ms, p.cpu_ms)
        ledger.record("end", p.key, attempt)
        return {"success": True, "key": p.key}

    return JobActor(
        run,
        broker=broker,
        actor_name=LEDGER_ACTORS[queue],
        queue_name=queue,
        payload=LedgerPayload,
        label="ledger",
    )


def declare_ledger_actors(broker: FleetBroker, ledger: Ledger) -> dict[str, JobActor]:
    return {queue: declare_ledger_actor(broker, ledger, queue) for queue in LEDGER_ACTORS}
