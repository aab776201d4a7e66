"""The scheduler daemon in process, with an injected clock, against real Redis.

A Redis outage is a real one: the daemon talks to Redis through a TCP proxy
that the test cuts and restores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from jobs.settings import Settings
from scheduler import keys
from scheduler.cli import main, render_schedule
from scheduler.daemon import Daemon
from scheduler.gate import Cursor, RedisGate
from scheduler.health import read_heartbeats
from scheduler.schedules import build_schedules
from scheduler.wiring import build_daemon
from tests.services.redis_db import REDIS_TEST_DB, REDIS_TEST_HOST, REDIS_TEST_PORT
from tests.test_scheduler_gate import queued

T0 = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
H = timedelta(hours=1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


MakeDaemon = Callable[..., tuple[Daemon, Clock]]


@pytest.fixture
def make_daemon() -> Iterator[MakeDaemon]:
    built: list[Daemon] = []

    def make(env: dict[str, str], *, at: datetime = T0, dry_run: bool = False) -> tuple[Daemon, Clock]:
        clock = Clock(at)
        daemon = build_daemon(Settings.from_mapping(env), dry_run=dry_run, clock=clock)
        daemon.draw_jitter = lambda: 0.0
        built.append(daemon)
        return daemon, clock

    yield make
    for daemon in built:
        daemon.close()


def unique_keys(client: redis.Redis, namespace: str, queue: str) -> list[str]:
    return [m["options"]["unique_key"] for m in queued(client, namespace, queue)]


def test_tick_catches_up_and_the_heartbeat_shows_next_and_last_fires(
    redis_client: redis.Redis, redis_namespace: str, real_env: dict[str, str], make_daemon: MakeDaemon
) -> None:
    env = {**real_env, "SCHEDULER_REPLICA_ID": "replica-a", "SCHEDULER_HEARTBEAT_S": "2"}
    daemon, _ = make_daemon(env)
    assert daemon.tick(T0) == 2.0  # first start: cursors begin now, nothing owed
    assert unique_keys(redis_client, redis_namespace, "analytics") == []

    assert daemon.tick(T0 + 14 * H) == 2.0  # 00:30 next day
    analytics = unique_keys(redis_client, redis_namespace, "analytics")
    hourly = [f"analytics:hourly:2026-01-01T{h:02}:00Z" for h in range(10, 24)]
    assert analytics == [*hourly, "analytics:daily:2026-01-01"]

    [beat] = read_heartbeats(redis_client, redis_namespace)
    assert beat["replica"] == "replica-a" and beat["state"] == "running" and beat["pid"] == os.getpid()
    assert beat["updated_at"] == "2026-01-02T00:30:00Z"
    assert beat["schedules"]["analytics:hourly"] == {
        "cron": "5 * * * *",
        "actor": "aggregate_analytics",
        "next_fire": "2026-01-02T01:05:00Z",
        "next_window": "analytics:hourly:2026-01-02T00:00Z",
        "last_fire": "2026-01-02T00:05:00Z",
        "last_window": "analytics:hourly:2026-01-01T23:00Z",
    }
    assert beat["schedules"]["analytics:daily"]["last_window"] == "analytics:daily:2026-01-01"
    assert beat["schedules"]["cleanup:analytics"]["next_fire"] == "2026-01-02T03:00:00Z"
    assert beat["schedules"]["cleanup:analytics"]["last_fire"] is None  # nothing emitted yet
    assert 0 < redis_client.pttl(keys.heartbeat(redis_namespace, "replica-a")) <= 6000


def test_clock_going_back_emits_nothing_twice(
    redis_client: redis.Redis,
    redis_namespace: str,
    real_env: dict[str, str],
    make_daemon: MakeDaemon,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="scheduler")
    daemon, _ = make_daemon(real_env)
    daemon.monotonic = lambda: 0.0  # the wall clock moves, the monotonic one does not
    daemon.tick(T0)
    daemon.tick(T0 + 2 * H)  # 11:05 and 12:05 fired
    daemon.tick(T0)  # NTP pulls the clock back two hours
    daemon.tick(T0 + H)
    daemon.tick(T0 + 2 * H)
    daemon.tick(T0 + 3 * H)  # 13:05 is new
    assert unique_keys(redis_client, redis_namespace, "analytics") == [
        "analytics:hourly:2026-01-01T10:00Z",
        "analytics:hourly:2026-01-01T11:00Z",
        "analytics:hourly:2026-01-01T12:00Z",
    ]
    assert "The wall clock jumped -7200.0s" in caplog.text


def test_a_cursor_lost_by_redis_is_restored_from_memory_not_from_now(
    redis_client: redis.Redis, redis_namespace: str, real_env: dict[str, str], make_daemon: MakeDaemon
) -> None:
    daemon, _ = make_daemon(real_env)
    daemon.tick(T0)
    daemon.tick(T0 + H)
    # Redis restarted without persistence: the scheduler's keys are gone.
    redis_client.delete(*redis_client.keys(f"{redis_namespace}:scheduler:*"))
    daemon.tick(T0 + 3 * H)
    assert unique_keys(redis_client, redis_namespace, "analytics") == [
        "analytics:hourly:2026-01-01T10:00Z",
        "analytics:hourly:2026-01-01T11:00Z",
        "analytics:hourly:2026-01-01T12:00Z",
    ]


class Proxy:
    """A TCP proxy to the test Redis that can be cut (connections reset) and restored."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                conn.close()
                continue
            upstream = socket.create_connection((REDIS_TEST_HOST, REDIS_TEST_PORT))
            with self._lock:
                self._sockets += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


def test_redis_outage_is_logged_retried_with_backoff_then_caught_up(
    redis_client: redis.Redis,
    redis_namespace: str,
    real_env: dict[str, str],
    make_daemon: MakeDaemon,
    proxy: Proxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    env = {
        **real_env,
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{REDIS_TEST_DB}",
        "SCHEDULER_HEARTBEAT_S": "5",
    }
    daemon, _ = make_daemon(env)
    assert daemon.tick(T0) == 5.0

    proxy.cut()
    delays = [daemon.tick(T0 + 3 * H) for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    daemon.fire("analytics:hourly")  # an on-time fire during the outage neither raises nor emits
    assert "Redis unavailable (ConnectionError" in caplog.text
    assert unique_keys(redis_client, redis_namespace, "analytics") == []

    proxy.restore()
    assert daemon.tick(T0 + 3 * H) == 5.0
    assert unique_keys(redis_client, redis_namespace, "analytics") == [
        "analytics:hourly:2026-01-01T10:00Z",
        "analytics:hourly:2026-01-01T11:00Z",
        "analytics:hourly:2026-01-01T12:00Z",
    ]
    assert daemon.failures == 0
    assert "Redis answers again after 4 failed passes" in caplog.text


def test_dry_run_logs_what_catching_up_would_emit_and_writes_nothing(
    redis_client: redis.Redis,
    redis_namespace: str,
    real_env: dict[str, str],
    make_daemon: MakeDaemon,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    RedisGate(redis_client, redis_namespace, "earlier", emitted_ttl_s=60).advance(
        "analytics:hourly", datetime(2026, 1, 1, 8, 5, tzinfo=UTC), "2026-01-01T07:00Z"
    )  # last fire 08:05
    before = sorted(redis_client.keys(f"{redis_namespace}*"))
    daemon, _ = make_daemon({**real_env, "SCHEDULER_REPLICA_ID": "dry"}, dry_run=True)
    daemon.tick(T0)
    assert "[dry-run] would emit analytics:hourly:2026-01-01T08:00Z: aggregate_analytics(" in caplog.text
    assert "[dry-run] would emit analytics:hourly:2026-01-01T09:00Z" in caplog.text
    assert "would emit analytics:hourly:2026-01-01T07:00Z" not in caplog.text
    assert sorted(redis_client.keys(f"{redis_namespace}*")) == before
    assert RedisGate(redis_client, redis_namespace, "x", emitted_ttl_s=60).cursor(
        "analytics:hourly"
    ) == Cursor(datetime(2026, 1, 1, 8, 5, tzinfo=UTC), "2026-01-01T07:00Z")


# --- the command line, in process ----


def test_embedded_mode_refuses_to_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], environ={"ENV_FILE": os.devnull}) == 78
    err = capsys.readouterr().err
    assert "embedded mode" in err and "ENABLE_BACKGROUND_JOBS=true" in err


def test_invalid_cron_fails_at_start_naming_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {
        "ENV_FILE": os.devnull,
        "ENABLE_BACKGROUND_JOBS": "true",
        "SCHEDULE_CLEANUP_ANALYTICS_CRON": "0 3 * *",
    }
    assert main([], environ=environ) == 78
    err = capsys.readouterr().err
    assert "SCHEDULE_CLEANUP_ANALYTICS_CRON='0 3 * *': must be a cron expression of 5 fields" in err


def test_list_works_in_embedded_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"], environ={"ENV_FILE": os.devnull}) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:5]] == [
        "analytics:hourly",
        "analytics:daily",
        "cleanup:analytics",
        "cleanup:error_logs",
    ]


def test_list_shows_four_schedules_with_next_fire_and_window() -> None:
    settings = Settings.from_mapping({})
    now = datetime(2026, 12, 31, 23, 10, tzinfo=UTC)
    rows = {
        line.split()[0]: line
        for line in render_schedule(build_schedules(settings), settings, now).splitlines()
    }
    assert "2027-01-01T00:05:00Z  2026-12-31T23:00:00Z .. 2027-01-01T00:00:00Z" in rows["analytics:hourly"]
    assert "2027-01-01T00:15:00Z  2026-12-31T00:00:00Z .. 2027-01-01T00:00:00Z" in rows["analytics:daily"]
    assert "2027-01-01T03:00:00Z" in rows["cleanup:analytics"]
    assert "cleanup(cleanup_type='analytics', older_than_days=90)" in rows["cleanup:analytics"]
    assert "2027-01-01T03:30:00Z" in rows["cleanup:error_logs"]
    assert "cleanup(cleanup_type='error_logs', older_than_days=30)" in rows["cleanup:error_logs"]
    assert rows["as"].startswith("as of 2026-12-31T23:10:00Z; look-back 48 h, misfire grace 60 s")
