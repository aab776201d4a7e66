"""The fleet consumer's ack-and-refill and the broker's hook dispatch, on real Redis.

A busy consumer gets its next message from the script call that acknowledges
the last one: the slot it frees is taken again in the same call, so no wake
token is pushed and no fetch is needed. These tests drive one consumer
directly (no worker processes) and read the outcome from Redis.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from middleware.fleet import FleetBroker, FleetConsumer
from tests.support.redis_inspect import wait_until

QUEUE = "refill"


@pytest.fixture
def broker(redis_client: redis.Redis, redis_namespace: str) -> Iterator[FleetBroker]:
    b = FleetBroker(
        client=redis_client,
        namespace=redis_namespace,
        middleware=[],
        caps={QUEUE: 3},
        heartbeat_timeout=30_000,
    )

    @dramatiq.actor(broker=b, queue_name=QUEUE, actor_name="refill_probe")
    def refill_probe(n: int) -> None:
        pass

    b.refill_probe = refill_probe  # type: ignore[attr-defined]
    yield b
    b.close()


def send(broker: FleetBroker, count: int) -> None:
    for n in range(count):
        broker.refill_probe.send(n)  # type: ignore[attr-defined]


def take(consumer: FleetConsumer, count: int) -> list[MessageProxy]:
    taken = []
    while len(taken) < count:
        message = next(consumer)
        assert message is not None, f"consumer gave {len(taken)} of {count} messages"
        taken.append(message)
    return taken


def leases(client: redis.Redis, ns: str) -> set[str]:
    return {m.decode() for m in client.zrange(f"{ns}:slots:{QUEUE}", 0, -1)}


def waiting(client: redis.Redis, ns: str) -> int:
    return int(client.llen(f"{ns}:{QUEUE}"))


def wake_tokens(client: redis.Redis, ns: str) -> int:
    return int(client.llen(f"{ns}:wake:{QUEUE}"))


def test_an_ack_takes_the_next_message_and_its_slot_in_the_same_call(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    broker.worker_threads = 2
    send(broker, 5)
    consumer = broker.consume(QUEUE, prefetch=4, timeout=100)
    first, second = take(consumer, 2)
    # A consumer holds no more of a capped queue than its process has threads,
    # although the cap (3) and prefetch (4) would allow more.
    assert next(consumer) is None
    assert waiting(redis_client, redis_namespace) == 3
    redis_client.delete(f"{redis_namespace}:wake:{QUEUE}")

    consumer.ack(first)

    held = {rid for _, rid in consumer.held()}
    assert len(held) == 2 and first.options["redis_message_id"] not in held
    # The freed slot went straight to the refilled message, so nobody was woken for it.
    assert leases(redis_client, redis_namespace) == held
    assert waiting(redis_client, redis_namespace) == 2
    assert wake_tokens(redis_client, redis_namespace) == 0
    third = next(consumer)
    assert third is not None and third.options["redis_message_id"] in held
    assert second.options["redis_message_id"] in held


def test_an_ack_on_an_empty_queue_frees_the_slot_and_wakes_only_if_work_waits(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    broker.worker_threads = 5
    send(broker, 1)
    consumer = broker.consume(QUEUE, prefetch=4, timeout=100)
    (only,) = take(consumer, 1)
    redis_client.delete(f"{redis_namespace}:wake:{QUEUE}")
    consumer.ack(only)
    assert consumer.held() == []
    assert leases(redis_client, redis_namespace) == set()
    assert wake_tokens(redis_client, redis_namespace) == 0


def test_a_refill_wakes_its_consumer_blocked_in_redis_at_once(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    broker.worker_threads = 2
    send(broker, 1)
    consumer = broker.consume(QUEUE, prefetch=2, timeout=100)
    (first,) = take(consumer, 1)
    # A message written by another client, with no wake token: only the refill finds it.
    send(broker, 1)
    redis_client.delete(f"{redis_namespace}:wake:{QUEUE}")
    got: list[MessageProxy] = []
    started = time.monotonic()

    def consume() -> None:
        # Takes the second message at once; then blocks in Redis (idle wait: 10 s).
        while len(got) < 1 and time.monotonic() - started < 30:
            message = next(consumer)
            if message is not None:
                got.append(message)

    # Take the message out from under the consumer first, so it blocks.
    stolen = redis_client.lpop(f"{redis_namespace}:{QUEUE}")
    assert stolen is not None
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert wait_until(lambda: consumer._blocking, timeout=5)
    redis_client.rpush(f"{redis_namespace}:{QUEUE}", stolen)
    consumer.ack(first)
    thread.join(timeout=8)
    assert got and got[0].options["redis_message_id"] == stolen.decode()
    # Well inside the 10 s idle wait: the refill woke the consumer.
    assert time.monotonic() - started < 8


def test_a_closed_or_stopping_consumer_takes_nothing_with_its_acks(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    broker.worker_threads = 2
    send(broker, 4)
    consumer = broker.consume(QUEUE, prefetch=2, timeout=100)
    first, second = take(consumer, 2)
    broker.stopping.set()
    consumer.ack(first)
    assert waiting(redis_client, redis_namespace) == 2
    broker.stopping.clear()
    consumer.close()
    consumer.ack(second)
    assert waiting(redis_client, redis_namespace) == 2
    assert leases(redis_client, redis_namespace) == set()


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.calls.append(f"before {self.name}")

    def after_process_message(self, broker: Any, message: Any, **kwargs: Any) -> None:
        self.calls.append(f"after {self.name}")


class Skipper(Middleware):
    def before_process_message(self, broker: Any, message: Any) -> None:
        raise SkipMessage()


class Broken(Middleware):
    def after_process_message(self, broker: Any, message: Any, **kwargs: Any) -> None:
        raise RuntimeError("broken hook")


def test_hooks_run_in_dramatiq_order_and_follow_changes_to_the_middleware_list(
    broker: FleetBroker,
) -> None:
    calls: list[str] = []
    broker.add_middleware(Recorder("a", calls))
    broker.add_middleware(Recorder("b", calls))
    broker.emit_before("process_message", None)
    broker.emit_after("process_message", None, result=None, exception=None)
    assert calls == ["before a", "before b", "after b", "after a"]

    calls.clear()
    broker.add_middleware(Broken())
    broker.add_middleware(Recorder("c", calls))
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "name", "") != "a"]
    broker.emit_after("process_message", None, result=None, exception=None)
    # A failing hook is logged and the others still run (Dramatiq's behaviour).
    assert calls == ["after c", "after b"]

    broker.add_middleware(Skipper())
    with pytest.raises(SkipMessage):
        broker.emit_before("process_message", None)


def test_messages_running_under_a_replaced_consumer_stay_held_until_settled(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    broker.worker_threads = 2
    send(broker, 1)
    # Dramatiq replaces a consumer after a connection error; the job it handed
    # out keeps running and is acknowledged through the new consumer.
    old = broker.consume(QUEUE, prefetch=2, timeout=100)
    (running,) = take(old, 1)
    old.close()
    del old
    gc.collect()
    new = broker.consume(QUEUE, prefetch=2, timeout=100)
    redis_id = running.options["redis_message_id"]
    # Still held, so the keeper renews its lease, and it counts against the threads.
    assert broker.held_messages() == [(QUEUE, redis_id)]
    assert new.outstanding_message_count == 1
    new.ack(running)
    assert broker.held_messages() == []
    assert leases(redis_client, redis_namespace) == set()
