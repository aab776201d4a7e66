"""The app's send() during a Redis outage: a registered code, and still the redis-py error.

Real sockets: a port nobody listens on (refused), a listener that never
answers (timeout), and Sentinels that are not there (no master).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from middleware.errors import EnqueueFailed, JobError
from middleware.fleet import FleetBroker

# Fail at the first error: redis-py's own retries would only make the tests slow.
ONCE = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that completes connections and never answers (a hung Redis)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def _broker(client: redis.Redis) -> FleetBroker:
    broker = FleetBroker(
        client=client, namespace="send-errors", middleware=[], caps={}, heartbeat_timeout=10_000
    )

    @dramatiq.actor(broker=broker, queue_name="email", actor_name="send_probe")
    def send_probe(n: int) -> None:
        pass

    broker.send_probe = send_probe  # type: ignore[attr-defined]
    return broker


def _send_error(broker: FleetBroker) -> EnqueueFailed:
    with pytest.raises(EnqueueFailed) as raised:
        broker.send_probe.send(1)  # type: ignore[attr-defined]
    return raised.value


def test_refused_connection_is_srv_6003_and_a_connection_error() -> None:
    client = redis.Redis(port=_free_port(), socket_timeout=1, **ONCE)
    error = _send_error(_broker(client))
    assert isinstance(error, JobError) and isinstance(error, redis.ConnectionError)
    assert (error.code, error.retry) == ("SRV_6003", True)
    assert isinstance(error.__cause__, redis.ConnectionError)
    assert "could not be reached" in error.message


def test_no_answer_is_srv_6003_and_a_timeout_error(silent_port: int) -> None:
    client = redis.Redis(port=silent_port, socket_timeout=0.3, **ONCE)
    broker = _broker(client)
    error = _send_error(broker)
    assert isinstance(error, redis.TimeoutError) and not isinstance(error, redis.ConnectionError)
    assert (error.code, error.retry) == ("SRV_6003", True)
    # Bulk sends say the same.
    with pytest.raises(EnqueueFailed) as bulk:
        broker.enqueue_many([broker.send_probe.message(2)])  # type: ignore[attr-defined]
    assert isinstance(bulk.value, redis.TimeoutError) and bulk.value.code == "SRV_6003"


def test_no_sentinel_master_is_srv_6003_and_master_not_found() -> None:
    sentinel = Sentinel([("127.0.0.1", _free_port())], sentinel_kwargs={"socket_timeout": 0.3})
    client = sentinel.master_for("mymaster", socket_timeout=0.3)
    error = _send_error(_broker(client))
    assert isinstance(error, MasterNotFoundError) and isinstance(error, redis.ConnectionError)
    assert error.code == "SRV_6003"
