"""Bulk enqueue: validate every payload first, then enqueue all in pipelined round trips."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dramatiq.message import Message

from middleware.errors import VAL_2001, JobError
from middleware.fleet import FleetBroker

from .actor import JobActor

MAX_REPORTED = 20


class BulkValidationError(JobError):
    """Some payloads of a bulk send were refused; nothing was enqueued.

    ``invalid`` maps each refused payload's index to its error (the first
    ``MAX_REPORTED`` of them; ``count`` says how many there were in all).
    """

    def __init__(self, invalid: dict[int, JobError], count: int) -> None:
        self.invalid = invalid
        self.count = count
        first = ", ".join(f"#{i} {e.code}" for i, e in list(invalid.items())[:5])
        super().__init__(VAL_2001, f"{count} of the payloads are invalid ({first}); nothing was enqueued")


def send_many(actor: JobActor, payloads: Iterable[Mapping[str, Any]], **options: Any) -> list[Message[Any]]:
    """Send one message per payload, all or nothing on validation.

    Every payload is validated (as ``actor.send()`` would) before anything
    reaches Redis; then messages go out in chunks of 500 per round trip.
    Returns the enqueued messages, in order.
    """
    messages: list[Message[Any]] = []
    invalid: dict[int, JobError] = {}
    count = 0
    for index, kwargs in enumerate(payloads):
        try:
            messages.append(actor.message_with_options(kwargs=dict(kwargs), **options))
        except JobError as exc:
            count += 1
            if len(invalid) < MAX_REPORTED:
                invalid[index] = exc
    if invalid:
        raise BulkValidationError(invalid, count)
    broker = actor.broker
    if not isinstance(broker, FleetBroker):
        return [broker.enqueue(message) for message in messages]
    return broker.enqueue_many(messages)
