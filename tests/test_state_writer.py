"""The state writer holds a job's ``running`` transition back briefly, on real Redis.

A short job's ``running`` is written in one call with its outcome; a job
still running when the delay ends shows ``running``; ``flush()`` writes what
is held. History and timestamps are the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq.message import Message

from middleware.fleet import FleetBroker
from middleware.job_state import JobState, JobStateReader, StateWriter
from tests.support.redis_inspect import wait_until


@pytest.fixture
def broker(redis_client: redis.Redis, redis_namespace: str) -> Iterator[FleetBroker]:
    b = FleetBroker(
        client=redis_client, namespace=redis_namespace, middleware=[], caps={}, heartbeat_timeout=30_000
    )
    yield b
    b.close()


def _message() -> Message[Any]:
    return Message(queue_name="email", actor_name="probe", args=(), kwargs={}, options={"attempt": 1})


def _writer(client: redis.Redis, running_delay_s: float) -> StateWriter:
    writer = StateWriter(client, running_delay_s=running_delay_s, gather_s=0)
    writer.start()
    return writer


def _reader(client: redis.Redis, ns: str) -> JobStateReader:
    return JobStateReader(client, ns, socket_timeout_s=5)


def _written_through(writer: StateWriter, client: redis.Redis, marker: str) -> bool:
    """Submit a marker write after everything so far and wait for it: the writer has seen it all."""
    writer.submit_commands(lambda pipe: pipe.set(marker, 1, ex=60))
    return wait_until(lambda: client.exists(marker) == 1, timeout=10)


def test_a_short_jobs_running_state_is_written_with_its_outcome(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    state, message = JobState(60), _message()
    writer = _writer(redis_client, running_delay_s=60)
    reader = _reader(redis_client, redis_namespace)
    writer.submit(*state._transition(broker, message, "running", started_at=1_000))
    assert _written_through(writer, redis_client, f"{redis_namespace}:marker:1")
    assert reader.status(message.message_id) is None  # held back, not lost...

    writer.submit(*state._transition(broker, message, "succeeded", done=True, finished_at=2_000))
    assert wait_until(
        lambda: (reader.status(message.message_id) or {}).get("state") == "succeeded", timeout=10
    )
    status = reader.status(message.message_id)
    assert status is not None
    # ...and written with the outcome: both history entries, in order, and the start time.
    assert [h["state"] for h in status["history"]] == ["running", "succeeded"]
    assert status["started_at"].timestamp() == 1.0 and status["finished_at"].timestamp() == 2.0


def test_a_job_still_running_after_the_delay_shows_running(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    state, message = JobState(60), _message()
    writer = _writer(redis_client, running_delay_s=0.05)
    reader = _reader(redis_client, redis_namespace)
    writer.submit(*state._transition(broker, message, "running", started_at=1_000))
    assert wait_until(lambda: (reader.status(message.message_id) or {}).get("state") == "running", timeout=10)


def test_flush_writes_what_is_held(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    state, message = JobState(60), _message()
    writer = _writer(redis_client, running_delay_s=60)
    writer.submit(*state._transition(broker, message, "running", started_at=1_000))
    assert writer.flush(timeout_s=10)
    status = _reader(redis_client, redis_namespace).status(message.message_id)
    assert status is not None and status["state"] == "running"


def test_a_batchs_counters_are_summed_into_the_fleet_metrics(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    from middleware import metrics
    from middleware.job_state import _started

    state = JobState(60)
    writer = StateWriter(redis_client, running_delay_s=0, gather_s=0)
    token = _started.set(time.perf_counter() - 0.2)  # each job ran for about 0.2 s
    try:
        for outcome in ("succeeded", "succeeded", "succeeded", "failed"):
            code = "VAL_2001" if outcome == "failed" else ""
            writer.submit(*state._transition(broker, _message(), outcome, done=True, outcome=(outcome, code)))
    finally:
        _started.reset(token)
    writer.start()  # everything queued so far is one batch
    assert writer.flush(timeout_s=10)

    ns = redis_namespace
    jobs = {k.decode(): int(v) for k, v in redis_client.hgetall(metrics.jobs_key(ns)).items()}
    assert jobs == {"probe|email|succeeded|": 3, "probe|email|failed|VAL_2001": 1}
    durations = {k.decode(): v.decode() for k, v in redis_client.hgetall(metrics.duration_key(ns)).items()}
    assert durations["probe|0.25"] == "4" and durations["probe|count"] == "4"
    assert 0.8 <= float(durations["probe|sum"]) < 2.0
    (minute,) = redis_client.keys(f"{ns}:metrics:minute:*")
    per_minute = {k.decode(): int(v) for k, v in redis_client.hgetall(minute).items()}
    assert per_minute == {"email|succeeded": 3, "email|failed": 1}
    assert 0 < redis_client.ttl(minute) <= metrics.MINUTE_TTL_S


def test_a_progress_report_is_written_at_once_and_carries_the_held_start(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    from middleware.job_state import Start

    state, message = JobState(60), _message()
    writer = _writer(redis_client, running_delay_s=60)
    reader = _reader(redis_client, redis_namespace)

    def running() -> tuple[list[str], list[Any]]:
        return state._transition(broker, message, "running", at_ms=1_000, started_at=1_000, attempts=1)

    writer.submit_start(Start(running()[0][0], 1_000, 1, running))
    keys_, args = state._transition(broker, message, "running", progress=50.0, progress_note="half")
    args[10] = 0  # a progress report has no history entry of its own (as JobState.progress builds it)
    del args[11]
    writer.submit(keys_, args)
    # Well before the 60 s hold: the report is not held, and the start travels with it.
    assert wait_until(lambda: (reader.status(message.message_id) or {}).get("progress") == 50.0, timeout=10)
    status = reader.status(message.message_id)
    assert status is not None and status["state"] == "running" and status["progress_note"] == "half"
    assert [h["state"] for h in status["history"]] == ["running"]
    assert status["started_at"].timestamp() == 1.0


def test_a_batch_keeps_text_numbers_and_order_exact(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    """Transitions travel as JSON to the script: non-ASCII text (astral characters too),
    numbers and history come back as they went, and a late transition changes nothing."""
    state = JobState(60)
    writer = StateWriter(redis_client, running_delay_s=0, gather_s=0)
    reader = _reader(redis_client, redis_namespace)
    failed, done = _message(), _message()
    error = 'SMTP 550 für "Zürich" 🏔 \\ \u2028 end'
    writer.submit(*state._transition(broker, failed, "running", at_ms=1_000, started_at=1_000, attempts=1))
    writer.submit(
        *state._transition(
            broker,
            failed,
            "failed",
            done=True,
            at_ms=2_500,
            finished_at=2_500,
            error_code="VAL_2001",
            error=error,
        )
    )
    writer.submit(*state._transition(broker, done, "succeeded", done=True, at_ms=3_000, result='{"n": 0.1}'))
    # Late: an earlier phase of an attempt already recorded as failed.
    writer.submit(*state._transition(broker, failed, "running", at_ms=4_000, started_at=4_000))
    writer.start()  # one batch
    assert writer.flush(timeout_s=10)

    status = reader.status(failed.message_id)
    assert status is not None
    assert (status["state"], status["error_code"], status["error"]) == ("failed", "VAL_2001", error)
    assert [h["state"] for h in status["history"]] == ["running", "failed"]
    assert status["started_at"].timestamp() == 1.0 and status["finished_at"].timestamp() == 2.5
    assert status["attempts"] == 1
    other = reader.status(done.message_id)
    assert other is not None and other["state"] == "succeeded" and other["result"] == {"n": 0.1}
    assert redis_client.lrange(f"{redis_namespace}:job:{failed.message_id}:done", 0, -1) == [b"failed"]


@pytest.mark.parametrize(
    ("batch_size", "gather_s"),
    [(1, 0.01), (20, 0.01), (40, 0.02), (100, 0.05), (1000, 0.05)],
)
def test_a_busy_writer_gathers_longer_up_to_50_ms(batch_size: int, gather_s: float) -> None:
    from middleware.job_state import gather_after

    assert gather_after(batch_size, 0.01) == pytest.approx(gather_s)


def test_the_writer_outlives_a_bad_batch_and_text_no_encoding_takes(
    broker: FleetBroker, redis_client: redis.Redis, redis_namespace: str
) -> None:
    """A lone surrogate (text decoded with surrogateescape) is written as '?'; a batch
    that fails for a reason of its own is dropped, and the next one is written."""
    state = JobState(60)
    writer = _writer(redis_client, running_delay_s=0)
    reader = _reader(redis_client, redis_namespace)
    odd, after = _message(), _message()
    writer.submit(
        *state._transition(broker, odd, "failed", done=True, error_code="VAL_2001", error="bad \udc80 byte")
    )
    assert wait_until(lambda: (reader.status(odd.message_id) or {}).get("error") == "bad ? byte", timeout=10)

    def broken(pipe: Any) -> None:
        raise RuntimeError("a write of its own that fails")

    writer.submit_commands(broken)
    assert writer.flush(timeout_s=10)
    writer.submit(*state._transition(broker, after, "succeeded", done=True, result='{"ok": true}'))
    assert wait_until(lambda: (reader.status(after.message_id) or {}).get("state") == "succeeded", timeout=10)
    assert writer.is_alive()
