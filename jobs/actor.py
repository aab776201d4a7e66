"""The actor class of every taatom job: validates its payload when sent and when run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dramatiq
from dramatiq.broker import Broker
from dramatiq.message import Message

from middleware import keys
from middleware.errors import VAL_2001, JobError
from middleware.job_result import set_job_result

from .payloads import Payload

JobResult = dict[str, Any]


class JobActor(dramatiq.Actor):  # type: ignore[type-arg]
    """A Dramatiq actor whose keyword arguments follow a :class:`Payload` schema.

    ``send()`` validates and normalises the payload before anything reaches
    Redis, so the app gets a ``VAL_2001`` (or ``FILE_4001``) error at once;
    the worker validates again, since anything may have written to the queue.
    The job function receives the parsed payload.

    Parameters:
      fn: the job logic, taking the parsed payload and returning a JSON dict.
      payload: the payload schema.
      label: how log lines name the job ("image processing").
      sensitive_args: payload keys that never appear in logs, pages or
        (with an encryption key set) Redis in clear.
      validation_context: settings the schema's rules depend on.
    """

    def __init__(
        self,
        fn: Callable[[Any], JobResult],
        *,
        broker: Broker,
        actor_name: str,
        queue_name: str,
        payload: type[Payload],
        label: str,
        sensitive_args: frozenset[str] = frozenset(),
        validation_context: Mapping[str, Any] | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
        priority: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.payload = payload
        self.label = label
        self.sensitive_args = sensitive_args
        self.validation_context = dict(validation_context or {})
        self.max_message_bytes = max_message_bytes
        self.job_fn = fn
        super().__init__(
            self._run,
            broker=broker,
            actor_name=actor_name,
            queue_name=queue_name,
            priority=priority,
            options=options or {},
        )

    def parse(self, kwargs: Mapping[str, Any]) -> Payload:
        return self.payload.parse(kwargs, self.validation_context)

    def message_with_options(
        self, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Message[JobResult]:
        if args:
            raise JobError(VAL_2001, f"{self.actor_name} takes keyword arguments only")
        kwargs = dict(kwargs or {})
        lane = self._lane(kwargs.pop("priority", "normal"))
        payload = self.parse(kwargs)
        message: Message[JobResult] = super().message_with_options(kwargs=payload.to_kwargs(), **options)
        if lane != self.queue_name:
            message = message.copy(queue_name=lane)
        size = len(message.encode())
        if size > self.max_message_bytes:
            raise JobError(
                VAL_2001, f"message is {size} bytes; at most {self.max_message_bytes} are accepted"
            )
        return message

    def _lane(self, priority: object) -> str:
        """``priority="high"`` sends to the queue's high lane, consumed before its backlog."""
        if priority == "normal":
            return self.queue_name
        if priority != "high":
            raise JobError(VAL_2001, f"priority must be 'high' or 'normal', not {priority!r}")
        if self.queue_name not in getattr(self.broker, "high_lanes", ()):
            raise JobError(VAL_2001, f"queue {self.queue_name!r} has no high-priority lane")
        return str(keys.high_lane(self.queue_name))

    def _run(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise JobError(VAL_2001, f"{self.actor_name} takes keyword arguments only")
        # The result goes to the job state, not back to Dramatiq (see middleware.job_result).
        set_job_result(self.job_fn(self.parse(kwargs)))
