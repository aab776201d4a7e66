"""What operators do to the fleet: retry, delete and purge dead letters; pause and resume.

Taking a dead letter is atomic (a Lua script removes it and returns it), so
two operators retrying the same one cannot run it twice. A retried message
keeps its id (its job page goes on) and starts again at attempt 1, through
the same enqueue path as any message (state, sealing, wake-ups).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from dramatiq.message import Message

from middleware import keys
from middleware.fleet import FleetBroker
from middleware.job_state import JobStateReader
from middleware.queue_control import QueueControl, promote_job

# options describing a past failure; a retried message starts clean
_OUTCOME_OPTIONS = (
    "error_code",
    "error",
    "attempts",
    "failed_at",
    "retry_at",
    "last_error",
    "last_error_code",
    "attempt",
    "eta",
    "redis_message_id",
)

_TAKE = """
local taken = {}
for i = 1, #ARGV do
    if redis.call("zrem", KEYS[1], ARGV[i]) == 1 then
        local data = redis.call("hget", KEYS[2], ARGV[i])
        redis.call("hdel", KEYS[2], ARGV[i])
        if data then
            taken[#taken + 1] = ARGV[i]
            taken[#taken + 1] = data
        end
    end
end
return taken
"""

Progress = Callable[[int, int], None]
BATCH = 200


class Operator:
    def __init__(self, broker: FleetBroker, queues: tuple[str, ...]) -> None:
        self.broker = broker
        self.client = broker.client
        self.ns = broker.namespace
        self.queues = queues
        self.control = QueueControl(self.client, self.ns, frozenset(queues))
        self.state = JobStateReader(self.client, self.ns, socket_timeout_s=30.0)
        self._take = self.client.register_script(_TAKE)

    def _check(self, queue: str) -> str:
        if queue not in self.queues:
            raise KeyError(f"unknown queue {queue!r}; known: {', '.join(self.queues)}")
        return queue

    def _take_dead(self, queue: str, redis_ids: list[str]) -> list[tuple[str, bytes]]:
        flat: list[Any] = self._take(
            keys=[keys.dead_letters(self.ns, queue), keys.dead_letter_messages(self.ns, queue)],
            args=redis_ids,
        )
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    def _requeue(self, raw: bytes) -> str:
        old = Message.decode(raw)
        options = {k: v for k, v in old.options.items() if k not in _OUTCOME_OPTIONS}
        # A new generation: its transitions sort after everything the dead one recorded.
        options["generation"] = int(old.options.get("generation", 0)) + 1
        fresh: Message[Any] = Message(
            queue_name=keys.canonical(old.queue_name),
            actor_name=old.actor_name,
            args=old.args,
            kwargs=old.kwargs,
            options=options,
            message_id=old.message_id,
            message_timestamp=old.message_timestamp,
        )
        self.broker.enqueue(fresh)
        return fresh.message_id

    def retry_dead(self, queue: str, redis_id: str) -> str | None:
        """Put one dead letter back on its queue; returns its message id, or None if it was gone."""
        taken = self._take_dead(self._check(queue), [redis_id])
        return self._requeue(taken[0][1]) if taken else None

    def delete_dead(self, queue: str, redis_id: str) -> bool:
        return bool(self._take_dead(self._check(queue), [redis_id]))

    def _dead_ids(self, queue: str, older_than_ms: int | None, now_ms: int | None) -> list[str]:
        zkey = keys.dead_letters(self.ns, queue)
        if older_than_ms is None:
            ids = cast(list[bytes], self.client.zrange(zkey, 0, -1))
        else:
            cutoff = (now_ms or int(time.time() * 1000)) - older_than_ms
            ids = cast(list[bytes], self.client.zrangebyscore(zkey, "-inf", cutoff))
        return [i.decode() for i in ids]

    def retry_all_dead(
        self,
        queue: str,
        *,
        older_than_ms: int | None = None,
        now_ms: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Retry every dead letter of ``queue`` (failed more than ``older_than_ms`` ago, if given)."""
        ids = self._dead_ids(self._check(queue), older_than_ms, now_ms)
        done = 0
        for i in range(0, len(ids), BATCH):
            for _, raw in self._take_dead(queue, ids[i : i + BATCH]):
                self._requeue(raw)
                done += 1
            if progress is not None:
                progress(min(i + BATCH, len(ids)), len(ids))
        return done

    def purge_dead(
        self,
        queue: str,
        *,
        older_than_ms: int | None = None,
        now_ms: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        ids = self._dead_ids(self._check(queue), older_than_ms, now_ms)
        done = 0
        for i in range(0, len(ids), BATCH):
            done += len(self._take_dead(queue, ids[i : i + BATCH]))
            if progress is not None:
                progress(min(i + BATCH, len(ids)), len(ids))
        return done

    def promote(self, message_id: str) -> bool:
        """Run a delayed or retry-waiting job now; False if it is in no such state."""
        return promote_job(self.state, message_id)

    def pause(self, queue: str) -> None:
        self.control.pause(queue)

    def resume(self, queue: str) -> None:
        self.control.resume(queue)
