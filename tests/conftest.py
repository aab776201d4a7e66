"""Shared fixtures: real services, settings factories and an embedded-mode stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from jobs.actors import Actors, declare_actors
from jobs.api import JobsAPI
from jobs.embedded import EmbeddedWorker
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.wiring import build_broker, embedded_worker
from middleware.fleet import FleetBroker
from tests.services.http import *  # noqa: F403
from tests.services.mongo import *  # noqa: F403
from tests.services.redis_db import *  # noqa: F403
from tests.services.redis_db import REDIS_TEST_URL
from tests.services.sentry_sink import *  # noqa: F403
from tests.services.smtp import *  # noqa: F403
from tests.services.workers import *  # noqa: F403

# Fast policy for tests: retries come due in tens of milliseconds.
FAST_POLICY = {
    "JOBS_BACKOFF_MIN_MS": "50",
    "JOBS_BACKOFF_MAX_MS": "400",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture
def real_env(redis_namespace: str) -> dict[str, str]:
    """Environment variables of a real-mode stack on the test Redis, in this test's namespace."""
    return {
        "ENABLE_BACKGROUND_JOBS": "true",
        "REDIS_URL": REDIS_TEST_URL,
        "REDIS_NAMESPACE": redis_namespace,
        **FAST_POLICY,
    }


@dataclass
class Stack:
    """A broker with the four actors declared on it, as `import jobs` would build it."""

    settings: Settings
    broker: FleetBroker
    actors: Actors
    runtime: Runtime
    api: JobsAPI

    @property
    def embedded(self) -> EmbeddedWorker | None:
        return embedded_worker(self.broker)

    def join(self, timeout_ms: int = 20_000) -> None:
        worker = self.embedded
        assert worker is not None, "join() drains the embedded worker; real workers run elsewhere"
        worker.join(self.broker, timeout_ms)


@pytest.fixture
def make_stack() -> Iterator[Callable[[dict[str, str]], Stack]]:
    built: list[Stack] = []

    def make(env: dict[str, str]) -> Stack:
        settings = Settings.from_mapping(env)
        broker = build_broker(settings)
        runtime = Runtime(settings)
        actors = declare_actors(broker, settings, runtime)
        stack = Stack(settings, broker, actors, runtime, JobsAPI(broker, settings))
        built.append(stack)
        return stack

    yield make
    for stack in built:
        if stack.embedded is not None:
            stack.embedded.stop()
        stack.broker.close()
        stack.runtime.close()


@pytest.fixture
def embedded_stack(make_stack: Callable[[dict[str, str]], Stack], tmp_path: object) -> Stack:
    """Embedded mode: no Redis, MongoDB or SMTP server; jobs run on in-process threads."""
    return make_stack({"EMBEDDED_DATA_DIR": str(tmp_path), **FAST_POLICY})
