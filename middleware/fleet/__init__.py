"""Dramatiq's RedisBroker with fleet-wide policy enforced where messages are fetched.

Per-queue concurrency caps and paused queues cannot be middleware: by the
time a middleware hook runs, Dramatiq has already fetched the message and
given it a worker thread. :class:`FleetBroker` keeps Dramatiq's queue layout
and Lua script for enqueueing, and consumes through :class:`FleetConsumer`,
whose fetch takes a lease on a concurrency slot in the same atomic script.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from uuid import uuid4

import redis
from dramatiq.broker import Broker
from dramatiq.brokers import redis as redis_broker_module
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from .. import deferred, keys
from ..errors import enqueue_failed
from ..scripts import LuaScript, execute
from .consumer import FleetConsumer
from .keeper import Keeper
from .script import FleetScript, deferred_scripts

__all__ = ["FleetBroker", "FleetConsumer"]

_Hook = tuple[Middleware, Callable[..., Any]]

#: Wake tokens kept per queue: enough for every idle consumer of a fleet.
WAKE_TOKENS = 64

#: Dramatiq's own enqueue script, called with EVALSHA inside our enqueue pipeline.
DISPATCH = LuaScript(redis_broker_module._scripts["dispatch"])


class FleetBroker(RedisBroker):
    """Parameters:
    caps: queue name -> most messages of it in flight across the fleet.
    heartbeat_timeout: ms without a heartbeat after which a worker is dead.
    lease_ms: how long a concurrency lease lives unless renewed (default: heartbeat_timeout).
    idle_wait_ms: longest an idle consumer blocks on its wake list before fetching anyway.
      Everything that makes work available pushes a wake token (enqueue, a freed
      slot, requeue, recovery, resume, promote, shutdown), so this only bounds the
      wait for messages written by other clients; longer means less idle load.
    high_lanes: queues that get a high-priority lane (``{queue}.HI``), sharing their
      slots and dead letters; the normal lane fetches nothing while the high one has waiting messages.
    """

    def __init__(
        self,
        *,
        caps: Mapping[str, int],
        heartbeat_timeout: int,
        lease_ms: int | None = None,
        idle_wait_ms: int = 10_000,
        high_lanes: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        # Before Dramatiq's constructor: it already emits signals.
        self._hook_cache: dict[str, tuple[tuple[Middleware, ...], list[_Hook]]] = {}
        super().__init__(heartbeat_timeout=heartbeat_timeout, **kwargs)  # type: ignore[no-untyped-call]
        self.caps = dict(caps)
        self.lease_ms = lease_ms or heartbeat_timeout
        # A blocking read must end before the client's socket times out.
        socket_timeout = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        limit_ms = int((float(socket_timeout) - 1) * 1000) if socket_timeout else idle_wait_ms
        self.idle_wait_ms = max(100, min(idle_wait_ms, limit_ms))
        # Queues with a high-priority lane ("email" -> "email.HI"), consumed first.
        self.high_lanes = frozenset(high_lanes)
        for queue_name in sorted(self.high_lanes):
            self.declare_queue(keys.high_lane(queue_name))
        self.fleet = FleetScript(self.client, self.namespace, self.broker_id)
        self._consumers: weakref.WeakSet[FleetConsumer] = weakref.WeakSet()
        # Consumers also block on this process's own wake key, so shutting
        # down wakes exactly them; once stopping, they wait briefly.
        self.process_wake_key = keys.wake(self.namespace, f"__process__.{self.broker_id}")
        self.stopping = threading.Event()
        # Worker threads of this process (known once a worker boots): a consumer
        # of a capped queue holds no more messages than can run at once here,
        # or it would keep slots that other processes' idle threads could use.
        self.worker_threads: int | None = None
        # queue -> redis ids this process fetched and could not put back (Redis was down)
        self._orphans: dict[str, set[str]] = {}
        self._orphans_lock = threading.Lock()
        self.add_middleware(_WorkerHooks())
        self._keeper: Keeper | None = None
        self._keeper_lock = threading.Lock()
        self._held: dict[str, tuple[set[str], threading.Lock]] = {}

    # Dramatiq calls every hook of every middleware for every signal, most of
    # them the base class's no-ops: a dozen calls per signal, several signals
    # per job. These call only the middleware that implement the hook, in
    # Dramatiq's order and with its error handling.

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "before_" + signal
        for middleware, hook in self._hooks(name, reverse=False):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "after_" + signal
        for middleware, hook in self._hooks(name, reverse=True):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def _hooks(self, name: str, *, reverse: bool) -> list[_Hook]:
        # Keyed on the middleware list as it is now: it may change at any time
        # (add_middleware, an integration stripping its own).
        current = tuple(self.middleware)
        cached = self._hook_cache.get(name)
        if cached is not None and cached[0] == current:
            return cached[1]
        ordered = reversed(current) if reverse else current
        hooks = [(m, getattr(m, name)) for m in ordered if _implements(m, name)]
        self._hook_cache[name] = (current, hooks)
        return hooks

    @property
    def consumer_class(self) -> type[FleetConsumer]:
        return FleetConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> FleetConsumer:
        consumer = FleetConsumer(self, queue_name, prefetch, timeout)
        self._consumers.add(consumer)
        self._start_keeper()
        return consumer

    def do_enqueue(self, queue_name: str, redis_id: str, data: bytes) -> None:
        """Dramatiq's enqueue script and a wake-up token for idle consumers, in one round trip.

        Raises:
          EnqueueFailed: (``SRV_6003``) Redis could not be reached or did not answer.
        """
        wake_key = keys.wake(self.namespace, queue_name)
        pipe = self.client.pipeline(transaction=False)
        for write in deferred.take(redis_id):  # the message's job state, written before it
            write(pipe)
        with _enqueue_errors():  # the dispatch arguments may ask Redis too (once per process)
            DISPATCH.queue(pipe, [self.namespace], self._dispatch_args(queue_name, redis_id, data))
            pipe.rpush(wake_key, b"1")
            pipe.ltrim(wake_key, -WAKE_TOKENS, -1)
            execute(pipe, self.client, [DISPATCH, *deferred_scripts()])

    def high_lane_of(self, queue_name: str) -> str:
        """The lane ``queue_name`` yields to ("" if none): only a normal lane with a high twin."""
        if queue_name in self.high_lanes:
            return keys.high_lane(queue_name)
        return ""

    def partner_lane(self, queue_name: str) -> str:
        """The other lane of a laned queue, woken when a shared slot frees ("" if none)."""
        group = keys.group(queue_name)
        if group not in self.high_lanes or keys.canonical(queue_name) != queue_name:
            return ""
        return keys.high_lane(group) if queue_name == group else group

    def enqueue_many(self, messages: Sequence[Message[Any]], *, chunk: int = 500) -> list[Message[Any]]:
        """Enqueue many messages in pipelined round trips, with the same hooks as ``enqueue``.

        Each chunk is one round trip: every message's deferred writes (its
        job state) before it, Dramatiq's enqueue script for it, and one set
        of wake-up tokens per queue.
        """
        done: list[Message[Any]] = []
        for start in range(0, len(messages), chunk):
            prepared = []
            for original in messages[start : start + chunk]:
                message = original.copy(options={"redis_message_id": str(uuid4())})
                self.emit_before("enqueue", message, None)
                prepared.append(message)
            pipe = self.client.pipeline(transaction=False)
            woken: dict[str, int] = {}
            with _enqueue_errors():
                for message in prepared:
                    redis_id = message.options["redis_message_id"]
                    for write in deferred.take(redis_id):
                        write(pipe)
                    args = self._dispatch_args(message.queue_name, redis_id, message.encode())
                    DISPATCH.queue(pipe, [self.namespace], args)
                    woken[message.queue_name] = woken.get(message.queue_name, 0) + 1
                for queue_name, count in woken.items():
                    wake_key = keys.wake(self.namespace, queue_name)
                    pipe.rpush(wake_key, *([b"1"] * min(count, WAKE_TOKENS)))
                    pipe.ltrim(wake_key, -WAKE_TOKENS, -1)
                execute(pipe, self.client, [DISPATCH, *deferred_scripts()])
            for message in prepared:
                self.emit_after("enqueue", message, None)
            done.extend(prepared)
        return done

    def _dispatch_args(self, queue_name: str, redis_id: str, data: bytes) -> list[Any]:
        return [
            "enqueue",
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance("enqueue"),
            self._max_unpack_size(),  # type: ignore[no-untyped-call]
            redis_id,
            data,
        ]

    def prepare_shutdown(self) -> None:
        """Wake this process's idle consumers so a worker stops in milliseconds, not an idle wait."""
        self.stopping.set()
        if self._consumers:
            # One token, relayed by each consumer it wakes to the next.
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(self.process_wake_key, b"1")
            pipe.expire(self.process_wake_key, 60)
            pipe.execute()

    def return_later(self, queue_name: str, redis_ids: Sequence[str]) -> None:
        """Messages fetched here that could not be requeued: the keeper returns them once it can.

        They stay in this live worker's ack set meanwhile, where dead-worker
        recovery would never look, and nothing in memory refers to them any more.
        """
        if redis_ids:
            with self._orphans_lock:
                self._orphans.setdefault(queue_name, set()).update(redis_ids)

    def return_orphans(self) -> int:
        """Requeue what :meth:`return_later` was given; returns how many (raises if Redis is down)."""
        with self._orphans_lock:
            pending = {queue_name: sorted(ids) for queue_name, ids in self._orphans.items() if ids}
        returned = 0
        for queue_name, ids in pending.items():
            self.fleet.requeue(queue_name, ids)
            with self._orphans_lock:
                self._orphans[queue_name].difference_update(ids)
            returned += len(ids)
        return returned

    def held_for(self, queue_name: str) -> tuple[set[str], threading.Lock]:
        """The redis ids this process holds of ``queue_name`` (fetched, not settled), and their lock."""
        with self._keeper_lock:
            return self._held.setdefault(queue_name, (set(), threading.Lock()))

    def held_messages(self) -> list[tuple[str, str]]:
        """(queue, redis id) of every message this process holds: the keeper renews their leases."""
        with self._keeper_lock:
            held = list(self._held.items())
        pairs: list[tuple[str, str]] = []
        for queue_name, (ids, lock) in held:
            with lock:
                pairs.extend((queue_name, redis_id) for redis_id in ids)
        return pairs

    def _start_keeper(self) -> None:
        with self._keeper_lock:
            if self._keeper is None:
                # A tick every fifth of the timeout: a live worker is never
                # mistaken for a dead one, a dead one is noticed promptly.
                interval = min(2.0, max(0.2, self.heartbeat_timeout / 5000))
                self._keeper = Keeper(self, interval)
                self._keeper.start()

    def close(self) -> None:
        with self._keeper_lock:
            if self._keeper is not None:
                self._keeper.stop()
                self._keeper = None
        super().close()


@contextlib.contextmanager
def _enqueue_errors() -> Iterator[None]:
    """Redis failures of an enqueue as :class:`EnqueueFailed`: a registered code for the app,
    and still the redis-py error type it catches today."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise enqueue_failed(exc) from exc


def _implements(middleware: Middleware, hook: str) -> bool:
    """Whether ``middleware`` does anything on ``hook`` (the base class's are no-ops)."""
    if hook in vars(middleware):
        return True
    own = getattr(type(middleware), hook, None)
    return own is not None and own is not getattr(Middleware, hook, None)


class _WorkerHooks(Middleware):
    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        if isinstance(broker, FleetBroker):
            broker.worker_threads = int(worker.worker_threads)

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if isinstance(broker, FleetBroker):
            # Without Redis, consumers notice within one idle wait instead.
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                broker.prepare_shutdown()
