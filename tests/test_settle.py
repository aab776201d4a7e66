"""A finished message leaves Redis only once its outcome is written, on real Redis.

The job-state writer records outcomes a few milliseconds after a job ends,
in batches; the ack comes first. These tests hold the writer back (a write
that blocks until released stands for "this process died before writing"),
drive one consumer directly and read what Redis keeps: the message stays in
the worker's ack set with its data until the outcome is written, so a worker
that dies in that window has its job run again, never shown unfinished for good.
"""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis

from middleware.fleet import FleetBroker
from middleware.job_state import JobState, JobStateReader
from tests.support.held_writer import HeldWriter, run_delivery
from tests.support.redis_inspect import wait_until

QUEUE = "settle"
TIMEOUT_MS = 500


def _broker(client: redis.Redis, ns: str, state: JobState) -> FleetBroker:
    b = FleetBroker(
        client=client,
        namespace=ns,
        middleware=[state],
        caps={QUEUE: 2},
        heartbeat_timeout=TIMEOUT_MS,
    )

    @dramatiq.actor(broker=b, queue_name=QUEUE, actor_name="settle_probe")
    def settle_probe(n: int) -> None:
        pass

    b.settle_probe = settle_probe  # type: ignore[attr-defined]
    b.worker_threads = 1
    return b


@pytest.fixture
def state() -> JobState:
    return JobState(60)


@pytest.fixture
def broker(redis_client: redis.Redis, redis_namespace: str, state: JobState) -> Iterator[FleetBroker]:
    b = _broker(redis_client, redis_namespace, state)
    yield b
    b.close()


def _kept(client: redis.Redis, broker: FleetBroker, redis_id: str) -> tuple[bool, bool]:
    """(in this worker's ack set, its data still stored)."""
    ns = broker.namespace
    return (
        bool(client.sismember(f"{ns}:__acks__.{broker.broker_id}.{QUEUE}", redis_id)),
        bool(client.hexists(f"{ns}:{QUEUE}.msgs", redis_id)),
    )


def test_a_finished_message_is_kept_until_its_outcome_is_written_and_forgotten_with_it(
    broker: FleetBroker, state: JobState, redis_client: redis.Redis, redis_namespace: str
) -> None:
    broker.settle_probe.send(1)  # type: ignore[attr-defined]
    broker.settle_probe.send(2)  # type: ignore[attr-defined]
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    held = HeldWriter(state, broker)
    message = run_delivery(state, broker, consumer)
    redis_id = message.options["redis_message_id"]
    reader = JobStateReader(redis_client, redis_namespace, socket_timeout_s=5)

    # Acked: its slot went to the next message, taken in the same call...
    slots = {m.decode() for m in redis_client.zrange(f"{redis_namespace}:slots:{QUEUE}", 0, -1)}
    assert redis_id not in slots and len(slots) == 1
    assert [rid for _, rid in consumer.held()] == list(slots)
    # ...but while its outcome waits in this process, Redis keeps the message.
    assert _kept(redis_client, broker, redis_id) == (True, True)
    assert (reader.status(message.message_id) or {}).get("state") == "queued"

    held.release()
    assert wait_until(lambda: _kept(redis_client, broker, redis_id) == (False, False), timeout=10)
    status = reader.status(message.message_id)
    assert status is not None and status["state"] == "succeeded" and status["result"] == {"n": 1}


def test_a_worker_dying_before_the_outcome_is_written_has_its_job_run_again(
    broker: FleetBroker,
    state: JobState,
    redis_client: redis.Redis,
    redis_namespace: str,
) -> None:
    broker.settle_probe.send(7)  # type: ignore[attr-defined]
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    held = HeldWriter(state, broker)
    message = run_delivery(state, broker, consumer)
    redis_id = message.options["redis_message_id"]
    # This worker dies: no heartbeat from now on, its outcome never written.
    broker.close()

    survivor_state = JobState(60)
    survivor = _broker(redis_client, redis_namespace, survivor_state)
    try:

        def recovered() -> bool:
            survivor.fleet.tick(TIMEOUT_MS, [], TIMEOUT_MS, [QUEUE])
            return redis_id.encode() in redis_client.lrange(f"{redis_namespace}:{QUEUE}", 0, -1)

        assert wait_until(recovered, timeout=10), "the dead worker's finished message was not requeued"
        # Its outcome arriving late (a frozen worker, not a dead one) forgets nothing
        # that recovery gave back to the queue.
        held.release()
        assert state._writer is not None and state._writer.flush()
        assert redis_client.hexists(f"{redis_namespace}:{QUEUE}.msgs", redis_id)

        # The job runs again elsewhere and its outcome is recorded.
        rerun = run_delivery(survivor_state, survivor, survivor.consume(QUEUE, prefetch=1, timeout=100))
        assert rerun.message_id == message.message_id
        reader = JobStateReader(redis_client, redis_namespace, socket_timeout_s=5)
        assert wait_until(
            lambda: (reader.status(message.message_id) or {}).get("state") == "succeeded", timeout=10
        )
        assert wait_until(lambda: _kept(redis_client, survivor, redis_id) == (False, False), timeout=10)
    finally:
        survivor.close()


def test_a_retried_message_is_acked_at_once_so_its_next_attempt_alone_runs(
    broker: FleetBroker, state: JobState, redis_client: redis.Redis
) -> None:
    broker.settle_probe.send(3)  # type: ignore[attr-defined]
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    held = HeldWriter(state, broker)
    try:
        message = run_delivery(state, broker, consumer, raised=True)
        assert _kept(redis_client, broker, message.options["redis_message_id"]) == (False, False)
    finally:
        held.release()


def test_a_stack_without_job_state_acks_at_once(redis_client: redis.Redis, redis_namespace: str) -> None:
    b = FleetBroker(
        client=redis_client, namespace=redis_namespace, middleware=[], caps={}, heartbeat_timeout=TIMEOUT_MS
    )
    try:

        @dramatiq.actor(broker=b, queue_name=QUEUE, actor_name="settle_plain")
        def settle_plain() -> None:
            pass

        settle_plain.send()
        consumer = b.consume(QUEUE, prefetch=1, timeout=100)
        message = next(consumer)
        assert message is not None
        consumer.ack(message)
        assert _kept(redis_client, b, message.options["redis_message_id"]) == (False, False)
    finally:
        b.close()


def test_a_unique_jobs_done_marker_is_written_with_its_outcome(
    redis_client: redis.Redis, redis_namespace: str
) -> None:
    """The ``done:`` marker rides in the outcome's round trip: until then the claim
    still says ``run:`` (a redelivery of the same message may run), and once
    written, the marker, the state and the forgotten message land together."""
    from middleware.unique import UniqueJobs

    state = JobState(60)
    b = FleetBroker(
        client=redis_client,
        namespace=redis_namespace,
        middleware=[UniqueJobs(60), state],
        caps={},
        heartbeat_timeout=TIMEOUT_MS,
    )
    try:

        @dramatiq.actor(broker=b, queue_name=QUEUE, actor_name="settle_unique")
        def settle_unique(n: int) -> None:
            pass

        settle_unique.send_with_options(args=(1,), unique_key="once")
        b.worker_threads = 1
        consumer = b.consume(QUEUE, prefetch=1, timeout=100)
        held = HeldWriter(state, b)
        message = next(consumer)
        assert message is not None
        # As a worker thread runs it: before-hooks in order, after-hooks in reverse.
        for m in b.middleware:
            m.before_process_message(b, message)
        for m in reversed(b.middleware):
            m.after_process_message(b, message, result=None)
        consumer.ack(message)
        marker = f"{redis_namespace}:unique:once"
        assert redis_client.get(marker) == f"run:{message.message_id}".encode()
        assert _kept(redis_client, b, message.options["redis_message_id"]) == (True, True)

        held.release()
        assert wait_until(
            lambda: redis_client.get(marker) == f"done:{message.message_id}".encode(), timeout=10
        )
        assert wait_until(
            lambda: _kept(redis_client, b, message.options["redis_message_id"]) == (False, False), timeout=10
        )
        assert 0 < redis_client.pttl(marker) <= 60_000
    finally:
        b.close()
