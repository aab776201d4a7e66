"""Priority lanes: high-priority e-mails do not wait behind a backlog of normal ones."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import pytest
import redis

from middleware.errors import JobError
from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_all_probes, probe_keys, spans_key


def test_priority_is_validated_and_routed(embedded_stack: Stack) -> None:
    send_email = embedded_stack.actors.send_email
    with pytest.raises(JobError, match="priority must be"):
        send_email.send(to="a@example.com", subject="s", text="t", priority="urgent")
    message = send_email.message_with_options(
        kwargs={"to": "a@example.com", "subject": "s", "text": "t", "priority": "high"}
    )
    assert message.queue_name == "email.HI" and "priority" not in message.kwargs
    assert send_email.message(to="a@example.com", subject="s", text="t").queue_name == "email"
    with pytest.raises(JobError, match="no high-priority lane"):
        embedded_stack.actors.cleanup.send(cleanup_type="all", older_than_days=30, priority="high")


def _waits(client: redis.Redis, ns: str, keys_sent: dict[str, float]) -> list[float]:
    return [json.loads(client.lindex(probe_keys(ns, k)[1], 0))["at"] - sent for k, sent in keys_sent.items()]


@pytest.mark.slow
def test_high_priority_emails_start_before_a_backlog_drains(
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
    probe = declare_all_probes(stack.broker)["email"]
    ns = stack.broker.namespace

    def send_high(prefix: str) -> dict[str, float]:
        sent, jobs = {}, []
        for i in range(10):
            key = f"{prefix}{i}"
            sent[key] = time.time()
            jobs.append(probe.send(key=key, priority="high").message_id)
            time.sleep(0.02)  # paced sends, as users ask for codes, not a burst
        for job in jobs:
            stack.api.result(job, timeout=60)
        return sent

    idle = _waits(redis_client, ns, send_high("idle"))

    backlog = 5000
    for i in range(backlog):
        probe.send(key=f"n{i}", sleep_ms=2)
    busy_sent = send_high("busy")
    busy = _waits(redis_client, ns, busy_sent)
    drained_at = max(json.loads(x)["start"] for x in redis_client.lrange(spans_key(ns), 0, -1))
    normal_left = redis_client.llen(f"{ns}:email")
    print(
        f"high-priority wait: median {statistics.median(idle) * 1000:.1f} ms idle, "
        f"{statistics.median(busy) * 1000:.1f} ms behind a {backlog}-message backlog "
        f"(max {max(busy) * 1000:.1f} ms); {normal_left} normal messages were still waiting"
    )
    assert statistics.median(busy) < 0.25
    last_high_start = max(sent + wait for sent, wait in zip(busy_sent.values(), busy, strict=True))
    assert normal_left > 0 or last_high_start < drained_at  # they started before the backlog drained
    assert normal_left > 1000  # the backlog was still there, in Redis, while they ran
