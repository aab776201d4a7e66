"""Faults between a finished job's ack and its outcome reaching Redis (``middleware.settle``).

A worker SIGKILLed after acking a finished job, before writing its outcome: the job runs again.

Without the outcome in Redis nothing could tell the job ran: its state would
stay ``queued`` for good and a ``result()`` caller would wait in vain. The ack
keeps the message in the worker's ack set until the outcome is written
(``middleware.settle``), so dead-worker recovery runs it again and its state
ends ``succeeded``. The fault module makes the window certain: it holds the
process's job-state writer from the job's start and kills the process right
after the ack.

Redis unreachable when the outcome is written: the writer keeps the batch and
writes it, then forgets the message, once Redis answers again.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import dramatiq
import redis

from middleware.fleet import FleetBroker
from middleware.job_state import JobState, JobStateReader
from tests.conftest import Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import Ledger, declare_ledger_actors
from tests.reliability.servers import RedisServer
from tests.reliability.supervise import EntrypointGroup
from tests.support.held_writer import HeldWriter, run_delivery

HEARTBEAT_TIMEOUT_MS = 2000
# The keys settle_fault acts on (not imported: importing it wires the fault into this process's broker).
PREFIX = "die-after-ack"


def test_a_job_whose_worker_died_before_recording_its_outcome_runs_again_and_ends_succeeded(
    real_env: dict[str, str],
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    redis_client: redis.Redis,
) -> None:
    env = {**real_env, **ledger_env, "WORKER_HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_TIMEOUT_MS)}
    doomed = groups(env, args=("tests.reliability.ledger_worker", "tests.reliability.settle_fault"))
    doomed.wait_ready()
    stack = make_stack(env)
    actors = declare_ledger_actors(stack.broker, ledger)
    key = f"{PREFIX}-1"
    message_id = actors["email"].send(key=key).message_id

    # The job finished, was acked, and its process died before writing anything of it.
    assert wait_for(lambda: doomed.proc.poll() is not None, timeout=30), doomed.output[-3000:]
    assert ledger.counts("end") == {key: 1}
    first = stack.api.status(message_id)
    assert first is not None and first["state"] == "queued", first

    rescuer = groups(env)
    rescuer.wait_ready()
    assert wait_for(lambda: (stack.api.status(message_id) or {}).get("state") == "succeeded", timeout=30), (
        stack.api.status(message_id),
        rescuer.output[-3000:],
    )
    status = stack.api.status(message_id)
    assert status is not None and status["result"] == {"success": True, "key": key}
    assert ledger.counts("end") == {key: 2}
    ns = stack.broker.namespace
    assert wait_for(lambda: not redis_client.hlen(f"{ns}:email.msgs"), timeout=10)
    report(
        "settle-kill",
        f"killed after the ack, before the outcome: state then {first['state']!r}; "
        f"ran again in the other group, state {status['state']!r}, runs: {ledger.counts('end')[key]}",
    )


def test_an_outcome_written_during_an_outage_lands_and_its_message_is_forgotten_once_redis_is_back(
    redis_server: Callable[..., RedisServer], redis_namespace: str
) -> None:
    server = redis_server("settle")
    client = redis.Redis.from_url(server.url(), socket_timeout=2, socket_connect_timeout=1)
    state = JobState(60)
    broker = FleetBroker(
        client=client, namespace=redis_namespace, middleware=[state], caps={}, heartbeat_timeout=30_000
    )
    queue = "settle-outage"

    @dramatiq.actor(broker=broker, queue_name=queue, actor_name="settle_outage_probe")
    def probe(n: int) -> None:
        pass

    try:
        probe.send(5)
        held = HeldWriter(state, broker)
        message = run_delivery(state, broker, broker.consume(queue, prefetch=1, timeout=100))
        redis_id = message.options["redis_message_id"]
        acks = f"{redis_namespace}:__acks__.{broker.broker_id}.{queue}"

        server.stop(signal.SIGTERM)  # a clean stop: the AOF keeps the kept message
        held.release()  # the outcome's round trip finds no Redis
        assert state._writer is not None and state._writer.flush()
        server.start()

        reader = JobStateReader(client, redis_namespace, socket_timeout_s=2)

        def settled() -> bool:
            try:
                status = reader.status(message.message_id) or {}
                return status.get("state") == "succeeded" and not client.sismember(acks, redis_id)
            except redis.ConnectionError:
                return False

        assert wait_for(settled, timeout=15)
        assert not client.hexists(f"{redis_namespace}:{queue}.msgs", redis_id)
        status = reader.status(message.message_id)
        assert status is not None and status["result"] == {"n": 5}
        assert [h["state"] for h in status["history"]] == ["queued", "running", "succeeded"]
    finally:
        broker.close()
