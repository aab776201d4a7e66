"""Acks that wait for the outcome: a finished message leaves Redis once its outcome is recorded.

Dramatiq deletes a message when it is acked, and our job state is written a
few milliseconds later, in batches (``job_state.StateWriter``). A worker
killed in between would leave a job that ran shown as ``queued`` or
``running`` for good, with nothing left to run it again. So the job-state
middleware marks a finished message with a :class:`PendingOutcome`; the
fleet consumer then acks it with ``keep`` (the slot is freed and the next
message taken, but the message stays in the worker's ack set) and hands it
to the writer, which forgets it in the round trip that writes the outcome.
If the worker dies first, dead-worker recovery runs the job again: the
at-least-once guarantee Dramatiq gives a worker killed just before its ack,
kept until the outcome is safe. Other middleware can write what goes with
the outcome (a unique job's ``done:`` marker) in the same round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dramatiq.broker import MessageProxy

_ATTRIBUTE = "_taatom_pending_outcome"


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    """A delivery whose outcome is on its way to Redis, and the writer taking it there."""

    #: Takes (queue name, redis message id) of the message acked with ``keep``.
    settle: Callable[[str, str], None]
    #: Takes a write (a function of a pipeline) to make after the outcome, before the settle.
    write_after: Callable[[Callable[[Any], None]], None]


def settle_after_outcome(message: MessageProxy, pending: PendingOutcome) -> None:
    """Mark ``message`` (one delivery of it) to be forgotten once its outcome is written."""
    # On the proxy, which lives exactly as long as this delivery: the middleware
    # instance is shared by every worker thread.
    message.__dict__[_ATTRIBUTE] = pending


def pending_outcome(message: MessageProxy) -> PendingOutcome | None:
    """The mark :func:`settle_after_outcome` left on ``message``, if any."""
    pending: PendingOutcome | None = message.__dict__.get(_ATTRIBUTE)
    return pending
