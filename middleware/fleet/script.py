"""Typed calls into fleet.lua; the keeper's tick is also the worker's heartbeat."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from ..scripts import LuaScript

FLEET = LuaScript.from_file(Path(__file__).parent / "fleet.lua")


def now_ms() -> int:
    return int(time.time() * 1000)


class FleetScript:
    def __init__(self, client: redis.Redis, namespace: str, worker_id: str) -> None:
        self.client = client
        self.namespace = namespace
        self.worker_id = worker_id

    @property
    def script(self) -> LuaScript:
        return FLEET

    def _args(self, command: str, *args: str | int) -> list[Any]:
        return [command, now_ms(), self.worker_id, *args]

    def _call(self, command: str, *args: str | int) -> Any:
        return FLEET(self.client, [self.namespace], self._args(command, *args))

    def fetch(
        self, queue: str, count: int, cap: int, lease_ms: int, yield_to: str = ""
    ) -> list[tuple[str, bytes]]:
        """Take up to ``count`` messages, no more than the free slots of a capped queue allow,
        and none while the high lane ``yield_to`` has messages waiting."""
        return _pairs(self._call("fetch", queue, count, cap, lease_ms, yield_to))

    def ack(
        self,
        queue: str,
        redis_id: str,
        also_wake: str = "",
        *,
        refill: int = 0,
        cap: int = 0,
        lease_ms: int = 0,
        yield_to: str = "",
        keep: bool = False,
    ) -> list[tuple[str, bytes]]:
        """Acknowledge ``redis_id`` and, with ``refill``, take up to that many more as ``fetch`` would.

        With ``keep`` the slot is freed but the message stays in this worker's
        ack set until :meth:`queue_settle` forgets it: until then, this
        worker's death sends it back to its queue.
        """
        if refill <= 0 and not keep:
            self._call("ack", queue, redis_id, also_wake)
            return []
        flat = self._call("ack", queue, redis_id, also_wake, refill, cap, lease_ms, yield_to, int(keep))
        return _pairs(flat)

    def queue_settle(self, pipe: Any, settled: Sequence[tuple[str, str]]) -> None:
        """Add to ``pipe`` one call that forgets these (queue, redis id) pairs acked with ``keep``."""
        flat = [part for pair in settled for part in pair]
        FLEET.queue(pipe, [self.namespace], self._args("settle", *flat))

    def nack(self, queue: str, redis_id: str, also_wake: str = "") -> None:
        self._call("nack", queue, redis_id, also_wake)

    def requeue(self, queue: str, redis_ids: Sequence[str]) -> None:
        if redis_ids:
            self._call("requeue", queue, *redis_ids)

    def tick(
        self, lease_ms: int, held: Sequence[tuple[str, str]], heartbeat_timeout_ms: int, queues: Iterable[str]
    ) -> int:
        """One keeper round trip: heartbeat, lease renewal, recovery; returns how many were requeued."""
        flat = [part for pair in held for part in pair]
        return int(self._call("tick", lease_ms, heartbeat_timeout_ms, len(held), *flat, *queues))


def _pairs(flat: Any) -> list[tuple[str, bytes]]:
    assert isinstance(flat, list)
    return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]


def deferred_scripts() -> list[LuaScript]:
    """Every script a deferred write or a broker pipeline may call."""
    from ..job_state import STATE

    return [FLEET, STATE]
