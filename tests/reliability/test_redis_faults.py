"""Redis faults under load: a crash and restart with AOF, and a hung Redis (timeouts).

The broker's Redis is a redis-server of the test's own (AOF on, appendfsync
everysec); the ledger lives on the shared test Redis, so it is not part of
the fault. Workers, the scheduler and the app keep running throughout.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise

import pytest
import redis
from pymongo.database import Database

from tests.conftest import FAST_POLICY, Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import LEDGER_ACTORS, Ledger, declare_ledger_actors, text
from tests.reliability.producer import Producer
from tests.reliability.servers import RedisServer
from tests.reliability.supervise import EntrypointGroup, Supervisor

EVERY_SECOND_HOURLY = {"SCHEDULE_ANALYTICS_HOURLY_CRON": "* * * * * *", "SCHEDULER_HEARTBEAT_S": "1"}
WORKER_DOWN_SIGNS = ("Consumer encountered a connection error", "Fleet keeper cannot reach Redis")


def dead_letter_count(client: redis.Redis, ns: str) -> int:
    return sum(int(client.zcard(f"{ns}:{q}.XQ")) for q in LEDGER_ACTORS)


def emitted_windows(client: redis.Redis, ns: str, schedule: str) -> dict[str, str]:
    """Window label -> the message id the scheduler sent for it."""
    prefix = f"{ns}:scheduler:emitted:{schedule}:"
    found = {}
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        value = text(client.get(key) or b"")
        if value.startswith("sent:"):
            found[text(key).removeprefix(prefix)] = value.rsplit(":", 1)[1]
    return dict(sorted(found.items()))


def assert_contiguous(labels: list[str]) -> None:
    moments = [datetime.strptime(label, "%Y-%m-%dT%H:%M:%SZ") for label in labels]
    gaps = [(b - a).total_seconds() for a, b in pairwise(moments)]
    assert gaps == [1.0] * len(gaps), f"windows missing across the outage: {labels}"


@pytest.mark.timeout(180)
def test_redis_crash_and_restart_with_aof_under_load_loses_nothing(
    redis_server: Callable[..., RedisServer],
    redis_namespace: str,
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    supervisors: Callable[..., Supervisor],
    groups: Callable[..., EntrypointGroup],
    mongo_url: str,
    mongo_db: Database[dict[str, object]],
) -> None:
    server = redis_server("aof")
    ns = redis_namespace
    env = {
        "ENABLE_BACKGROUND_JOBS": "true",
        "REDIS_URL": server.url(),
        "REDIS_NAMESPACE": ns,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db.name,
        **FAST_POLICY,
    }
    workers = supervisors("workers", {**env, **ledger_env, "TAATOM_WORKER_SHUTDOWN_MS": "10000"})
    scheduler = groups({**env, **EVERY_SECOND_HOURLY}, role="scheduler", args=())
    workers.wait_ready()
    scheduler.wait_ready()
    stack = make_stack(env)
    actors = declare_ledger_actors(stack.broker, ledger)
    # A backlog that is still queued when Redis dies: one slot, 50 ms each.
    backlog = [f"backlog-{i}" for i in range(200)]
    for key in backlog:
        actors["cleanup"].send(key=key, sleep_ms=50)
    producer = Producer(actors["email"], "live", per_second=40, sleep_ms=20)
    producer.start()
    probe = server.client()
    try:
        assert wait_for(lambda: len(emitted_windows(probe, ns, "analytics:hourly")) >= 2, timeout=20)
        assert wait_for(lambda: ledger.finished() >= 60, timeout=30)
        queued_at_crash = int(probe.llen(f"{ns}:cleanup")) + int(probe.llen(f"{ns}:email"))
    finally:
        probe.close()

    crashed_at = time.monotonic()
    server.stop(signal.SIGKILL)
    # Down until the app, the workers and the scheduler have each run into it, and for at
    # least ~2 s: six refused sends, with the producer's backoff of 0.05 s doubling.
    assert producer.wait_failures(6, timeout=15)
    assert wait_for(lambda: any(s in workers.output for s in WORKER_DOWN_SIGNS), timeout=15), workers.output[
        -3000:
    ]
    assert wait_for(lambda: "Redis unavailable" in scheduler.output, timeout=15), scheduler.output[-3000:]
    server.start()
    down_s = time.monotonic() - crashed_at
    sent_before = len(producer.sent())
    assert wait_for(lambda: len(producer.sent()) >= sent_before + 80, timeout=30), producer.failures
    producer.stop()
    live = producer.sent()
    expected = set(backlog) | set(live)
    assert wait_for(lambda: expected <= set(ledger.counts("end")), timeout=60), (
        sorted(expected - set(ledger.counts("end")))[:20],
        workers.output[-3000:],
    )
    client = server.client()
    try:
        windows = emitted_windows(client, ns, "analytics:hourly")

        def windows_done() -> bool:
            states = [(stack.api.status(m) or {}).get("state") for m in windows.values()]
            return all(s == "succeeded" for s in states)

        windows_ran = wait_for(windows_done, timeout=30)
        dead = dead_letter_count(client, ns)
    finally:
        client.close()
    ends = ledger.counts("end")
    duplicates = sum(n - 1 for n in ends.values() if n > 1)
    figures = report(
        "redis restart (AOF)",
        f"redis-server SIGKILLed under load and restarted on the same AOF after {down_s:.1f}s; "
        f"{queued_at_crash} messages were queued at the crash",
        f"app: {len(live)} sends acknowledged, {producer.failed()} refused while down "
        f"{dict(producer.failures)}, longest refusal {producer.outage_s:.1f}s",
        f"jobs: {len(expected)} acknowledged, {len(expected - set(ends))} lost, {duplicates} ran twice; "
        f"dead letters {dead}",
        f"workers restarted by the supervisor: {workers.restarts}; "
        f"scheduler alive: {scheduler.proc.poll() is None}; "
        f"windows emitted: {len(windows)}, all ran: {windows_ran}",
    )
    assert not producer.unexpected, producer.unexpected
    assert workers.restarts == 0 and workers.current.proc.poll() is None, figures
    assert "Restarting consumer" in workers.output
    assert scheduler.proc.poll() is None, scheduler.output[-3000:]
    assert "Redis answers again" in scheduler.output, scheduler.output[-3000:]
    assert_contiguous(list(windows))
    assert windows_ran, figures
    assert dead == 0, figures


@pytest.mark.timeout(150)
def test_hung_redis_timeouts_are_transient(
    redis_server: Callable[..., RedisServer],
    redis_namespace: str,
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    supervisors: Callable[..., Supervisor],
) -> None:
    """Redis stops answering (SIGSTOP) for longer than the socket timeout, then comes back.

    Reads time out (``redis.TimeoutError``) in the app, the consumers and the keeper;
    all of them carry on once Redis answers, and every acknowledged job runs.
    """
    server = redis_server("hung")
    env = {
        "ENABLE_BACKGROUND_JOBS": "true",
        "REDIS_URL": server.url(),
        "REDIS_NAMESPACE": redis_namespace,
        # Above the consumers' 2 s idle wait, so only the hang times reads out.
        "REDIS_SOCKET_TIMEOUT_S": "3",
        **FAST_POLICY,
    }
    workers = supervisors("workers", {**env, **ledger_env, "TAATOM_WORKER_SHUTDOWN_MS": "10000"})
    workers.wait_ready()
    stack = make_stack(env)
    actors = declare_ledger_actors(stack.broker, ledger)
    producers = [
        Producer(actors[queue], queue, per_second=20, sleep_ms=30) for queue in ("email", "image-processing")
    ]
    for producer in producers:
        producer.start()
    assert wait_for(lambda: ledger.finished() >= 40, timeout=30)

    frozen_at = time.monotonic()
    server.freeze()
    try:
        # Until the app, the consumers and the keeper have each timed out.
        assert wait_for(lambda: all(p.failures["TimeoutError"] >= 1 for p in producers), timeout=20)
        assert wait_for(lambda: all(s in workers.output for s in WORKER_DOWN_SIGNS), timeout=20)
    finally:
        server.thaw()
    hung_s = time.monotonic() - frozen_at
    for producer in producers:
        before = len(producer.sent())
        assert producer.wait_sent(before + 40, timeout=30), producer.failures
        producer.stop()
    expected = {key for p in producers for key in p.sent()}
    completed = wait_for(lambda: expected <= set(ledger.counts("end")), timeout=45)
    missing = sorted(expected - set(ledger.counts("end")))
    client = server.client()
    try:
        in_flight = {
            text(key): sorted(text(m) for m in client.smembers(key))
            for key in client.scan_iter(match=f"{redis_namespace}:__acks__.*")
            if client.scard(key)
        }
        dead = dead_letter_count(client, redis_namespace)
    finally:
        client.close()
    ends = ledger.counts("end")
    figures = report(
        "hung redis",
        f"redis-server stopped answering (SIGSTOP) for {hung_s:.1f}s (REDIS_SOCKET_TIMEOUT_S=3)",
        "app: "
        + "; ".join(
            f"{p.prefix}: {len(p.sent())} acknowledged, refused {dict(p.failures)}" for p in producers
        ),
        f"jobs: {len(expected)} acknowledged, {len(missing)} not run {missing[:10]}, "
        f"{sum(n - 1 for n in ends.values() if n > 1)} ran twice; dead letters {dead}",
        f"held by live workers and never run: {in_flight or 'none'}",
        f"workers restarted by the supervisor: {workers.restarts}",
    )
    assert not any(p.unexpected for p in producers), [p.unexpected for p in producers]
    assert workers.restarts == 0 and workers.current.proc.poll() is None, figures
    assert completed, figures
    assert dead == 0, figures


@pytest.mark.timeout(90)
def test_delayed_messages_a_worker_holds_run_after_a_redis_restart(
    redis_server: Callable[..., RedisServer],
    redis_namespace: str,
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
) -> None:
    server = redis_server("delayed")
    ns = redis_namespace
    env = {"ENABLE_BACKGROUND_JOBS": "true", "REDIS_URL": server.url(), "REDIS_NAMESPACE": ns, **FAST_POLICY}
    group = groups({**env, **ledger_env}, processes=1, threads=2)
    group.wait_ready()
    stack = make_stack(env)
    analytics = declare_ledger_actors(stack.broker, ledger)["analytics"]
    keys = [f"delayed-{i}" for i in range(5)]
    for key in keys:
        analytics.send_with_options(kwargs={"key": key}, delay=3000)
    probe = server.client()
    try:
        # The worker has fetched them into memory, where they wait for their due time.
        assert wait_for(lambda: probe.llen(f"{ns}:analytics.DQ") == 0, timeout=10)
    finally:
        probe.close()
    server.stop(signal.SIGTERM)  # a clean restart: everything is in the AOF
    group.wait_for_line("Consumer encountered a connection error")
    server.start()
    # Due 3 s after sending; the consumers reconnect within 3 s of the restart.
    ran = wait_for(lambda: set(keys) <= set(ledger.counts("end")), timeout=12)
    client = server.client()
    try:
        held = {
            text(key): int(client.scard(key))
            for key in client.scan_iter(match=f"{ns}:__acks__.*")
            if client.scard(key)
        }
    finally:
        client.close()
    assert ran, (
        f"ran: {sorted(ledger.counts('end'))}; still in the ack sets of the live worker: {held}; "
        f"worker alive: {group.proc.poll() is None}"
    )
