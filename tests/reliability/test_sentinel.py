"""Redis Sentinel: the master is SIGKILLed under load; workers, the scheduler and the app follow the failover.

One master, one replica and three Sentinels (quorum 2) on loopback. Replication
is asynchronous: writes the master acknowledged in its last moments may never
reach the replica. Jobs lost that way are counted and reported, and the test
asserts the bound that matters: nothing acknowledged after the failover is lost.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import redis
from pymongo.database import Database

from jobs.settings import Settings
from jobs.wiring import redis_client
from tests.conftest import FAST_POLICY, Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import LEDGER_ACTORS, Ledger, declare_ledger_actors
from tests.reliability.producer import Producer
from tests.reliability.servers import SentinelCluster, sentinel_binary
from tests.reliability.supervise import EntrypointGroup, Supervisor
from tests.reliability.test_redis_faults import EVERY_SECOND_HOURLY, assert_contiguous, emitted_windows

T = TypeVar("T")


def transient(read: Callable[[], T], timeout: float = 15.0) -> T:
    """``read()``, retried while the Sentinels have not all settled on the new master.

    Right after a failover a Sentinel may still describe the old master as down: the
    client then raises MasterNotFoundError (a ConnectionError), as the app's would.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(180)
def test_workers_scheduler_and_app_follow_a_sentinel_failover(
    sentinel_cluster: SentinelCluster,
    redis_namespace: str,
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    supervisors: Callable[..., Supervisor],
    groups: Callable[..., EntrypointGroup],
    mongo_url: str,
    mongo_db: Database[dict[str, object]],
) -> None:
    cluster = sentinel_cluster
    ns = redis_namespace
    env = {
        "ENABLE_BACKGROUND_JOBS": "true",
        "REDIS_SENTINELS": cluster.addresses,
        "REDIS_SENTINEL_MASTER": cluster.master_name,
        "REDIS_NAMESPACE": ns,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db.name,
        **FAST_POLICY,
    }
    # The same client factory every process uses.
    client = redis_client(Settings.from_mapping(env))
    old_port = cluster.master.port
    assert client.connection_pool.get_master_address() == ("127.0.0.1", old_port)  # type: ignore[attr-defined]
    workers = supervisors("workers", {**env, **ledger_env, "TAATOM_WORKER_SHUTDOWN_MS": "10000"})
    scheduler = groups({**env, **EVERY_SECOND_HOURLY}, role="scheduler", args=())
    workers.wait_ready()
    scheduler.wait_ready()
    stack = make_stack(env)
    actors = declare_ledger_actors(stack.broker, ledger)
    producers = [
        Producer(actors[queue], queue, per_second=25, sleep_ms=20) for queue in ("email", "image-processing")
    ]
    for producer in producers:
        producer.start()
    try:
        assert wait_for(lambda: ledger.finished() >= 60, timeout=30)
        assert wait_for(lambda: len(emitted_windows(client, ns, "analytics:hourly")) >= 2, timeout=20)

        killed_at = time.monotonic()
        sent_before_kill = {key for p in producers for key in p.sent()}
        cluster.master.stop(signal.SIGKILL)
        assert wait_for(lambda: cluster.master_port() not in (None, old_port), timeout=30), cluster.logs()
        failover_s = time.monotonic() - killed_at
        new_port = cluster.master_port()
        sent_at_failover = {key for p in producers for key in p.sent()}
        windows = transient(lambda: emitted_windows(client, ns, "analytics:hourly"))
        for producer in producers:
            assert producer.wait_sent(len(producer.sent()) + 50, timeout=30), (
                producer.failures,
                producer.unexpected,
            )
    finally:
        for producer in producers:
            producer.stop()
    acknowledged = {key for p in producers for key in p.sent()}
    after_failover = acknowledged - sent_at_failover
    in_the_gap = sent_at_failover - sent_before_kill
    queues = [f"{ns}:{q}{suffix}" for q in LEDGER_ACTORS for suffix in ("", ".DQ")]

    def settled() -> bool:
        return after_failover <= set(ledger.counts("end")) and not transient(
            lambda: any(client.llen(q) for q in queues)
        )

    assert wait_for(settled, timeout=45), workers.output[-3000:]
    ends = ledger.counts("end")
    lost = sorted(acknowledged - set(ends))
    assert wait_for(lambda: "Redis answers again" in scheduler.output, timeout=30), scheduler.output[-3000:]
    assert wait_for(
        lambda: len(transient(lambda: emitted_windows(client, ns, "analytics:hourly"))) > len(windows),
        timeout=20,
    )
    labels = list(transient(lambda: emitted_windows(client, ns, "analytics:hourly")))
    client.close()
    try:
        assert_contiguous(labels)
        gaps = "none"
    except AssertionError as exc:
        gaps = str(exc)
    figures = report(
        "sentinel failover",
        f"{sentinel_binary()[0].rsplit('/', 1)[-1]}: master :{old_port} SIGKILLed under load; "
        f"Sentinels promoted :{new_port} after {failover_s:.1f}s",
        "app: "
        + "; ".join(
            f"{p.prefix}: {len(p.sent())} acknowledged, refused {dict(p.failures)}" for p in producers
        )
        + f"; longest refusal {max(p.outage_s for p in producers):.1f}s",
        f"jobs: {len(acknowledged)} acknowledged, LOST {len(lost)} {lost[:10]} "
        "(acknowledged by the old master and never replicated), "
        f"{sum(n - 1 for n in ends.values() if n > 1)} ran twice",
        f"acknowledged between the kill and the promotion: {len(in_the_gap)}; "
        f"after it: {len(after_failover)}",
        f"workers restarted by the supervisor: {workers.restarts}; "
        f"scheduler alive: {scheduler.proc.poll() is None}; windows missing on the new master: {gaps}",
    )
    assert not any(p.unexpected for p in producers), [p.unexpected for p in producers]
    assert workers.restarts == 0 and workers.current.proc.poll() is None, figures
    assert scheduler.proc.poll() is None, scheduler.output[-3000:]
    # Only what the dead master acknowledged may be missing; nothing sent to the new one is.
    assert set(lost) <= sent_before_kill, figures
