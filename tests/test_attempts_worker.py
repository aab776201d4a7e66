"""Attempts, backoff and dead letters with a real `dramatiq jobs` worker on real Redis."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable

import pytest
import redis

from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_probe, probe_keys
from tests.support.redis_inspect import dead_letters, delayed_count, wait_until

pytestmark = pytest.mark.slow

BACKOFF = {"JOBS_BACKOFF_MIN_MS": "200", "JOBS_BACKOFF_MAX_MS": "5000", "JOBS_BACKOFF_JITTER": "0.25"}


def _start(worker_group: type[WorkerGroup], env: dict[str, str]) -> WorkerGroup:
    group = worker_group(clean_environ(env), modules=("tests.support.worker_probe",), processes=1, threads=2)
    group.wait_ready()
    return group


def _runs(client: redis.Redis, stack: Stack, key: str) -> list[dict[str, float]]:
    return [json.loads(x) for x in client.lrange(probe_keys(stack.broker.namespace, key)[1], 0, -1)]


def test_transient_failures_are_retried_with_backoff_then_succeed(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    env = {**real_env, **BACKOFF, "LOG_FORMAT": "text", "LOG_LEVEL": "DEBUG"}
    group = _start(worker_group, env)
    stack = make_stack(env)
    message = declare_probe(stack.broker).send(key="flaky", fail_times=2, error_code="SRV_6003")
    job = message.message_id
    group.wait_for(f"Probe job {job} succeeded in")

    retries = re.findall(
        rf"\[WARN\] jobs\.email: Retrying probe job {job} \(attempt (\d)/3\) in (\d+\.\d)s: "
        r"SRV_6003 probe failing on purpose",
        group.output,
    )
    assert [a for a, _ in retries] == ["1", "2"]
    # logged delays within the jittered bounds: 200-250 ms, then 400-500 ms (printed to 0.1 s)
    delays = [float(d) for _, d in retries]
    assert 0.2 <= delays[0] <= 0.25 + 0.05
    assert 0.4 - 0.05 <= delays[1] <= 0.5 + 0.05
    # ...and the attempts really were that far apart (never sooner; a worker poll later at most)
    runs = _runs(redis_client, stack, "flaky")
    assert len(runs) == 3
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(runs)]
    assert 0.2 <= gaps[0] <= 0.25 + 1.5
    assert 0.4 <= gaps[1] <= 0.5 + 1.5
    assert f"Starting probe job {job} (attempt 3/3)" in group.output
    assert dead_letters(redis_client, stack.broker.namespace, "email") == []


def test_exhausted_attempts_land_in_dead_letters_with_code(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    group = _start(worker_group, real_env)
    stack = make_stack(real_env)
    job = declare_probe(stack.broker).send(key="doomed", fail_times=99, error_code="SRV_6003").message_id
    ns = stack.broker.namespace
    assert wait_until(lambda: len(dead_letters(redis_client, ns, "email")) == 1)
    [letter] = dead_letters(redis_client, ns, "email")
    assert letter["message_id"] == job
    assert letter["options"]["error_code"] == "SRV_6003"
    assert letter["options"]["attempts"] == 3
    assert letter["options"]["error"] == "probe failing on purpose"
    assert "traceback" not in letter["options"]
    assert len(_runs(redis_client, stack, "doomed")) == 3
    group.wait_for(
        f"[ERROR] jobs.email: Probe job {job} failed after 3 attempts: SRV_6003 probe failing on purpose"
    )


@pytest.mark.parametrize("code", ["VAL_2001", "FILE_4004"])
def test_permanent_error_is_attempted_exactly_once(
    code: str,
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    env = {**real_env, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    group = _start(worker_group, env)
    stack = make_stack(env)
    job = declare_probe(stack.broker).send(key="bad", fail_times=99, error_code=code).message_id
    ns = stack.broker.namespace
    assert wait_until(lambda: len(dead_letters(redis_client, ns, "email")) == 1)
    assert dead_letters(redis_client, ns, "email")[0]["options"]["error_code"] == code
    assert len(_runs(redis_client, stack, "bad")) == 1
    assert delayed_count(redis_client, ns, "email") == 0  # no retry was scheduled
    group.wait_for("failed permanently")
    records = [
        r
        for r in (json.loads(line) for line in group.output.splitlines() if line.startswith("{"))
        if r["logger"].startswith("jobs.")
    ]
    [failure] = [r for r in records if "failed permanently" in r["message"]]
    assert failure["message"] == f"Probe job {job} failed permanently: {code} probe failing on purpose"
    assert failure["level"] == "ERROR"
    assert {k: failure[k] for k in ("job_id", "actor", "queue", "attempt", "max_attempts", "error_code")} == {
        "job_id": job,
        "actor": "probe",
        "queue": "email",
        "attempt": 1,
        "max_attempts": 3,
        "error_code": code,
    }
    [start] = [r for r in records if r["message"].startswith("Starting probe job")]
    assert start["job_id"] == job and start["attempt"] == 1


def test_unknown_exception_is_srv_6001_and_retried(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    group = _start(worker_group, real_env)
    stack = make_stack(real_env)
    job = (
        declare_probe(stack.broker)
        .send(key="raw", fail_times=1, error_code="RAW", error_message="boom")
        .message_id
    )
    group.wait_for(f"Probe job {job} succeeded in")
    assert "SRV_6001 unexpected error: RuntimeError: boom" in group.output
    # Dramatiq's own failure line (arguments and traceback) is replaced by ours
    assert "Failed to process message" not in group.output
