"""Job state, pause/resume, unique keys and time limits with real `dramatiq jobs` workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from middleware.errors import JobError
from middleware.job_state import JobSkipped
from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_all_probes, probe_keys
from tests.support.redis_inspect import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(
    real_env: dict[str, str], worker_group: type[WorkerGroup]
) -> Callable[[dict[str, str]], WorkerGroup]:
    def start(extra: dict[str, str]) -> WorkerGroup:
        group = worker_group(
            clean_environ({**real_env, **extra}),
            modules=("tests.support.worker_probe",),
            processes=2,
            threads=2,
        )
        group.wait_ready()
        return group

    return start


def _states(stack: Stack, job: str) -> list[str]:
    status = stack.api.status(job)
    assert status is not None
    return [h["state"] for h in status["history"]]


def test_state_transitions_and_results_with_real_workers(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    workers: Callable[..., WorkerGroup],
) -> None:
    workers({})
    stack = make_stack(real_env)
    probe = declare_all_probes(stack.broker)["email"]
    ok = probe.send(key="ok").message_id
    flaky = probe.send(key="flaky", fail_times=1).message_id
    dead = probe.send(key="dead", fail_times=9, error_code="VAL_2001").message_id

    assert stack.api.result(ok, timeout=20) == {"success": True, "runs": 1, "payload": ""}
    assert stack.api.result(flaky, timeout=20)["runs"] == 2
    with pytest.raises(JobError) as info:
        stack.api.result(dead, timeout=20)
    assert info.value.code == "VAL_2001"

    assert _states(stack, ok) == ["queued", "running", "succeeded"]
    assert _states(stack, flaky) == ["queued", "running", "retrying", "queued", "running", "succeeded"]
    assert wait_until(lambda: _states(stack, dead) == ["queued", "running", "failed", "dead"])
    status = stack.api.status(dead)
    assert status is not None and (status["error_code"], status["attempts"]) == ("VAL_2001", 1)


def test_paused_queue_starts_nothing_loses_nothing_spends_no_attempt(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    workers: Callable[..., WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    stack = make_stack(real_env)
    probes = declare_all_probes(stack.broker)
    stack.api.pause("email")
    assert stack.api.paused() == {"email"}
    workers({})
    held = [probes["email"].send(key=f"held{i}").message_id for i in range(5)]
    # Workers are alive and consuming: other queues' jobs run to completion, one after
    # another, while the paused queue's jobs wait untouched.
    for key in ("other", "other2"):
        assert stack.api.result(probes["analytics"].send(key=key).message_id, timeout=20)["success"] is True
    for job in held:
        status = stack.api.status(job)
        assert status is not None and (status["state"], status["attempts"]) == ("queued", 0)
    assert redis_client.get(probe_keys(stack.broker.namespace, "held0")[0]) is None

    stack.api.resume("email")
    for job in held:
        assert stack.api.result(job, timeout=20)["runs"] == 1
        assert stack.api.status(job)["attempts"] == 1  # type: ignore[index]


def test_unique_key_runs_once_and_duplicates_are_skipped(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    workers: Callable[..., WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    workers({})
    stack = make_stack(real_env)
    probe = declare_all_probes(stack.broker)["analytics"]
    key = "aggregate_analytics:hourly:2026-01-01T10"
    messages = [
        probe.send_with_options(kwargs={"key": "uniq", "sleep_ms": 300}, unique_key=key) for _ in range(3)
    ]
    outcomes = []
    for message in messages:
        try:
            outcomes.append(stack.api.result(message.message_id, timeout=20)["runs"])
        except JobSkipped:
            outcomes.append("skipped")
    assert sorted(outcomes, key=str) == [1, "skipped", "skipped"]
    assert int(redis_client.get(probe_keys(stack.broker.namespace, "uniq")[0])) == 1
    skipped = [m.message_id for m, o in zip(messages, outcomes, strict=True) if o == "skipped"]
    assert all(stack.api.status(j)["state"] == "skipped" for j in skipped)  # type: ignore[index]

    # A redelivery of the message that already ran (as after a crash before its ack) is skipped too.
    ran = next(m for m, o in zip(messages, outcomes, strict=True) if o == 1)
    stack.broker.enqueue(ran)
    assert wait_until(lambda: stack.api.status(ran.message_id)["state"] == "skipped")  # type: ignore[index]
    assert int(redis_client.get(probe_keys(stack.broker.namespace, "uniq")[0])) == 1


def test_unique_key_is_released_by_a_final_failure(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    workers: Callable[..., WorkerGroup],
) -> None:
    workers({})
    stack = make_stack(real_env)
    probe = declare_all_probes(stack.broker)["email"]
    first = probe.send_with_options(
        kwargs={"key": "u2", "fail_times": 1, "error_code": "VAL_2001"}, unique_key="k2"
    )
    with pytest.raises(JobError):
        stack.api.result(first.message_id, timeout=20)
    second = probe.send_with_options(kwargs={"key": "u2"}, unique_key="k2")
    assert stack.api.result(second.message_id, timeout=20)["runs"] == 2


def test_time_limit_fails_transiently_and_retries(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    workers: Callable[..., WorkerGroup],
) -> None:
    group = workers({"CLEANUP_TIME_LIMIT_S": "0.5"})
    stack = make_stack(real_env)
    probe = declare_all_probes(stack.broker)["cleanup"]
    job = probe.send(key="long", sleep_ms=20_000, sleep_first_run_only=True).message_id
    assert stack.api.result(job, timeout=30)["runs"] == 2
    assert f"Retrying probe job {job} (attempt 1/3)" in group.output
    assert "SRV_6005 time limit exceeded" in group.output


def test_promote_runs_delayed_and_retry_waiting_jobs_now(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    workers: Callable[..., WorkerGroup],
) -> None:
    env = {"JOBS_BACKOFF_MIN_MS": "60000", "JOBS_BACKOFF_MAX_MS": "60000"}
    workers(env)
    stack = make_stack({**real_env, **env})
    probe = declare_all_probes(stack.broker)["email"]
    delayed = probe.send_with_options(kwargs={"key": "later"}, delay=60_000).message_id
    waiting = probe.send(key="flaky", fail_times=1).message_id
    assert wait_until(lambda: stack.api.status(waiting)["state"] == "retrying")  # type: ignore[index]
    assert stack.api.status(delayed)["state"] == "delayed"  # type: ignore[index]

    started = time.monotonic()
    assert stack.api.promote(delayed) and stack.api.promote(waiting)
    assert stack.api.result(delayed, timeout=10)["runs"] == 1
    assert stack.api.result(waiting, timeout=10)["runs"] == 2
    assert time.monotonic() - started < 5  # not the 60 s they were waiting for
    assert stack.api.status(waiting)["attempts"] == 2  # type: ignore[index]
    # nothing else to promote
    assert stack.api.promote(delayed) is False
