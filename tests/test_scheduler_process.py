"""The scheduler as real processes against real Redis: replicas, catch-up, SIGTERM, --list, --dry-run.

Fast schedules come from the settings only: a 6-field cron fires every second.
Emissions are read from the queues in Redis; no worker runs.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler.cron import parse_cron
from scheduler.gate import RedisGate
from scheduler.health import iso, read_heartbeats
from scheduler.windows import next_fire, previous_fire, window_of
from tests.services.workers import REPO, clean_environ
from tests.support.redis_inspect import wait_until
from tests.test_scheduler_gate import queued

pytestmark = pytest.mark.slow

EVERY_SECOND = {
    "SCHEDULE_ANALYTICS_HOURLY_CRON": "* * * * * *",
    "SCHEDULE_ANALYTICS_DAILY_CRON": "* * * * * *",
    "SCHEDULE_CLEANUP_ANALYTICS_CRON": "* * * * * *",
    "SCHEDULE_CLEANUP_ERROR_LOGS_CRON": "* * * * * *",
    "SCHEDULER_HEARTBEAT_S": "0.5",
}
QUEUE_OF = {
    "analytics:hourly": "analytics",
    "analytics:daily": "analytics",
    "cleanup:analytics": "cleanup",
    "cleanup:error_logs": "cleanup",
}
STARTED = "Scheduler replica"


class SchedulerProcess:
    """``python -m scheduler ...`` with its output collected line by line."""

    def __init__(self, env: Mapping[str, str], *args: str, command: list[str] | None = None) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "scheduler"]), *args],
            cwd=REPO,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, text: str, *, count: int = 1, timeout: float = 20.0) -> None:
        if not wait_until(lambda: self.output.count(text) >= count or self.proc.poll() is not None, timeout):
            raise AssertionError(f"{text!r} x{count} not seen in {timeout}s:\n{self.output[-3000:]}")
        assert self.output.count(text) >= count, f"exited {self.proc.returncode}:\n{self.output[-3000:]}"

    def signal(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig``; return the exit code and how long the exit took."""
        started = time.monotonic()
        os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def start_scheduler() -> Iterator[type[SchedulerProcess]]:
    started: list[SchedulerProcess] = []

    class Tracked(SchedulerProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    yield Tracked
    for process in started:
        process.kill()


def emitted(client: redis.Redis, namespace: str, schedule: str) -> list[dict[str, Any]]:
    """The messages ``schedule`` put in its queue, in enqueue order."""
    return [
        m
        for m in queued(client, namespace, QUEUE_OF[schedule])
        if m["options"]["unique_key"].startswith(f"{schedule}:")
    ]


def labels(client: redis.Redis, namespace: str, schedule: str) -> list[str]:
    return [
        m["options"]["unique_key"].removeprefix(f"{schedule}:") for m in emitted(client, namespace, schedule)
    ]


def assert_every_second_once(seconds: list[str]) -> None:
    """Window labels are whole seconds: each once, in order, none missing between the first and last."""
    assert len(seconds) == len(set(seconds)), f"a window was emitted twice: {seconds}"
    moments = [datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ") for s in seconds]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
    assert gaps == [1.0] * len(gaps), f"windows skipped or out of order: {seconds}"


def test_two_replicas_emit_every_window_exactly_once(
    redis_client: redis.Redis, redis_namespace: str, real_env: dict[str, str], start_scheduler: Any
) -> None:
    env = clean_environ({**real_env, **EVERY_SECOND})
    replicas = [start_scheduler({**env, "SCHEDULER_REPLICA_ID": name}) for name in ("one", "two")]
    for replica in replicas:
        replica.wait_for(STARTED)
    # A fixed span: until every schedule has at least 6 windows out.
    assert wait_until(lambda: all(len(labels(redis_client, redis_namespace, s)) >= 6 for s in QUEUE_OF), 20)
    for replica in replicas:
        assert replica.signal(signal.SIGTERM)[0] == 0

    gate = RedisGate(redis_client, redis_namespace, "reader", emitted_ttl_s=1)
    for schedule in QUEUE_OF:
        seconds = labels(redis_client, redis_namespace, schedule)
        assert_every_second_once(seconds)
        # Nothing owed was left behind: the cursor is the last window's fire time.
        cursor = gate.cursor(schedule)
        assert cursor is not None and cursor.window == seconds[-1]
    hourly = emitted(redis_client, redis_namespace, "analytics:hourly")
    for message in hourly:
        kwargs = message["kwargs"]
        start = datetime.fromisoformat(kwargs["start_date"])
        assert datetime.fromisoformat(kwargs["end_date"]) - start == timedelta(seconds=1)
        assert kwargs["aggregation_type"] == "hourly"
    cleanup = emitted(redis_client, redis_namespace, "cleanup:error_logs")
    assert {(m["kwargs"]["cleanup_type"], m["kwargs"]["older_than_days"]) for m in cleanup} == {
        ("error_logs", 30)
    }
    beats = {b["replica"]: b for b in read_heartbeats(redis_client, redis_namespace)}
    assert {name: beat["state"] for name, beat in beats.items()} == {"one": "stopped", "two": "stopped"}


def test_a_scheduler_down_for_5_hours_catches_up_5_windows_once_oldest_first(
    redis_client: redis.Redis, redis_namespace: str, real_env: dict[str, str], start_scheduler: Any
) -> None:
    now = datetime.now(UTC)
    # An hourly cron whose next fire is half an hour away: the test cannot straddle it.
    cron = f"{(now.minute + 30) % 60} * * * *"
    spec = parse_cron(cron)
    last = previous_fire(spec, now)
    assert last is not None
    down_since = last - timedelta(hours=5)
    RedisGate(redis_client, redis_namespace, "before", emitted_ttl_s=60).advance(
        "analytics:hourly", down_since, window_of(spec, down_since).label
    )
    env = clean_environ({**real_env, "SCHEDULE_ANALYTICS_HOURLY_CRON": cron, "SCHEDULER_HEARTBEAT_S": "0.5"})
    # Two replicas start together: the catch-up goes through the same gate.
    replicas = [start_scheduler({**env, "SCHEDULER_REPLICA_ID": name}) for name in ("one", "two")]

    def both_caught_up() -> bool:
        beats = read_heartbeats(redis_client, redis_namespace)
        return len(beats) == 2 and all(
            b["schedules"]["analytics:hourly"]["last_fire"] == iso(last) for b in beats
        )

    assert wait_until(both_caught_up, 20), "\n".join(r.output for r in replicas)
    for replica in replicas:
        assert replica.signal(signal.SIGTERM)[0] == 0

    expected = [window_of(spec, last - timedelta(hours=h)).label for h in range(4, -1, -1)]
    assert labels(redis_client, redis_namespace, "analytics:hourly") == expected
    first = emitted(redis_client, redis_namespace, "analytics:hourly")[0]["kwargs"]
    window = window_of(spec, last - timedelta(hours=4))
    assert (first["start_date"], first["end_date"]) == (window.start.isoformat(), window.end.isoformat())


def test_sigterm_exits_0_quickly_and_a_restart_catches_up_without_duplicates(
    redis_client: redis.Redis, redis_namespace: str, real_env: dict[str, str], start_scheduler: Any
) -> None:
    env = clean_environ({**real_env, **EVERY_SECOND})
    first = start_scheduler(env)
    first.wait_for(STARTED)
    assert wait_until(lambda: len(labels(redis_client, redis_namespace, "analytics:hourly")) >= 3, 15)
    code, took = first.signal(signal.SIGTERM)
    assert code == 0 and took < 5, first.output
    assert "stopping (SIGTERM)" in first.output
    [beat] = read_heartbeats(redis_client, redis_namespace)
    assert beat["state"] == "stopped"
    before = labels(redis_client, redis_namespace, "analytics:hourly")

    # Down for a few seconds, then back: the windows of the gap are owed.
    stopped_at = datetime.now(UTC)
    assert wait_until(lambda: datetime.now(UTC) >= stopped_at + timedelta(seconds=3), 5)
    second = start_scheduler(env)
    second.wait_for("caught up")
    assert wait_until(
        lambda: len(labels(redis_client, redis_namespace, "analytics:hourly")) >= len(before) + 6, 15
    )
    code, took = second.signal(signal.SIGINT)
    assert code == 0 and took < 5, second.output

    for schedule in QUEUE_OF:
        assert_every_second_once(labels(redis_client, redis_namespace, schedule))
    assert labels(redis_client, redis_namespace, "analytics:hourly")[: len(before)] == before


def test_list_prints_the_four_schedules_and_their_next_fire_times(start_scheduler: Any) -> None:
    script = str(Path(sys.executable).parent / "taatom-scheduler")  # the console script
    before = datetime.now(UTC)
    listing = start_scheduler(clean_environ({}), "--list", command=[script])
    assert listing.proc.wait(timeout=20) == 0
    after = datetime.now(UTC)
    listing._reader.join(timeout=5)
    rows = {
        line.split()[0]: line.split() for line in listing.lines if line.startswith(("analytics:", "cleanup:"))
    }
    defaults = {
        "analytics:hourly": "5 * * * *",
        "analytics:daily": "15 0 * * *",
        "cleanup:analytics": "0 3 * * *",
        "cleanup:error_logs": "30 3 * * *",
    }
    assert set(rows) == set(defaults)
    for name, cron in defaults.items():
        spec = parse_cron(cron)
        # The next fire as of some moment while the command ran.
        assert rows[name][len(cron.split()) + 1] in {
            iso(next_fire(spec, before)),
            iso(next_fire(spec, after)),
        }


def test_dry_run_in_embedded_mode_logs_and_enqueues_nothing(
    redis_client: redis.Redis, redis_namespace: str, start_scheduler: Any
) -> None:
    env = clean_environ({**EVERY_SECOND, "REDIS_NAMESPACE": redis_namespace})
    dry = start_scheduler(env, "--dry-run")
    dry.wait_for("[dry-run] would emit analytics:hourly:", count=2)
    code, took = dry.signal(signal.SIGTERM)
    assert code == 0 and took < 5, dry.output
    assert redis_client.keys(f"{redis_namespace}*") == []


def test_embedded_mode_refuses_with_exit_78(start_scheduler: Any) -> None:
    refused = start_scheduler(clean_environ({}))
    assert refused.proc.wait(timeout=20) == 78
    refused._reader.join(timeout=5)
    assert "embedded mode" in refused.output and "ENABLE_BACKGROUND_JOBS=true" in refused.output
