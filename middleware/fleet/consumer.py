"""A Redis consumer that takes a concurrency lease with every message it fetches.

A capped queue gives out at most ``cap`` leases across the whole fleet; a
consumer finding none free simply fetches nothing, so no worker thread ever
waits on a slot and no attempt is spent waiting. Leases are released when the
message is acknowledged, rejected or requeued, and expire if their holder dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

if TYPE_CHECKING:
    from . import FleetBroker

logger = logging.getLogger("middleware.fleet")

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class FleetConsumer(Consumer):
    def __init__(self, broker: FleetBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        self.cap = broker.caps.get(queue_name, 0)
        self._cache: deque[tuple[str, bytes]] = deque()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._misses = 0

    @property
    def outstanding_message_count(self) -> int:
        with self._lock:
            return len(self._held)

    def held(self) -> list[tuple[str, str]]:
        """(queue, redis id) of every message this consumer has fetched and not settled."""
        with self._lock:
            return [(self.queue_name, rid) for rid in self._held]

    def _settle(self, redis_id: str) -> None:
        with self._lock:
            self._held.discard(redis_id)

    def ack(self, message: MessageProxy) -> None:
        redis_id = message.options["redis_message_id"]
        try:
            self.broker.fleet.ack(self.queue_name, redis_id)
        except _REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        self._settle(redis_id)

    def nack(self, message: MessageProxy) -> None:
        redis_id = message.options["redis_message_id"]
        try:
            self.broker.fleet.nack(self.queue_name, redis_id)
        except _REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        self._settle(redis_id)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        ids = [m.options["redis_message_id"] for m in messages]
        self.broker.fleet.requeue(self.queue_name, ids)
        for redis_id in ids:
            self._settle(redis_id)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self._cache:
                    redis_id, data = self._cache.popleft()
                    self._misses = 0
                    try:
                        return MessageProxy(Message.decode(data))
                    except Exception:
                        # Undecodable data must not stop the queue: dead-letter it.
                        logger.error(
                            "Undecodable message %s on queue %s: dead-lettered.", redis_id, self.queue_name
                        )
                        self.broker.fleet.nack(self.queue_name, redis_id)
                        self._settle(redis_id)
                        continue
                with self._lock:
                    free = self.prefetch - len(self._held)
                if free > 0:
                    fetched = self.broker.fleet.fetch(self.queue_name, free, self.cap, self.broker.lease_ms)
                    if fetched:
                        with self._lock:
                            self._held.update(redis_id for redis_id, _ in fetched)
                        self._cache.extend(fetched)
                        continue
                # Nothing to do (empty, paused or at its cap): poll again with backoff.
                self._misses, backoff_ms = compute_backoff(self._misses, max_backoff=self.timeout)
                time.sleep(backoff_ms / 1000)
                return None
        except _REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        # Messages fetched but never handed to the worker go back to the head.
        cached = [redis_id for redis_id, _ in self._cache]
        self._cache.clear()
        try:
            self.broker.fleet.requeue(self.queue_name, cached)
        except _REDIS_DOWN:
            logger.warning("Could not requeue %d prefetched messages; recovery will.", len(cached))
        for redis_id in cached:
            self._settle(redis_id)
