"""Wake on enqueue: idle real workers start messages at once, and delayed messages and retries on time.

Generous functional bounds, not a benchmark (bench/ measures latency): Dramatiq's
own consumer polls with backoff up to its 1 s worker timeout, so its idle wake
takes ~500 ms on median.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import pytest
import redis

from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_all_probes, probe_keys

pytestmark = pytest.mark.slow


def _starts(client: redis.Redis, ns: str, key: str) -> list[float]:
    return [json.loads(x)["at"] for x in client.lrange(probe_keys(ns, key)[1], 0, -1)]


def test_idle_workers_wake_on_enqueue_delay_and_retry(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    env = {**real_env, "JOBS_BACKOFF_MIN_MS": "300", "JOBS_BACKOFF_JITTER": "0"}
    group = worker_group(clean_environ(env), modules=("tests.support.worker_probe",), processes=2, threads=2)
    group.wait_ready()
    stack = make_stack(env)
    probes = declare_all_probes(stack.broker)
    ns = stack.broker.namespace

    # Idle wake: one message at a time, each sent only after the previous one
    # finished and the fleet is idle again.
    latencies = []
    for i in range(15):
        sent_at = time.time()
        job = probes["email"].send(key=f"idle{i}").message_id
        stack.api.result(job, timeout=10)
        latencies.append(_starts(redis_client, ns, f"idle{i}")[0] - sent_at)
    median, worst = statistics.median(latencies), max(latencies)
    print(f"idle wake: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms over {len(latencies)} probes")
    assert median < 0.1 and worst < 0.3

    # A delayed message starts when it comes due, not a polling interval later.
    sent_at = time.time()
    delayed = probes["analytics"].send_with_options(kwargs={"key": "delayed"}, delay=700).message_id
    stack.api.result(delayed, timeout=10)
    late = _starts(redis_client, ns, "delayed")[0] - (sent_at + 0.7)
    print(f"delayed message started {late * 1000:.1f} ms after its due time")
    assert -0.01 < late < 0.25

    # A retry (300 ms backoff, no jitter) starts when it comes due.
    retried = probes["cleanup"].send(key="retry", fail_times=1).message_id
    stack.api.result(retried, timeout=10)
    first, second = _starts(redis_client, ns, "retry")
    gap = second - first
    print(f"retry started {gap * 1000:.1f} ms after the first attempt (backoff 300 ms)")
    assert 0.3 <= gap < 0.3 + 0.2
