"""Graceful shutdown: one SIGTERM lets the running job finish and hands everything else back to Redis;
a second SIGTERM exits at once, and crash recovery runs the unfinished job again."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import Ledger, declare_ledger_actors
from tests.reliability.supervise import EntrypointGroup
from tests.services.http import HTTPTestServer
from tests.support.images import grid, jpeg


def in_flight(client: redis.Redis, ns: str) -> int:
    """Messages some worker has fetched and not settled (the members of every ack set)."""
    return sum(int(client.scard(key)) for key in client.scan_iter(match=f"{ns}:__acks__.*", count=500))


def test_sigterm_finishes_the_running_job_and_returns_prefetched_and_delayed_messages(
    real_env: dict[str, str],
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    redis_client: redis.Redis,
) -> None:
    env = {**real_env, **ledger_env, "TAATOM_WORKER_SHUTDOWN_MS": "20000"}
    # One thread, so an analytics job is fetched and waits behind the running e-mail job
    # (a capped queue's consumer holds no more than the process's threads: one each here).
    group = groups(env, processes=1, threads=1)
    group.wait_ready()
    stack = make_stack(real_env)
    actors = declare_ledger_actors(stack.broker, ledger)
    email, analytics = actors["email"], actors["analytics"]
    ns = stack.broker.namespace
    jobs = {"running": email.send(key="running", sleep_ms=3000).message_id}
    assert wait_for(lambda: ledger.counts("start").get("running") == 1, timeout=20), group.output[-3000:]
    jobs["prefetched"] = analytics.send(key="prefetched").message_id
    jobs["delayed"] = email.send_with_options(kwargs={"key": "delayed"}, delay=6000).message_id
    # Both are held by the worker now: nothing of them is left in Redis's lists.
    assert wait_for(
        lambda: redis_client.llen(f"{ns}:analytics") == 0 and redis_client.llen(f"{ns}:email.DQ") == 0,
        timeout=10,
    )
    assert in_flight(redis_client, ns) == 3

    stopping_at = time.monotonic()
    group.terminate()
    code = group.proc.wait(timeout=30)
    stopped_after = time.monotonic() - stopping_at
    figures = report(
        "sigterm",
        f"SIGTERM during a 3 s job: exit code {code} after {stopped_after:.1f}s; "
        f"the job finished: {ledger.counts('end').get('running') == 1}",
    )
    assert code == 0, figures + group.output[-3000:]
    assert ledger.counts("end") == {"running": 1}, figures
    assert ledger.counts("start") == {"running": 1}, figures
    # The prefetched message is back at the head of its queue, the delayed one in the delay
    # queue; nothing is held by the stopped worker and no concurrency slot stays leased.
    assert redis_client.llen(f"{ns}:analytics") == 1
    assert redis_client.llen(f"{ns}:email.DQ") == 1
    assert in_flight(redis_client, ns) == 0
    assert redis_client.zcard(f"{ns}:slots:email") == 0
    assert redis_client.zcard(f"{ns}:slots:analytics") == 0

    after = groups(env, processes=1, threads=2)
    after.wait_ready()
    for key, job in jobs.items():
        result = stack.api.result(job, timeout=20)
        assert result == {"success": True, "key": key}
        status = stack.api.status(job)
        assert status is not None and status["attempts"] == 1, (key, status)  # no attempt consumed
    assert ledger.counts("end") == {"running": 1, "prefetched": 1, "delayed": 1}
    assert ledger.counts("start") == {"running": 1, "prefetched": 1, "delayed": 1}


def test_second_sigterm_exits_at_once_and_the_unfinished_job_is_recovered(
    real_env: dict[str, str],
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
) -> None:
    env = {
        **real_env,
        **ledger_env,
        "WORKER_HEARTBEAT_TIMEOUT_MS": "3000",
        "TAATOM_WORKER_SHUTDOWN_MS": "60000",
    }
    group = groups(env, processes=1, threads=2)
    group.wait_ready()
    stack = make_stack(real_env)
    cleanup = declare_ledger_actors(stack.broker, ledger)["cleanup"]
    job = cleanup.send(key="stubborn", sleep_ms=60_000, first_run_only=True).message_id
    assert wait_for(lambda: ledger.counts("start").get("stubborn") == 1, timeout=20), group.output[-3000:]

    group.terminate()
    group.wait_for_line("Stopping worker process")
    # The first SIGTERM waits for the job (up to the shutdown timeout)...
    assert group.proc.poll() is None
    second_at = time.monotonic()
    group.proc.send_signal(signal.SIGTERM)
    code = group.proc.wait(timeout=15)
    exited_after = time.monotonic() - second_at
    killed_at = time.time()
    # ...the second one does not.
    rescuer = groups(env, processes=1, threads=2)
    rescuer.wait_ready()
    assert wait_for(lambda: ledger.counts("end").get("stubborn") == 1, timeout=30), rescuer.output[-3000:]
    rerun = [e for e in ledger.events("stubborn") if e["event"] == "start"][1]
    figures = report(
        "second sigterm",
        f"second SIGTERM: exit code {code} after {exited_after:.2f}s; "
        f"the unfinished job started again {rerun['at'] - killed_at:.1f}s later in another worker "
        "(WORKER_HEARTBEAT_TIMEOUT_MS=3000)",
    )
    assert exited_after < 5, figures
    assert code != 0, figures
    assert rerun["pid"] != ledger.events("stubborn")[0]["pid"]
    assert stack.api.result(job, timeout=10) == {"success": True, "key": "stubborn"}
    status = stack.api.status(job)
    assert status is not None and status["attempts"] == 1, status


@pytest.mark.timeout(90)
def test_a_worker_that_ran_an_image_job_exits_on_sigterm(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    http_server: HTTPTestServer,
    tmp_path: Path,
) -> None:
    env = {
        **real_env,
        "IMAGE_FETCH_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}",
        "IMAGE_STORAGE_DIR": str(tmp_path / "images"),
        "TAATOM_WORKER_SHUTDOWN_MS": "10000",
    }
    group = groups(env, processes=1, threads=2, args=())
    group.wait_ready()
    stack = make_stack(env)
    url = http_server.add_bytes("/small.jpg", jpeg(grid(64, 48)), "image/jpeg")
    job = stack.actors.process_image.send(image_url=url, transformations=[{"width": 32}]).message_id
    assert stack.api.result(job, timeout=30)["success"] is True
    group.terminate()
    try:
        code = group.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        group.kill_all()
        raise AssertionError(
            "the worker process did not exit within 15 s of SIGTERM after an image job:\n"
            + group.output[-1500:]
        ) from None
    assert code == 0
