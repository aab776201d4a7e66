"""The scheduler's exactly-once gate and emitter against real Redis (per-test namespace)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from jobs.settings import Settings
from scheduler import keys
from scheduler.emitter import ActorSender, Emitter
from scheduler.gate import Claim, Cursor, RedisGate
from scheduler.schedules import build_schedules
from tests.conftest import Stack
from tests.support.redis_inspect import wait_until

T0 = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)


def queued(client: redis.Redis, namespace: str, queue: str) -> list[dict[str, Any]]:
    """Messages waiting in ``queue``, in enqueue order."""
    ids = client.lrange(f"{namespace}:{queue}", 0, -1)
    raw = client.hmget(f"{namespace}:{queue}.msgs", ids) if ids else []
    return [json.loads(item) for item in raw if item]


def gate(client: redis.Redis, namespace: str, replica: str, lease_s: float = 30.0) -> RedisGate:
    return RedisGate(client, namespace, replica, emitted_ttl_s=3600, lease_s=lease_s)


def test_one_claim_wins_and_the_others_see_pending_then_sent(
    redis_client: redis.Redis, redis_namespace: str
) -> None:
    a, b = gate(redis_client, redis_namespace, "a"), gate(redis_client, redis_namespace, "b")
    assert a.claim("analytics:hourly:2026-01-01T09:00Z") is Claim.WON
    assert b.claim("analytics:hourly:2026-01-01T09:00Z") is Claim.PENDING
    assert a.claim("analytics:hourly:2026-01-01T09:00Z") is Claim.PENDING  # a claim is not re-entrant
    a.confirm("analytics:hourly:2026-01-01T09:00Z", "msg-1")
    assert b.claim("analytics:hourly:2026-01-01T09:00Z") is Claim.SENT
    key = keys.emitted(redis_namespace, "analytics:hourly:2026-01-01T09:00Z")
    assert redis_client.get(key) == b"sent:a:msg-1"
    assert 3500 < redis_client.ttl(key) <= 3600


def test_an_abandoned_claim_expires_and_is_taken_over(
    redis_client: redis.Redis, redis_namespace: str
) -> None:
    dead = gate(redis_client, redis_namespace, "dead", lease_s=0.3)
    alive = gate(redis_client, redis_namespace, "alive")
    assert dead.claim("k") is Claim.WON
    assert alive.claim("k") is Claim.PENDING
    assert wait_until(lambda: alive.claim("k") is Claim.WON, timeout=5)


def test_release_drops_only_its_own_claim(redis_client: redis.Redis, redis_namespace: str) -> None:
    a, b = gate(redis_client, redis_namespace, "a"), gate(redis_client, redis_namespace, "b")
    assert a.claim("k") is Claim.WON
    b.release("k")
    assert b.claim("k") is Claim.PENDING
    a.release("k")
    assert b.claim("k") is Claim.WON


def test_cursor_starts_once_and_only_moves_forward(redis_client: redis.Redis, redis_namespace: str) -> None:
    a, b = gate(redis_client, redis_namespace, "a"), gate(redis_client, redis_namespace, "b")
    assert a.cursor("analytics:hourly") is None
    assert a.bootstrap("analytics:hourly", T0) == Cursor(T0, None)
    assert b.bootstrap("analytics:hourly", T0 + timedelta(hours=1)) == Cursor(T0, None)
    later, earlier = T0 + timedelta(hours=2), T0 + timedelta(hours=1)
    a.advance("analytics:hourly", later, "2026-01-01T11:00Z")
    b.advance("analytics:hourly", earlier, "2026-01-01T10:00Z")
    assert b.cursor("analytics:hourly") == Cursor(later, "2026-01-01T11:00Z")


def test_replicas_catching_up_together_emit_each_window_once_oldest_first(
    redis_client: redis.Redis,
    redis_namespace: str,
    real_env: dict[str, str],
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(real_env)
    schedule = build_schedules(stack.settings)[0]  # analytics:hourly, "5 * * * *"
    now = datetime(2026, 1, 3, 10, 30, tzinfo=UTC)
    gate(redis_client, redis_namespace, "setup").bootstrap(schedule.name, now - timedelta(days=3))
    sender = ActorSender({actor.actor_name: actor for actor in stack.actors})
    emitted: dict[str, list[str]] = {}
    start = threading.Barrier(3)

    def replica(name: str) -> None:
        emitter = Emitter(
            gate(redis_client, redis_namespace, name), sender, lookback=timedelta(hours=48), start=now
        )
        mine: list[str] = []
        start.wait()
        for _ in range(500):  # until nothing is left in flight elsewhere
            outcome = emitter.run(schedule, now)
            mine += outcome.emitted
            if outcome.blocked_on is None:
                break
        emitted[name] = mine

    threads = [threading.Thread(target=replica, args=(name,)) for name in ("r1", "r2", "r3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    messages = queued(redis_client, redis_namespace, "analytics")
    expected = [
        f"analytics:hourly:{(now - timedelta(hours=h)).strftime('%Y-%m-%dT%H:00Z')}" for h in range(48, 0, -1)
    ]
    assert [m["options"]["unique_key"] for m in messages] == expected  # each once, oldest first
    assert sorted(k for keys_ in emitted.values() for k in keys_) == sorted(expected)
    first = messages[0]["kwargs"]
    assert first == {
        "start_date": "2026-01-01T10:00:00+00:00",
        "end_date": "2026-01-01T11:00:00+00:00",
        "aggregation_type": "hourly",
    }
    assert gate(redis_client, redis_namespace, "x").cursor(schedule.name) == Cursor(
        datetime(2026, 1, 3, 10, 5, tzinfo=UTC), "2026-01-03T09:00Z"
    )


def test_a_failed_send_releases_the_claim_and_keeps_the_window_owed(
    redis_client: redis.Redis, redis_namespace: str
) -> None:
    schedule = build_schedules(Settings.from_mapping({}))[0]

    class Broken:
        def send(self, *args: object) -> str:
            raise redis.ConnectionError("the broker's Redis went away")

    g = gate(redis_client, redis_namespace, "a")
    g.bootstrap(schedule.name, T0)
    emitter = Emitter(g, Broken(), lookback=timedelta(hours=48), start=T0)
    with pytest.raises(redis.ConnectionError):
        emitter.run(schedule, T0 + timedelta(hours=1))
    assert g.cursor(schedule.name) == Cursor(T0, None)
    assert gate(redis_client, redis_namespace, "b").claim("analytics:hourly:2026-01-01T10:00Z") is Claim.WON
