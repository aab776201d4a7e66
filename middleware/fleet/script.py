"""Typed calls into fleet.lua; every call also refreshes the caller's heartbeat."""

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

    def _args(self, command: str, *args: str | int) -> list[Any]:
        return [command, now_ms(), self.worker_id, *args]

    def _call(self, command: str, *args: str | int) -> Any:
        return FLEET(self.client, [self.namespace], self._args(command, *args))

    def fetch(
        self, queue: str, count: int, cap: int, lease_ms: int, yield_to: str = ""
    ) -> list[tuple[str, bytes]]:
        """Take up to ``count`` messages, no more than the free slots of a capped queue allow,
        and none while the high lane ``yield_to`` has messages waiting."""
        flat = self._call("fetch", queue, count, cap, lease_ms, yield_to)
        assert isinstance(flat, list)
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    def ack(self, queue: str, redis_id: str, also_wake: str = "") -> None:
        self._call("ack", queue, redis_id, also_wake)

    def nack(self, queue: str, redis_id: str, also_wake: str = "") -> None:
        self._call("nack", queue, redis_id, also_wake)

    def requeue(self, queue: str, redis_ids: Sequence[str]) -> None:
        if redis_ids:
            self._call("requeue", queue, *redis_ids)

    def renew(self, lease_ms: int, held: Iterable[tuple[str, str]]) -> None:
        """Extend the leases of (queue, redis id) pairs this process holds; also a heartbeat."""
        self._call("renew", lease_ms, *(part for pair in held for part in pair))

    def recover(self, heartbeat_timeout_ms: int, queues: Iterable[str]) -> int:
        """Requeue the in-flight messages of workers whose heartbeat is too old; returns how many."""
        return int(self._call("recover", heartbeat_timeout_ms, *queues))


def deferred_scripts() -> list[LuaScript]:
    """Every script a deferred write or a broker pipeline may call."""
    from ..job_state import STATE

    return [FLEET, STATE]
