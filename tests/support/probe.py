"""A probe actor for worker tests: records each execution in Redis and fails on request."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

from dramatiq.brokers.redis import RedisBroker
from pydantic import Field, StrictInt

from jobs.actor import JobActor
from jobs.payloads import Payload
from middleware.errors import JobError


class ProbePayload(Payload):
    key: Annotated[str, Field(min_length=1, max_length=100)]
    value: str = ""
    # Fail with `error_code` on the first `fail_times` executions.
    fail_times: StrictInt = 0
    error_code: str = "SRV_6003"
    error_message: str = "probe failing on purpose"
    password: str | None = None
    # Sensitive text a failure may echo ("{echo}" in error_message).
    echo: str = ""


def probe_keys(namespace: str, key: str) -> tuple[str, str]:
    return f"{namespace}:probe:{key}:runs", f"{namespace}:probe:{key}:log"


def declare_probe(broker: RedisBroker, queue: str = "email", actor_name: str = "probe") -> JobActor:
    def run(p: ProbePayload) -> dict[str, Any]:
        runs_key, log_key = probe_keys(broker.namespace, p.key)
        runs = int(broker.client.incr(runs_key))
        broker.client.rpush(log_key, json.dumps({"pid": os.getpid(), "at": time.time(), "value": p.value}))
        if runs <= p.fail_times:
            # "{password}" in the text is the job echoing its secret argument at run time.
            text = p.error_message.replace("{password}", p.password or "").replace("{echo}", p.echo)
            if p.error_code == "RAW":  # an exception no rule knows: SRV_6001
                raise RuntimeError(text)
            raise JobError(p.error_code, text)
        return {"success": True, "runs": runs}

    return JobActor(
        run,
        broker=broker,
        actor_name=actor_name,
        queue_name=queue,
        payload=ProbePayload,
        label="probe",
        sensitive_args=frozenset({"value", "echo"}),
    )
