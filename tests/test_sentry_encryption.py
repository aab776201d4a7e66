"""Sentry reports only final failures; sensitive arguments are sealed in Redis."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from cryptography.fernet import Fernet

from tests.conftest import Stack
from tests.services.sentry_sink import SentrySink
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_probe, probe_keys
from tests.support.redis_inspect import dead_letters, dump_namespace, wait_until

pytestmark = pytest.mark.slow


def _start(worker_group: type[WorkerGroup], env: dict[str, str]) -> WorkerGroup:
    group = worker_group(clean_environ(env), modules=("tests.support.worker_probe",), processes=1, threads=2)
    group.wait_ready()
    return group


def test_job_failing_three_times_yields_one_tagged_sanitized_event(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
    sentry_sink: SentrySink,
) -> None:
    env = {**real_env, "SENTRY_DSN": sentry_sink.dsn}
    group = _start(worker_group, env)
    stack = make_stack({**real_env})  # the sender needs no Sentry
    secret = "pw-sentry-canary-9931"
    job = (
        declare_probe(stack.broker)
        .send(key="s", fail_times=99, password=secret, error_message="login refused for {password}")
        .message_id
    )
    assert wait_until(lambda: len(dead_letters(redis_client, stack.broker.namespace, "email")) == 1)
    assert group.stop() == 0  # shutdown flushes the SDK's queue
    events = sentry_sink.wait_for_events(1)
    assert len(events) == 1, [e.get("tags") for e in events]
    tags = events[0]["tags"]
    assert tags["error_code"] == "SRV_6003" and tags["queue"] == "email"
    assert tags["actor"] == "probe" and tags["attempts"] == "3"
    assert events[0]["contexts"]["job"]["job_id"] == job
    assert "dramatiq" not in events[0].get("contexts", {})
    assert secret not in sentry_sink.text()


def _sealed_env(real_env: dict[str, str], key: str, old: str = "") -> dict[str, str]:
    return {**real_env, "JOBS_ENCRYPTION_KEY": key, "JOBS_ENCRYPTION_OLD_KEYS": old}


def test_email_body_is_not_readable_in_redis(
    real_env: dict[str, str], make_stack: Callable[[dict[str, str]], Stack], redis_client: redis.Redis
) -> None:
    stack = make_stack(_sealed_env(real_env, Fernet.generate_key().decode()))
    body = "Your Taatom code is 884512"
    message = stack.actors.send_email.send(
        to="ana@example.com", subject=f"Code {body}", text=body, html=f"<b>{body}</b>"
    )
    stored = dump_namespace(redis_client, stack.broker.namespace)
    assert message.message_id in stored  # the message is there...
    assert "884512" not in stored  # ...but not what it says
    assert "ana@example.com" in stored  # routing data stays readable
    [raw] = redis_client.hvals(f"{stack.broker.namespace}:email.msgs")
    assert set(json.loads(raw)["kwargs"]) == {"to"} and "sealed" in json.loads(raw)["options"]


def test_worker_opens_sealed_arguments_and_rotated_keys(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sender_old = make_stack(_sealed_env(real_env, old_key))
    sender_new = make_stack(_sealed_env(real_env, new_key))
    _start(worker_group, _sealed_env(real_env, new_key, old=old_key))
    declare_probe(sender_old.broker).send(key="old", value="sealed-with-old-key")
    declare_probe(sender_new.broker).send(key="new", value="sealed-with-new-key")
    ns = sender_new.broker.namespace
    assert wait_until(lambda: all(redis_client.get(probe_keys(ns, k)[0]) for k in ("old", "new")))
    values = {k: json.loads(redis_client.lindex(probe_keys(ns, k)[1], 0))["value"] for k in ("old", "new")}
    assert values == {"old": "sealed-with-old-key", "new": "sealed-with-new-key"}


def test_wrong_key_dead_letters_with_clear_code_and_worker_survives(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    sender = make_stack(_sealed_env(real_env, Fernet.generate_key().decode()))
    group = _start(worker_group, _sealed_env(real_env, Fernet.generate_key().decode()))
    job = declare_probe(sender.broker).send(key="w", value="cannot-open-this").message_id
    ns = sender.broker.namespace
    assert wait_until(lambda: len(dead_letters(redis_client, ns, "email")) == 1)
    [letter] = dead_letters(redis_client, ns, "email")
    assert letter["message_id"] == job and letter["options"]["error_code"] == "VAL_2002"
    assert letter["options"]["attempts"] == 1
    assert "sealed" in letter["options"] and "value" not in letter["kwargs"]
    assert redis_client.get(probe_keys(ns, "w")[0]) is None  # the job never ran
    # the worker keeps going: a plain message still runs
    plain = make_stack(real_env)
    declare_probe(plain.broker).send(key="after", value="x")
    assert wait_until(lambda: redis_client.get(probe_keys(ns, "after")[0]) is not None)
    assert "failed permanently: VAL_2002" in group.output
