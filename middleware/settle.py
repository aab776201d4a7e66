"""Acks that wait for the outcome: a finished message leaves Redis once its outcome is recorded.

Dramatiq deletes a message when it is acked, and our job state is written a
few milliseconds later, in batches (``job_state.StateWriter``). A worker
killed in between would leave a job that ran shown as ``queued`` or
``running`` for good, with nothing left to run it again. So the job-state
middleware marks a finished message with the writer that records its
outcome; the fleet consumer then acks it with ``keep`` (the slot is freed
and the next message taken, but the message stays in the worker's ack set)
and hands it to that writer, which forgets it in the round trip that writes
the outcome. If the worker dies first, dead-worker recovery runs the job
again: the at-least-once guarantee Dramatiq gives a worker killed just
before its ack, kept until the outcome is safe.
"""

from __future__ import annotations

from collections.abc import Callable

from dramatiq.broker import MessageProxy

#: Takes (queue name, redis message id) of a message acked with ``keep``.
Settle = Callable[[str, str], None]

_ATTRIBUTE = "_taatom_settle"


def settle_after_outcome(message: MessageProxy, settle: Settle) -> None:
    """Mark ``message`` (one delivery of it) to be forgotten by ``settle`` once its outcome is written."""
    # On the proxy, which lives exactly as long as this delivery: the middleware
    # instance is shared by every worker thread.
    message.__dict__[_ATTRIBUTE] = settle


def settle_of(message: MessageProxy) -> Settle | None:
    """The mark :func:`settle_after_outcome` left on ``message``, if any."""
    settle: Settle | None = message.__dict__.get(_ATTRIBUTE)
    return settle
