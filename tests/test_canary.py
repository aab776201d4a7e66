"""Canary: secrets placed in arguments, exceptions, URLs and bodies reach no sink.

Sinks scanned: worker log output (text and JSON, at DEBUG so Dramatiq's own
per-message lines are included), every Redis key of the run (queues, delayed
and dead letters), and the Sentry envelopes received by a local endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet
from pymongo.database import Database

from tests.conftest import Stack
from tests.services.sentry_sink import SentrySink
from tests.services.smtp import SMTPTestServer
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.probe import declare_probe
from tests.support.redis_inspect import dead_letters, dump_namespace, wait_until

pytestmark = pytest.mark.slow

PASSWORD = "canary-Pw-7731x"
URL_PASSWORD = "canary-UrlPw-4420z"
BODY = "canary-Otp-118822"


def _send_canaries(stack: Stack) -> None:
    probe = declare_probe(stack.broker)
    # retried once, then succeeds; the failure text echoes the password argument
    probe.send(
        key="c1", password=PASSWORD, fail_times=1, error_message="login failed with password {password}"
    )
    # an exception no rule knows, carrying a URL with credentials, until attempts run out
    probe.send(
        key="c2",
        password=PASSWORD,
        fail_times=99,
        error_code="RAW",
        echo=f"mongodb://app:{URL_PASSWORD}@db:27017/taatom",
        error_message="cannot reach {echo} as {password}",
    )
    # an e-mail whose body and subject hold an OTP; the SMTP server refuses it for good (550)
    stack.actors.send_email.send(
        to="ana@example.com", subject=f"Code {BODY}", text=f"Your code: {BODY}", html=f"<p>{BODY}</p>"
    )


def _run(env: dict[str, str], stack: Stack, group: WorkerGroup, client: redis.Redis, sink: SentrySink) -> str:
    group.wait_ready()
    _send_canaries(stack)
    ns = stack.broker.namespace
    assert wait_until(lambda: len(dead_letters(client, ns, "email")) == 2, timeout=40)
    group.wait_for("Probe job", count=1)
    assert wait_until(lambda: "succeeded in" in group.output)
    assert group.stop() == 0
    events = sink.wait_for_events(2)
    assert len(events) == 2  # one per final failure: c2 and the e-mail
    assert sorted((e["tags"]["actor"], e["tags"]["error_code"]) for e in events) == [
        ("probe", "SRV_6001"),
        ("send_email", "SRV_6006"),
    ]
    return dump_namespace(client, ns)


@pytest.fixture
def services_env(
    real_env: dict[str, str], mongo_url: str, mongo_db: Database[dict[str, Any]], smtp_server: SMTPTestServer
) -> dict[str, str]:
    smtp_server.always_reply(550)
    return {
        **real_env,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db.name,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
    }


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_logs_redis_or_sentry_with_encryption(
    log_format: str,
    services_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
    sentry_sink: SentrySink,
) -> None:
    env = {
        **services_env,
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": "DEBUG",
        "EMAIL_MAX_ATTEMPTS": "2",
        "SENTRY_DSN": sentry_sink.dsn,
        "JOBS_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    group = worker_group(clean_environ(env), modules=("tests.support.worker_probe",), processes=1, threads=2)
    stack = make_stack({k: v for k, v in env.items() if k != "SENTRY_DSN"})
    redis_dump = _run(env, stack, group, redis_client, sentry_sink)
    logs = group.output
    assert "Received message" in logs  # Dramatiq's debug lines were there to leak from
    if log_format == "json":
        assert all(json.loads(line) for line in logs.splitlines() if line.startswith("{"))
    for secret in (PASSWORD, URL_PASSWORD, BODY):
        assert secret not in logs, f"{secret} in logs"
        assert secret not in redis_dump, f"{secret} in Redis"
        assert secret not in sentry_sink.text(), f"{secret} in Sentry"
    # the failure is still explained, with the echoed secrets cut out
    assert "SRV_6001 unexpected error: RuntimeError: cannot reach [REDACTED] as [REDACTED]" in logs


def test_without_encryption_secrets_stay_inside_message_payloads(
    services_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
    sentry_sink: SentrySink,
) -> None:
    """No key: the arguments themselves are stored (a retry needs them), but nothing else is."""
    env = {**services_env, "LOG_LEVEL": "DEBUG", "EMAIL_MAX_ATTEMPTS": "2", "SENTRY_DSN": sentry_sink.dsn}
    group = worker_group(clean_environ(env), modules=("tests.support.worker_probe",), processes=1, threads=2)
    stack = make_stack(services_env)
    _run(env, stack, group, redis_client, sentry_sink)
    for letter in dead_letters(redis_client, stack.broker.namespace, "email"):
        outcome = json.dumps({k: v for k, v in letter["options"].items() if k != "redis_message_id"})
        for secret in (PASSWORD, URL_PASSWORD, BODY):
            assert secret not in outcome
    for secret in (PASSWORD, URL_PASSWORD, BODY):
        assert secret not in group.output
        assert secret not in sentry_sink.text()
