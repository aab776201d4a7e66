"""Poison messages: undecodable data and unknown actors are dead-lettered with a code; the queue flows on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
import redis

from middleware.errors import JobError
from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_all_probes
from tests.support.redis_inspect import dead_letters, wait_until

pytestmark = pytest.mark.slow


def _push_raw(client: redis.Redis, ns: str, queue: str, data: bytes) -> str:
    redis_id = str(uuid.uuid4())
    client.hset(f"{ns}:{queue}.msgs", redis_id, data)
    client.rpush(f"{ns}:{queue}", redis_id)
    return redis_id


def test_poison_is_dead_lettered_with_a_code_and_the_worker_keeps_going(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    group = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=1, threads=2
    )
    group.wait_ready()
    stack = make_stack(real_env)
    ns = stack.broker.namespace
    secret = "poison-canary-90210"
    garbage = _push_raw(
        redis_client, ns, "email", b'{"not": "a message", "password": "' + secret.encode() + b'"'
    )
    stranger = json.dumps(
        {
            "queue_name": "email",
            "actor_name": "removed_actor",
            "args": [],
            "kwargs": {"x": 1},
            "options": {},
            "message_id": "m-stranger",
            "message_timestamp": 0,
        }
    ).encode()
    _push_raw(redis_client, ns, "email", stranger)
    probe = declare_all_probes(stack.broker)["email"]
    wrong_types = probe.message(key="ok").copy(kwargs={"key": 5})
    stack.broker.enqueue(wrong_types)

    assert wait_until(lambda: len(dead_letters(redis_client, ns, "email")) == 3, timeout=20), (
        [d["message_id"] for d in dead_letters(redis_client, ns, "email")],
        group.output[-6000:],
    )
    letters = {d["message_id"]: d for d in dead_letters(redis_client, ns, "email")}
    assert letters[garbage]["options"]["error_code"] == "VAL_2003"
    assert letters[garbage]["actor_name"] == "<undecodable>"
    assert letters["m-stranger"]["options"]["error_code"] == "VAL_2003"
    assert "removed_actor" in letters["m-stranger"]["options"]["error"]
    assert letters[wrong_types.message_id]["options"]["error_code"] == "VAL_2001"
    assert secret not in json.dumps(letters) and secret not in group.output
    # the queue keeps flowing
    job = probe.send(key="after").message_id
    assert stack.api.result(job, timeout=20)["success"] is True
    assert group.proc.poll() is None


def test_payload_size_is_capped_at_send(
    make_stack: Callable[[dict[str, str]], Stack], tmp_path: object
) -> None:
    stack = make_stack({"EMBEDDED_DATA_DIR": str(tmp_path), "JOBS_MAX_MESSAGE_BYTES": "2048"})
    with pytest.raises(JobError) as info:
        stack.actors.send_email.send(to="ana@example.com", subject="big", text="x" * 5000)
    assert info.value.code == "VAL_2001" and "at most 2048" in info.value.message
    assert stack.broker.do_qsize("email") == 0
