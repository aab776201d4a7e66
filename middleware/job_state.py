"""Job state and results in Redis, readable by the app with ``status()`` and ``result()``.

Each message has a hash ``{ns}:job:{id}`` (state, queue, actor, attempts,
timestamps, error code, sanitized error and result) and a history list of
``{state, at}`` entries, both expiring after the configured TTL. States:
``queued``, ``delayed``, ``running``, ``retrying`` (with ``retry_at``),
``succeeded`` (with ``result``), ``failed`` (with ``error_code`` and
``attempts``), ``dead`` (in the dead-letter queue), ``skipped`` (a duplicate
of a unique job). Every write of a transition is one pipelined round trip.
"""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from . import keys, metrics
from .errors import JobError
from .job_result import take_job_result
from .sanitize import redact
from .secrets_scope import sensitive_args_of

FINAL_STATES = frozenset({"succeeded", "failed", "dead", "skipped"})
_started: ContextVar[float | None] = ContextVar("taatom_state_started", default=None)
_TIMESTAMPS = ("enqueued_at", "started_at", "finished_at", "retry_at", "updated_at")
MAX_RESULT_BYTES = 64 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


class JobState(Middleware):
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    def _write(
        self,
        broker: Broker,
        message: Message[Any] | MessageProxy,
        state: str,
        *,
        done: bool = False,
        outcome: tuple[str, str] | None = None,
        **fields: Any,
    ) -> None:
        """One pipelined round trip: the state hash, its history, the done signal, the fleet counters."""
        ns = broker.namespace  # type: ignore[attr-defined]
        now = _now_ms()
        job_key = keys.job(ns, message.message_id)
        history = keys.job_history(ns, message.message_id)
        mapping = {"state": state, "updated_at": now, **{k: v for k, v in fields.items() if v is not None}}
        pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
        pipe.hset(job_key, mapping={k: _encode(v) for k, v in mapping.items()})
        pipe.rpush(history, json.dumps({"state": state, "at": now}))
        pipe.expire(job_key, self.ttl_s)
        pipe.expire(history, self.ttl_s)
        if done:
            done_key = keys.job_done(ns, message.message_id)
            pipe.rpush(done_key, state)
            pipe.expire(done_key, self.ttl_s)
        if outcome is not None:
            started = _started.get()
            metrics.record_outcome(
                pipe,
                ns,
                actor=message.actor_name,
                queue=keys.canonical(message.queue_name),
                outcome=outcome[0],
                code=outcome[1],
                duration_s=None if started is None else time.perf_counter() - started,
                now_ms=now,
            )
        pipe.execute()

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        retry_at = message.options.get("retry_at")
        if delay is not None and retry_at is not None:
            state = "retrying"
        elif delay is not None:
            state = "delayed"
        else:
            state = "queued"
        self._write(
            broker,
            message,
            state,
            queue=keys.canonical(message.queue_name),
            actor=message.actor_name,
            # where the stored message is, for operators' job pages
            redis_id=message.options.get("redis_message_id"),
            enqueued_at=message.message_timestamp,
            retry_at=retry_at if state == "retrying" else (_now_ms() + delay if delay else None),
            attempts=int(message.options.get("attempt", 1)) - 1,
            error_code=message.options.get("last_error_code"),
            error=message.options.get("last_error"),
        )

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._write(
            broker, message, "running", started_at=_now_ms(), attempts=int(message.options.get("attempt", 1))
        )

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            result = take_job_result() if result is None else result
            sensitive = sensitive_args_of(broker, message.actor_name)
            self._write(
                broker,
                message,
                "succeeded",
                done=True,
                outcome=("succeeded", ""),
                finished_at=_now_ms(),
                result=_bounded_result(redact(result, extra_keys=sensitive)),
                error_code="",
                error="",
            )
        else:
            take_job_result()
        if exception is not None and message.failed:
            self._write(
                broker,
                message,
                "failed",
                done=True,
                outcome=("failed", str(message.options.get("error_code", ""))),
                finished_at=_now_ms(),
                error_code=message.options.get("error_code"),
                error=message.options.get("error"),
                attempts=message.options.get("attempts"),
            )
        elif exception is not None:
            # A retry was scheduled (its enqueue wrote "retrying"); count it.
            self._count(broker, message, "retried", str(message.options.get("last_error_code", "")))

    def _count(self, broker: Broker, message: MessageProxy, outcome: str, code: str) -> None:
        pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
        metrics.record_outcome(
            pipe,
            broker.namespace,  # type: ignore[attr-defined]
            actor=message.actor_name,
            queue=keys.canonical(message.queue_name),
            outcome=outcome,
            code=code,
            now_ms=_now_ms(),
        )
        pipe.execute()

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._write(broker, message, "dead", outcome=("dead", str(message.options.get("error_code", ""))))

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._write(broker, message, "skipped", done=True, finished_at=_now_ms())


def _encode(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, default=str)


def _bounded_result(result: Any) -> str:
    text = json.dumps(result, default=str)
    if len(text) > MAX_RESULT_BYTES:
        return json.dumps({"truncated": True, "bytes": len(text)})
    return text


class JobNotFound(LookupError):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"no job {message_id!r} (never sent, or its state expired)")


class ResultTimeout(TimeoutError):
    def __init__(self, message_id: str, timeout_s: float, state: str) -> None:
        self.message_id, self.timeout_s, self.state = message_id, timeout_s, state
        super().__init__(f"job {message_id} has no result after {timeout_s:g}s (state: {state})")


class JobSkipped(LookupError):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"job {message_id} was skipped: another message with its unique_key ran")


class JobStateReader:
    """The app's view of job state: ``status()`` and ``result()``."""

    def __init__(self, client: redis.Redis, namespace: str, *, socket_timeout_s: float) -> None:
        self.client = client
        self.namespace = namespace
        # A blocking read must end before the socket gives up on it.
        self.max_block_s = max(0.1, min(5.0, socket_timeout_s - 1.0))

    def status(self, message_id: str) -> dict[str, Any] | None:
        ns = self.namespace
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.job(ns, message_id))
        pipe.lrange(keys.job_history(ns, message_id), 0, -1)
        raw, history = pipe.execute()
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        status: dict[str, Any] = {
            "id": message_id,
            "state": fields.get("state"),
            "queue": fields.get("queue"),
            "actor": fields.get("actor"),
            "attempts": int(fields.get("attempts") or 0),
            "error_code": fields.get("error_code") or None,
            "error": fields.get("error") or None,
            "result": json.loads(fields["result"]) if fields.get("result") else None,
            "redis_id": fields.get("redis_id"),
            "history": [
                {"state": e["state"], "at": _datetime(e["at"])} for e in (json.loads(h) for h in history)
            ],
        }
        for name in _TIMESTAMPS:
            status[name] = _datetime(fields.get(name))
        return status

    def result(self, message_id: str, timeout: float = 30.0) -> Any:
        """Wait up to ``timeout`` seconds for the job to finish and return its result.

        Raises :class:`JobError` (with the job's code) if it failed,
        :class:`JobSkipped` for a duplicate of a unique job,
        :class:`ResultTimeout` if it has not finished in time and
        :class:`JobNotFound` for an unknown id.
        """
        deadline = time.monotonic() + timeout
        done_key = keys.job_done(self.namespace, message_id)
        while True:
            status = self.status(message_id)
            if status is None:
                raise JobNotFound(message_id)
            state = status["state"]
            if state == "succeeded":
                return status["result"]
            if state in ("failed", "dead"):
                raise JobError(status["error_code"] or "SRV_6001", status["error"] or "job failed")
            if state == "skipped":
                raise JobSkipped(message_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(message_id, timeout, state)
            # Block until the job signals a final state; put the signal back
            # for any other waiter.
            popped = self.client.blpop([done_key], timeout=min(remaining, self.max_block_s))
            if popped is not None:
                self.client.rpush(done_key, popped[1])


def _datetime(value: str | int | None) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
