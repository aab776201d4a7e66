"""A Redis consumer that takes a concurrency lease with every message it fetches.

A capped queue gives out at most ``cap`` leases across the whole fleet; a
consumer finding none free simply fetches nothing, so no worker thread ever
waits on a slot and no attempt is spent waiting. Leases are released when the
message is acknowledged, rejected or requeued, and expire if their holder dies.

An idle consumer does not poll: it blocks on the queue's wake list, which
every enqueue, freed slot, requeue and resume pushes to, so a message sent to
an idle fleet starts in milliseconds. A delayed-queue consumer blocks no
longer than until the earliest due time it holds, so delayed messages and
retries move on when they come due.

A busy consumer does not fetch either: the script call that acknowledges a
finished message also takes the next one for it (the slot just freed, taken
again), so a steady stream costs one round trip per message, as Dramatiq's
own acks do. A finished job's message stays in the ack set until its
outcome is written (``middleware.settle``): that call only frees its slot.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from .. import keys
from ..errors import VAL_2003
from ..settle import pending_outcome

if TYPE_CHECKING:
    from . import FleetBroker

logger = logging.getLogger("middleware.fleet")

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


# Dramatiq refuses delays of 7 days or more; a day of slack for clock skew.
MAX_ETA_AHEAD_MS = 8 * 86_400_000
_INT_OPTIONS = ("attempt", "attempts", "max_attempts", "backoff_min_ms", "backoff_max_ms", "generation")


def malformed(message: Message[Any], queue_name: str) -> str | None:
    """Why a decoded message cannot be trusted (None if it can).

    Only a client with write access to Redis can produce these; each would
    otherwise crash a consumer, stall a queue or settle without a code.
    """
    checks = (
        (isinstance(message.actor_name, str), "actor_name is not a string"),
        (message.queue_name == queue_name, f"it names queue {message.queue_name!r}, not {queue_name!r}"),
        (isinstance(message.args, list | tuple), "args is not a list"),
        (isinstance(message.kwargs, dict), "kwargs is not an object"),
        (isinstance(message.options, dict), "options is not an object"),
        (isinstance(message.message_id, str), "message_id is not a string"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    options = message.options
    for name in _INT_OPTIONS:
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"option {name} is not an integer"
    eta = options.get("eta")
    if eta is not None:
        if keys.canonical(queue_name) == queue_name:
            return "a due time on a queue that is not a delay queue"
        if isinstance(eta, bool) or not isinstance(eta, int | float):
            return "option eta is not a number"
        if eta > time.time() * 1000 + MAX_ETA_AHEAD_MS:
            return "a due time more than 7 days ahead"
    return None


def _stamp(message: Message[Any], code: str, error: str) -> None:
    message.options.update(error_code=code, error=error, attempts=0, failed_at=int(time.time() * 1000))


REDIS_TIMEOUT_SLACK_S = 0.1


class FleetConsumer(Consumer):
    def __init__(self, broker: FleetBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        lane_of = keys.canonical(queue_name)
        # Only live queues are capped; their delayed twins just move messages along.
        self.cap = broker.caps.get(keys.group(queue_name), 0) if lane_of == queue_name else 0
        self.yield_to = broker.high_lane_of(queue_name)
        self.partner = broker.partner_lane(queue_name)
        self._cache: deque[tuple[str, bytes]] = deque()
        # Shared by every consumer of this queue in this process: after Dramatiq
        # replaces a consumer (a connection error), the messages still running
        # under the old one stay held, so their leases are renewed and count
        # against this process's threads until they settle.
        self._held, self._lock = broker.held_for(queue_name)
        # Delayed messages held here until due (or promoted); Dramatiq only
        # gets them then, so a promotion can still reach them.
        self._delayed: dict[str, tuple[int, Message[Any]]] = {}
        self._settled = threading.Event()
        self._wake_key = keys.wake(broker.namespace, queue_name)
        # Refills are for live queues; a delay queue's messages only move along.
        self._moves_along = lane_of != queue_name
        self._refills = not self._moves_along
        self._closed = False
        # Set while this consumer blocks in Redis: a refill landing then must wake it
        # through its own key (the queue's wake list would wake any consumer).
        self._blocking = False
        self._nudge_key = keys.wake(broker.namespace, f"__consumer__.{broker.broker_id}.{queue_name}")
        # Block below the socket timeout, and long enough that an idle
        # consumer costs Redis less than Dramatiq's polling does.
        self._idle_wait_s = broker.idle_wait_ms / 1000

    @property
    def outstanding_message_count(self) -> int:
        with self._lock:
            return len(self._held)

    def held(self) -> list[tuple[str, str]]:
        """(queue, redis id) of every message of this queue this process has fetched and not settled."""
        with self._lock:
            return [(self.queue_name, rid) for rid in self._held]

    def _settle(self, redis_id: str) -> None:
        with self._lock:
            self._held.discard(redis_id)
        self._settled.set()

    def ack(self, message: MessageProxy) -> None:
        redis_id = message.options["redis_message_id"]
        # Its outcome still on its way to Redis: the message is forgotten with it.
        pending = pending_outcome(message)
        try:
            refilled = self.broker.fleet.ack(
                self.queue_name,
                redis_id,
                self.partner,
                refill=self._refill_wanted(redis_id),
                cap=self.cap,
                lease_ms=self.broker.lease_ms,
                yield_to=self.yield_to,
                keep=pending is not None,
            )
        except _REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        if refilled:
            self._accept_refill(refilled)
        self._settle(redis_id)
        if pending is not None:
            pending.settle(self.queue_name, redis_id)

    def _limit(self) -> int:
        """Most messages held at once: prefetch, and for a capped queue no more than
        this process's worker threads (more would sit on slots idle threads elsewhere could use)."""
        threads = self.broker.worker_threads
        if self.cap and threads:
            return min(self.prefetch, threads)
        return self.prefetch

    def _refill_wanted(self, settling: str) -> int:
        """One message in for the one going out, while this consumer has room for it."""
        if not self._refills or self._closed or self.broker.stopping.is_set():
            return 0
        with self._lock:
            room = self._limit() - len(self._held) + (1 if settling in self._held else 0)
        return 1 if room > 0 else 0

    def _accept_refill(self, refilled: list[tuple[str, bytes]]) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._held.update(redis_id for redis_id, _ in refilled)
                self._cache.extend(refilled)
        if closed:
            # Closed while the call was out: straight back to the head of the queue.
            with contextlib.suppress(*_REDIS_DOWN):
                self.broker.fleet.requeue(self.queue_name, [redis_id for redis_id, _ in refilled])
            return
        # The consumer thread checks its cache after raising the flag and
        # before it blocks, and the cache was filled before the flag is read
        # here: one of the two sees the other, so no refill waits out an idle wait.
        if self._blocking:
            with contextlib.suppress(*_REDIS_DOWN):
                pipe = self.broker.client.pipeline(transaction=False)
                pipe.rpush(self._nudge_key, b"1")
                pipe.expire(self._nudge_key, 60)
                pipe.execute()

    def nack(self, message: MessageProxy) -> None:
        redis_id = message.options["redis_message_id"]
        try:
            self.broker.fleet.nack(self.queue_name, redis_id, self.partner)
        except _REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        self._settle(redis_id)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        ids = [m.options["redis_message_id"] for m in messages]
        try:
            self.broker.fleet.requeue(self.queue_name, ids)
        except _REDIS_DOWN as exc:
            self.broker.return_later(self.queue_name, ids)
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            for redis_id in ids:
                self._settle(redis_id)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                ready = self._take_due()
                if ready is not None:
                    return MessageProxy(ready)
                if self._cache:
                    redis_id, data = self._cache.popleft()
                    try:
                        message = Message.decode(data)
                    except Exception:
                        self._dead_letter(redis_id, f"message could not be decoded ({len(data)} bytes)")
                        continue
                    problem = malformed(message, self.queue_name)
                    if problem is not None:
                        self._dead_letter(redis_id, f"malformed message: {problem}")
                        continue
                    # The id it was fetched under is the truth (a message written by
                    # something else may lack or misstate it): ack and nack use it.
                    message.options["redis_message_id"] = redis_id
                    if message.actor_name not in self.broker.actors:
                        # Dramatiq dead-letters it (ActorNotFound); say why on the dead letter.
                        _stamp(
                            message,
                            VAL_2003.code,
                            f"no actor named {message.actor_name!r} in this deployment",
                        )
                    eta = message.options.get("eta")
                    if isinstance(eta, int | float) and eta > time.time() * 1000:
                        self._delayed[redis_id] = (int(eta), message)
                        continue
                    return MessageProxy(message)
                with self._lock:
                    free = self._limit() - len(self._held)
                if free <= 0:
                    # Every prefetched message is still being worked on: wait
                    # for one to settle here, not in Redis.
                    self._settled.wait(self.timeout / 1000)
                    self._settled.clear()
                    return None
                fetched = self.broker.fleet.fetch(
                    self.queue_name, free, self.cap, self.broker.lease_ms, self.yield_to
                )
                if fetched:
                    with self._lock:
                        self._held.update(redis_id for redis_id, _ in fetched)
                    self._cache.extend(fetched)
                    continue
                # Empty, paused or at its cap: sleep until woken, or until a
                # held delayed message comes due.
                self._wait_for_work()
                return None
        except _REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _dead_letter(self, redis_id: str, reason: str) -> None:
        """Dead-letter unusable data as a readable stand-in (never a copy: it may hold secrets)."""
        logger.error(
            "Message %s on queue %s dead-lettered with VAL_2003: %s", redis_id, self.queue_name, reason
        )
        stand_in: Message[Any] = Message(
            queue_name=keys.canonical(self.queue_name),
            actor_name="<undecodable>",
            args=(),
            kwargs={},
            options={"redis_message_id": redis_id},
            message_id=redis_id,
        )
        _stamp(stand_in, VAL_2003.code, reason)
        self.broker.client.hset(
            keys.messages(self.broker.namespace, self.queue_name), redis_id, stand_in.encode()
        )
        self.broker.fleet.nack(self.queue_name, redis_id)
        self._settle(redis_id)

    def _take_due(self) -> Message[Any] | None:
        """A held delayed message that is due (or was promoted), for Dramatiq to move along."""
        if not self._delayed:
            return None
        now = time.time() * 1000
        for redis_id, (eta, message) in self._delayed.items():
            if eta <= now:
                del self._delayed[redis_id]
                return message
        return None

    def _check_promotions(self) -> None:
        """Make held delayed messages that an operator promoted due now (one command)."""
        held = list(self._delayed.items())
        promoted_key = keys.promoted(self.broker.namespace)
        flags = self.broker.client.smismember(promoted_key, [m.message_id for _, (_, m) in held])
        promoted = [
            (redis_id, message) for (redis_id, (_, message)), flag in zip(held, flags, strict=True) if flag
        ]
        if promoted:
            now = int(time.time() * 1000)
            for redis_id, message in promoted:
                message.options["eta"] = now
                self._delayed[redis_id] = (now, message)
            self.broker.client.srem(promoted_key, *[message.message_id for _, message in promoted])

    def _wait_for_work(self) -> None:
        self._blocking = True
        try:
            if not self._cache:
                self._block_for_work()
        finally:
            self._blocking = False

    def _block_for_work(self) -> None:
        if self._delayed:
            self._check_promotions()
        next_due = min((eta for eta, _ in self._delayed.values()), default=None)
        due_in_s = None if next_due is None else (next_due - time.time() * 1000) / 1000
        if due_in_s is not None and due_in_s <= 0:
            return
        idle_wait_s = 0.05 if self.broker.stopping.is_set() else self._idle_wait_s
        wake_keys = [self._wake_key, self.broker.process_wake_key, self._nudge_key]
        if due_in_s is None or due_in_s >= idle_wait_s:
            self._relay(self.broker.client.blpop(wake_keys, timeout=idle_wait_s))
            return
        # Redis times blocked clients out on its own cron (10 Hz by default),
        # up to ~100 ms late: block until shortly before the due time, then
        # sleep the rest here.
        deadline = time.monotonic() + due_in_s
        woken = due_in_s > REDIS_TIMEOUT_SLACK_S + 0.01 and self.broker.client.blpop(
            wake_keys, timeout=due_in_s - REDIS_TIMEOUT_SLACK_S
        )
        self._relay(woken or None)
        if not woken:
            time.sleep(max(0.0, deadline - time.monotonic()))

    def _relay(self, popped: Any) -> None:
        """Pass the shutdown wake-up on: one token reaches every consumer of this process in turn."""
        if popped and popped[0].decode() == self.broker.process_wake_key:
            self.broker.client.rpush(self.broker.process_wake_key, b"1")

    def close(self) -> None:
        # Messages fetched but never handed to the worker go back to the head.
        with self._lock:
            self._closed = True
            cached = [redis_id for redis_id, _ in self._cache] + list(self._delayed)
            self._cache.clear()
            self._delayed.clear()
            if self._moves_along:
                # Nothing of a delay queue runs here: what is still held beyond the
                # cache was handed to Dramatiq's in-memory delay queue, which it
                # drops on a connection error (and requeues through us otherwise).
                cached += [redis_id for redis_id in self._held if redis_id not in set(cached)]
        try:
            self.broker.fleet.requeue(self.queue_name, cached)
        except _REDIS_DOWN:
            logger.warning(
                "Could not requeue %d fetched messages; they go back once Redis answers.", len(cached)
            )
            self.broker.return_later(self.queue_name, cached)
        for redis_id in cached:
            self._settle(redis_id)
