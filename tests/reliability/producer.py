"""The app side of a fault test: a thread that keeps sending jobs, as a web app would.

A send that raises a Redis error is counted and tried again with backoff (the
app's own policy, with a ``unique_key`` so that a retry of a send that did
reach Redis is skipped); only sends that returned count as acknowledged, and
every acknowledged job must run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import redis

from jobs.actor import JobActor
from middleware.errors import EnqueueFailed


class Producer(threading.Thread):
    def __init__(self, actor: JobActor, prefix: str, *, per_second: float, **kwargs: object) -> None:
        super().__init__(name=f"producer-{prefix}", daemon=True)
        self.actor = actor
        self.prefix = prefix
        self.interval_s = 1 / per_second
        self.kwargs = kwargs
        self.acknowledged: list[str] = []
        self.failures: Counter[str] = Counter()
        self.unexpected: list[BaseException] = []
        self.outage_s = 0.0  # longest time between a failed send and the next acknowledged one
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        backoff, failing_since = 0.05, None
        i = 0
        while not self.stopped.is_set():
            key = f"{self.prefix}-{i}"
            try:
                # The unique key makes a retried send harmless: a send that timed out may
                # have reached Redis, and then its retry is skipped instead of run twice.
                self.actor.send_with_options(kwargs={"key": key, **self.kwargs}, unique_key=key)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # send() raises EnqueueFailed (SRV_6003), which is also the redis-py error.
                kind = "TimeoutError" if isinstance(exc, redis.TimeoutError) else "ConnectionError"
                if not isinstance(exc, EnqueueFailed) or exc.code != "SRV_6003":
                    self.unexpected.append(exc)
                    return
                with self._lock:
                    self.failures[kind] += 1
                failing_since = failing_since or time.monotonic()
                self.stopped.wait(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            except BaseException as exc:  # anything else is a finding: stop and report it
                self.unexpected.append(exc)
                return
            with self._lock:
                self.acknowledged.append(key)
            if failing_since is not None:
                self.outage_s = max(self.outage_s, time.monotonic() - failing_since)
                failing_since = None
            backoff = 0.05
            i += 1
            self.stopped.wait(self.interval_s)

    def sent(self) -> list[str]:
        with self._lock:
            return list(self.acknowledged)

    def failed(self) -> int:
        with self._lock:
            return sum(self.failures.values())

    def wait_failures(self, count: int, timeout: float) -> bool:
        return _poll(lambda: self.failed() >= count, timeout)

    def wait_sent(self, count: int, timeout: float) -> bool:
        return _poll(lambda: len(self.sent()) >= count, timeout)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
