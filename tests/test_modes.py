"""Both modes end to end: embedded jobs run in-process; real mode runs `dramatiq jobs` workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis

from jobs.embedded import EXIT_EMBEDDED_MODE
from tests.conftest import Stack
from tests.services.workers import REPO, WorkerGroup, clean_environ
from tests.support.probe import declare_probe, probe_keys


def test_embedded_mode_runs_jobs_in_process(embedded_stack: Stack) -> None:
    probe = declare_probe(embedded_stack.broker)
    for i in range(5):
        probe.send(key="emb", value=str(i))
    embedded_stack.join()
    runs_key, log_key = probe_keys(embedded_stack.broker.namespace, "emb")
    client = embedded_stack.broker.client
    assert int(client.get(runs_key)) == 5
    assert sorted(json.loads(x)["value"] for x in client.lrange(log_key, 0, -1)) == ["0", "1", "2", "3", "4"]


def test_embedded_mode_uses_no_real_redis(embedded_stack: Stack) -> None:
    assert type(embedded_stack.broker.client).__module__.startswith("fakeredis")


@pytest.mark.slow
def test_dramatiq_refuses_to_start_in_embedded_mode() -> None:
    env = clean_environ({"ENABLE_BACKGROUND_JOBS": "false"})
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "1"],
        cwd=REPO,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == EXIT_EMBEDDED_MODE, out.stderr
    assert "embedded mode" in out.stderr
    assert "ENABLE_BACKGROUND_JOBS=true" in out.stderr
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_real_mode_worker_processes_a_message(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    """`dramatiq jobs --processes 2 --threads 5` against real Redis runs what the test sends."""
    group = worker_group(clean_environ(real_env), modules=("tests.support.worker_probe",))
    group.wait_ready()
    stack = make_stack(real_env)
    assert stack.settings.real_mode and stack.embedded is None
    probe = declare_probe(stack.broker)
    for i in range(20):
        probe.send(key="real", value=str(i))
    runs_key, log_key = probe_keys(stack.broker.namespace, "real")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and int(redis_client.get(runs_key) or 0) < 20:
        time.sleep(0.05)
    assert int(redis_client.get(runs_key) or 0) == 20
    entries = [json.loads(x) for x in redis_client.lrange(log_key, 0, -1)]
    assert sorted(int(e["value"]) for e in entries) == list(range(20))
    assert all(e["pid"] != __import__("os").getpid() for e in entries)  # ran in the workers
    assert group.stop() == 0, group.output[-4000:]
