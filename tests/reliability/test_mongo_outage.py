"""The MongoDB-wire server dies while analytics jobs run: SRV_6002, retried, both succeed once it is back."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.supervise import EntrypointGroup
from tests.services.mongo import MongoDaemon
from tests.support.events import generate_events, reference_rollup, stored_rollup, utc

DAYS = 30
START = utc(2026, 3, 1)


@pytest.mark.timeout(150)
def test_database_dies_mid_job_jobs_retry_with_srv_6002_and_succeed_once_it_is_back(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    mongo_daemon: MongoDaemon,
) -> None:
    events = generate_events(random.Random(6002), START, days=DAYS, count=6000)

    def seed() -> None:
        client = mongo_daemon.client()
        try:
            client["outage"]["analytics_events"].insert_many([dict(e) for e in events])
        finally:
            client.close()

    seed()
    env = {
        **real_env,
        "MONGO_URL": mongo_daemon.url,
        "MONGO_DB": "outage",
        # Room to bring the server back before the attempts run out.
        "ANALYTICS_BACKOFF_MIN_MS": "3000",
        "ANALYTICS_MAX_ATTEMPTS": "5",
    }
    group = groups(env, processes=1, threads=2, args=())
    group.wait_ready()
    stack = make_stack(env)
    end = (START + timedelta(days=DAYS - 1)).strftime("%Y-%m-%d")
    jobs = {
        kind: stack.actors.aggregate_analytics.send(
            start_date=START.strftime("%Y-%m-%d"), end_date=end, aggregation_type=kind
        ).message_id
        for kind in ("hourly", "daily")
    }

    def state(job: str) -> tuple[str | None, str | None]:
        status = stack.api.status(job) or {}
        return status.get("state"), status.get("error_code")

    def retried_for_the_database(job: str) -> bool:
        status = stack.api.status(job) or {}
        history = [h["state"] for h in status.get("history", [])]
        return status.get("error_code") == "SRV_6002" and "retrying" in history

    assert wait_for(lambda: all(state(j)[0] == "running" for j in jobs.values()), timeout=20), group.output[
        -3000:
    ]
    stopped_at = time.monotonic()
    started = {kind: (stack.api.status(j) or {})["started_at"] for kind, j in jobs.items()}
    mongo_daemon.stop(signal.SIGKILL)
    into_the_job = {
        kind: (datetime.now(UTC) - at).total_seconds() for kind, at in started.items()
    }  # mid-job: both are running their day-by-day pipelines
    assert wait_for(lambda: all(retried_for_the_database(j) for j in jobs.values()), timeout=30), (
        {k: state(j) for k, j in jobs.items()},
        group.output[-3000:],
    )
    mongo_daemon.start()  # same port; in-memory storage, so the events come back by seeding
    seed()
    down_s = time.monotonic() - stopped_at
    results = {kind: stack.api.result(job, timeout=60) for kind, job in jobs.items()}
    client = mongo_daemon.client()
    try:
        for kind in jobs:
            expected = reference_rollup(events, kind, START, START + timedelta(days=DAYS))
            assert stored_rollup(client["outage"][f"analytics_{kind}"]) == expected, kind
    finally:
        client.close()
    statuses = {kind: stack.api.status(job) or {} for kind, job in jobs.items()}
    figures = report(
        "mongo outage",
        "SecantusDB daemon SIGKILLed while both roll-ups ran ("
        + ", ".join(f"{kind} {s:.2f}s into its run" for kind, s in into_the_job.items())
        + f"), back after {down_s:.1f}s",
        *(
            f"{kind}: {[h['state'] for h in statuses[kind]['history']]}, "
            f"attempts {statuses[kind]['attempts']}, {results[kind]['buckets']} buckets, last attempt "
            f"{(statuses[kind]['finished_at'] - statuses[kind]['started_at']).total_seconds():.1f}s"
            for kind in jobs
        ),
    )
    for status in statuses.values():
        assert status["state"] == "succeeded" and status["attempts"] >= 2, figures
        assert "retrying" in [h["state"] for h in status["history"]], figures
    assert "SRV_6002" in group.output
    assert group.proc.poll() is None
