"""Probe actors for worker tests: record each execution in Redis, sleep and fail on request."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Annotated, Any

from dramatiq.middleware import CurrentMessage
from pydantic import Field, StrictBool, StrictInt

from jobs.actor import JobActor
from jobs.payloads import Payload
from middleware.errors import JobError
from middleware.fleet import FleetBroker
from middleware.job_state import report_progress

# probe actor name per queue
PROBES = {
    "email": "probe",
    "image-processing": "probe_image",
    "analytics": "probe_analytics",
    "cleanup": "probe_cleanup",
}


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
    # Work for this long (in small steps, so a time limit can interrupt it).
    sleep_ms: StrictInt = 0
    sleep_first_run_only: StrictBool = False
    result_size: StrictInt = 0
    # Report progress in this many steps, logging a line each (the last report waits for `hold_key`).
    progress_steps: StrictInt = 0
    log_lines: StrictInt = 0


def probe_keys(namespace: str, key: str) -> tuple[str, str]:
    return f"{namespace}:probe:{key}:runs", f"{namespace}:probe:{key}:log"


def spans_key(namespace: str) -> str:
    """One list for all probes of a namespace: {"key", "queue", "start", "end", "attempt", "pid"}."""
    return f"{namespace}:probe:spans"


def _work(ms: int) -> None:
    deadline = time.monotonic() + ms / 1000
    while time.monotonic() < deadline:
        time.sleep(0.01)


def declare_probe(broker: FleetBroker, queue: str = "email", actor_name: str | None = None) -> JobActor:
    def run(p: ProbePayload) -> dict[str, Any]:
        start = time.time()
        runs_key, log_key = probe_keys(broker.namespace, p.key)
        runs = int(broker.client.incr(runs_key))
        current = CurrentMessage.get_current_message()
        attempt = int(current.options.get("attempt", 1)) if current is not None else 0
        entry = {"pid": os.getpid(), "at": start, "value": p.value, "attempt": attempt}
        broker.client.rpush(log_key, json.dumps(entry))
        try:
            for i in range(p.log_lines):
                logging.getLogger("jobs.probe").info(
                    "probe %s line %d of %d password=%s", p.key, i + 1, p.log_lines, p.password
                )
            for step in range(1, p.progress_steps + 1):
                report_progress(100 * step / p.progress_steps, f"step {step} of {p.progress_steps}")
                _work(50)
            if p.sleep_ms and (runs == 1 or not p.sleep_first_run_only):
                _work(p.sleep_ms)
            if runs <= p.fail_times:
                # "{password}" in the text is the job echoing its secret argument at run time.
                text = p.error_message.replace("{password}", p.password or "").replace("{echo}", p.echo)
                if p.error_code == "RAW":  # an exception no rule knows: SRV_6001
                    raise RuntimeError(text)
                raise JobError(p.error_code, text)
            return {"success": True, "runs": runs, "payload": "x" * p.result_size}
        finally:
            span = {"key": p.key, "queue": queue, "start": start, "end": time.time(), "attempt": attempt}
            broker.client.rpush(spans_key(broker.namespace), json.dumps({**span, "pid": os.getpid()}))

    return JobActor(
        run,
        broker=broker,
        actor_name=actor_name or PROBES.get(queue, f"probe_{queue}"),
        queue_name=queue,
        payload=ProbePayload,
        label="probe",
        sensitive_args=frozenset({"value", "echo"}),
    )


def declare_all_probes(broker: FleetBroker) -> dict[str, JobActor]:
    return {queue: declare_probe(broker, queue) for queue in PROBES}
