"""Fleet-wide concurrency caps with `dramatiq jobs --processes 2 --threads 5` on real Redis."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
import redis

from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_all_probes, probe_keys, spans_key
from tests.support.redis_inspect import wait_until

pytestmark = pytest.mark.slow

CAPS = {"email": 5, "image-processing": 3, "analytics": 2, "cleanup": 1}


def _spans(client: redis.Redis, namespace: str) -> list[dict[str, float | str | int]]:
    return [json.loads(x) for x in client.lrange(spans_key(namespace), 0, -1)]


def max_overlap(spans: list[dict[str, float | str | int]]) -> int:
    """Most executions running at one instant (an end at t comes before a start at t)."""
    events = sorted([(float(s["start"]), 1) for s in spans] + [(float(s["end"]), -1) for s in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_caps_hold_fleet_wide_and_are_reached(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    group = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=2, threads=5
    )
    group.wait_ready()
    stack = make_stack(real_env)
    probes = declare_all_probes(stack.broker)
    # The long, capped backlog goes in first; the short queues must not starve behind it.
    # cleanup alone needs 20 x 0.4 s = 8 s; everything else drains in about half that.
    plan = {"cleanup": (20, 400), "analytics": (20, 250), "image-processing": (45, 150), "email": (115, 150)}
    sent: dict[str, list[str]] = defaultdict(list)
    for queue, (count, ms) in plan.items():
        for i in range(count):
            sent[queue].append(probes[queue].send(key=f"{queue}-{i}", sleep_ms=ms).message_id)
    assert sum(len(v) for v in sent.values()) == 200

    ns = stack.broker.namespace
    assert wait_until(lambda: redis_client.llen(spans_key(ns)) >= 200, timeout=90)
    spans = _spans(redis_client, ns)
    by_queue: dict[str, list[dict[str, float | str | int]]] = defaultdict(list)
    for span in spans:
        by_queue[str(span["queue"])].append(span)

    overlaps = {queue: max_overlap(by_queue[queue]) for queue in CAPS}
    print(f"max observed overlap per queue: {overlaps} (caps {CAPS})")
    assert overlaps == CAPS  # reached, never exceeded
    # both worker processes took part
    assert len({s["pid"] for s in spans}) == 2
    # every job ran exactly once, on its first attempt
    assert len(spans) == 200 and all(s["attempt"] == 1 for s in spans)
    assert len({s["key"] for s in spans}) == 200
    # the short queue was not starved: e-mail finished well before the cleanup backlog
    last_email = max(float(s["end"]) for s in by_queue["email"])
    last_cleanup = max(float(s["end"]) for s in by_queue["cleanup"])
    print(f"e-mail drained {last_cleanup - last_email:.2f}s before cleanup")
    assert last_email < last_cleanup - 2.0
    for queue, jobs in sent.items():
        for job in jobs[:3]:
            status = stack.api.status(job)
            assert status is not None and (status["state"], status["attempts"]) == ("succeeded", 1), queue


def test_sigkilled_worker_gives_its_slot_back_and_its_job_runs_again(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    env = clean_environ({**real_env, "WORKER_HEARTBEAT_TIMEOUT_MS": "3000"})
    first = worker_group(env, modules=("tests.support.worker_probe",), processes=1, threads=2)
    second = worker_group(env, modules=("tests.support.worker_probe",), processes=1, threads=2)
    first.wait_ready()
    second.wait_ready()
    stack = make_stack(real_env)
    probe = declare_all_probes(stack.broker)["cleanup"]
    job = probe.send(key="victim", sleep_ms=120_000, sleep_first_run_only=True).message_id
    ns = stack.broker.namespace
    runs_key, log_key = probe_keys(ns, "victim")
    assert wait_until(lambda: redis_client.get(runs_key) is not None, timeout=20)
    victim_pid = json.loads(redis_client.lindex(log_key, 0))["pid"]
    assert stack.api.queues.running("cleanup") == 1  # it holds the only cleanup slot

    killed_at = time.time()
    os.kill(victim_pid, signal.SIGKILL)
    # Its slot comes back and the job runs again in the surviving group.
    assert wait_until(lambda: redis_client.llen(log_key) == 2, timeout=30)
    rerun = json.loads(redis_client.lindex(log_key, 1))
    recovery_s = rerun["at"] - killed_at
    print(f"job of the SIGKILLed worker restarted after {recovery_s:.1f}s")
    assert rerun["pid"] != victim_pid
    assert recovery_s < 15
    assert stack.api.result(job, timeout=20)["runs"] == 2
    status = stack.api.status(job)
    assert status is not None and status["attempts"] == 1  # recovery spends no attempt
    assert stack.api.queues.running("cleanup") == 0
