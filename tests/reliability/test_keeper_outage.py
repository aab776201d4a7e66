"""Dead-worker recovery around a Redis outage, on a private redis-server.

After an outage longer than the heartbeat timeout every worker's heartbeat
looks stale, the live ones' too. A keeper that was cut off must not requeue
other workers' in-flight messages as soon as Redis is back (they would run
twice); it waits until it has been connected for a full timeout, by when live
workers have heartbeated. A keeper that was never cut off recovers at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from dramatiq.message import Message

from middleware.fleet import FleetBroker
from middleware.fleet.keeper import Keeper
from tests.reliability.conftest import wait_for
from tests.reliability.servers import RedisServer

TIMEOUT_MS = 1000
QUEUE = "keeper-probe"


@pytest.fixture
def brokers(
    redis_server: Callable[..., RedisServer], redis_namespace: str
) -> Iterator[tuple[RedisServer, FleetBroker, FleetBroker]]:
    server = redis_server("keeper")
    made = [
        FleetBroker(
            client=redis.Redis.from_url(server.url(), socket_timeout=2, socket_connect_timeout=2),
            namespace=redis_namespace,
            middleware=[],
            caps={},
            heartbeat_timeout=TIMEOUT_MS,
        )
        for _ in range(2)
    ]
    for broker in made:
        broker.declare_queue(QUEUE)  # a fleet's workers all declare the same queues
    yield server, made[0], made[1]
    for broker in made:
        broker.close()


def _in_flight_of(other: FleetBroker, client: redis.Redis) -> str:
    """Worker ``other`` takes one message and heartbeats (it is alive, for now)."""
    other.enqueue(Message(queue_name=QUEUE, actor_name="probe", args=(), kwargs={}, options={}))
    ((redis_id, _),) = other.fleet.fetch(QUEUE, 1, 0, TIMEOUT_MS, "")
    client.zadd(f"{other.namespace}:__heartbeats__", {other.broker_id: int(time.time() * 1000)})
    return redis_id


def _stale(broker: FleetBroker, client: redis.Redis) -> None:
    stale_ms = int(time.time() * 1000) - 5 * TIMEOUT_MS
    client.zadd(f"{broker.namespace}:__heartbeats__", {broker.broker_id: stale_ms})


def test_a_keeper_back_from_an_outage_judges_others_dead_only_after_a_full_timeout(
    brokers: tuple[RedisServer, FleetBroker, FleetBroker],
) -> None:
    server, other, own = brokers
    client = server.client()
    try:
        redis_id = _in_flight_of(other, client)
        keeper = Keeper(own, interval_s=0.2)
        keeper.tick()
        assert client.llen(f"{own.namespace}:{QUEUE}") == 0  # alive: left alone
    finally:
        client.close()

    server.stop(signal.SIGTERM)  # a clean stop: the AOF keeps everything
    keeper.tick()  # cut off: it notices
    server.start()
    client = server.client()
    try:
        # The outage made the other worker's heartbeat stale, as it does every live worker's.
        _stale(other, client)
        back_at = time.monotonic()
        keeper.tick()
        assert client.llen(f"{own.namespace}:{QUEUE}") == 0
        assert client.sismember(f"{own.namespace}:__acks__.{other.broker_id}.{QUEUE}", redis_id)
        # The other worker never heartbeats again: it is dead, and after a full timeout
        # connected, the keeper recovers its message.
        assert wait_for(
            lambda: keeper.tick() is None and client.llen(f"{own.namespace}:{QUEUE}") == 1, timeout=10
        )
        assert time.monotonic() - back_at >= TIMEOUT_MS / 1000
        assert client.lrange(f"{own.namespace}:{QUEUE}", 0, -1) == [redis_id.encode()]
    finally:
        client.close()


def test_a_keeper_never_cut_off_recovers_a_dead_workers_messages_at_once(
    brokers: tuple[RedisServer, FleetBroker, FleetBroker],
) -> None:
    server, other, own = brokers
    client = server.client()
    try:
        redis_id = _in_flight_of(other, client)
        _stale(other, client)  # it stopped heartbeating: dead
        Keeper(own, interval_s=0.2).tick()
        assert client.lrange(f"{own.namespace}:{QUEUE}", 0, -1) == [redis_id.encode()]
    finally:
        client.close()
