"""Pause and resume queues; read per-queue running counts.

A paused queue's name sits in ``{ns}:paused``; the fleet consumer's fetch
checks it atomically, so while paused no message of the queue starts, none
is lost, and no attempt is spent.
"""

from __future__ import annotations

import redis

from . import keys
from .job_state import JobStateReader


class QueueControl:
    def __init__(self, client: redis.Redis, namespace: str, queues: frozenset[str]) -> None:
        self.client = client
        self.namespace = namespace
        self.queues = queues

    def _check(self, queue: str) -> str:
        if queue not in self.queues:
            raise KeyError(f"unknown queue {queue!r}; known: {', '.join(sorted(self.queues))}")
        return queue

    def pause(self, queue: str) -> None:
        self.client.sadd(keys.paused(self.namespace), self._check(queue))

    def resume(self, queue: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.srem(keys.paused(self.namespace), self._check(queue))
        # Wake the consumers that went idle while the queue was paused.
        pipe.rpush(keys.wake(self.namespace, queue), *([b"1"] * 16))
        pipe.ltrim(keys.wake(self.namespace, queue), -64, -1)
        pipe.execute()

    def paused(self) -> set[str]:
        members: set[bytes] = self.client.smembers(keys.paused(self.namespace))  # type: ignore[assignment]
        return {q.decode() for q in members}

    def running(self, queue: str) -> int:
        """Messages of ``queue`` holding a live concurrency lease right now."""
        return int(self.client.zcard(keys.slots(self.namespace, self._check(queue))))


def promote(client: redis.Redis, namespace: str, message_id: str, queue: str) -> None:
    """Ask the fleet to run a delayed or retry-waiting job now.

    The delayed-queue consumer holding it (or about to fetch it) sees the
    mark on its next check, which the wake-up tokens trigger at once.
    """
    pipe = client.pipeline(transaction=False)
    pipe.sadd(keys.promoted(namespace), message_id)
    pipe.expire(keys.promoted(namespace), 86_400)
    for lane in (queue, keys.high_lane(queue)):
        wake_key = keys.wake(namespace, keys.delayed(lane))
        pipe.rpush(wake_key, *([b"1"] * 16))
        pipe.ltrim(wake_key, -64, -1)
    pipe.execute()


def promote_job(state: JobStateReader, message_id: str) -> bool:
    """Promote the job if it waits for a delay or a retry; False otherwise."""
    status = state.status(message_id)
    if status is None or status["state"] not in ("delayed", "retrying") or not status["queue"]:
        return False
    promote(state.client, state.namespace, message_id, status["queue"])
    return True
