"""Fixtures of the reliability tier: Redis servers of its own, supervised worker groups, a report file.

Every test here is marked ``slow`` and ``reliability``. Everything a test
starts (redis-server, Sentinels, worker groups) is stopped at teardown, also
when the test fails. Measured figures are printed and appended to
``test-artifacts/reliability.txt`` (git-ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.services.redis_db import REDIS_TEST_URL
from tests.services.workers import clean_environ
from tests.support.redis_inspect import wait_until

from .ledger import Ledger
from .servers import RedisServer, SentinelCluster
from .supervise import EntrypointGroup, Supervisor

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "test-artifacts"
REPORT = ARTIFACTS / "reliability.txt"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.reliability)


def report(test: str, *lines: str) -> str:
    """Print measured figures and append them to the report file; returns them as one text."""
    text = "\n".join(lines)
    ARTIFACTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    with REPORT.open("a") as out:
        out.write(f"[{stamp}] {test}\n" + "".join(f"  {line}\n" for line in lines))
    print(f"\n[{test}]\n{text}")
    return text


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_server(name, **options)`` starts a redis-server (AOF on) of this test's own."""
    started: list[RedisServer] = []

    def start(name: str = "redis", **options: object) -> RedisServer:
        server = RedisServer(tmp_path / name, **options)  # type: ignore[arg-type]
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path / "sentinel")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def supervisors() -> Iterator[Callable[..., Supervisor]]:
    """``supervisors(name, env, ...)`` runs a worker group under restart-always; all stopped at teardown."""
    started: list[Supervisor] = []

    def start(name: str, env: dict[str, str], **options: object) -> Supervisor:
        supervisor = Supervisor(name, clean_environ(env), **options)  # type: ignore[arg-type]
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop()


@pytest.fixture
def groups() -> Iterator[Callable[..., EntrypointGroup]]:
    """``groups(env, processes=, threads=, role=)`` starts an unsupervised group (or the scheduler).

    All are stopped at teardown."""
    started: list[EntrypointGroup] = []

    def start(
        env: dict[str, str],
        *,
        processes: int = 1,
        threads: int = 2,
        args: tuple[str, ...] = ("tests.reliability.ledger_worker",),
        role: str = "worker",
    ) -> EntrypointGroup:
        group = EntrypointGroup(clean_environ(env), args, processes, threads, role=role)
        started.append(group)
        return group

    yield start
    for group in started:
        if group.proc.poll() is None:
            group.stop()


@pytest.fixture
def ledger(redis_client: redis.Redis, redis_namespace: str) -> Ledger:
    """The ledger on the shared test Redis, in this test's namespace (deleted at teardown)."""
    return Ledger(redis_client, redis_namespace)


@pytest.fixture
def ledger_env(redis_namespace: str) -> dict[str, str]:
    """Worker variables that point the ledger actors at :func:`ledger`, whatever Redis the broker uses."""
    return {"RELIABILITY_LEDGER_URL": REDIS_TEST_URL, "RELIABILITY_LEDGER_NS": redis_namespace}


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """:func:`wait_until` with this tier's coarser polling (its waits run to tens of seconds)."""
    return wait_until(predicate, timeout=timeout, interval=interval)
