"""Drive job-state hooks and acks by hand, with the job-state writer held back on demand."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.broker import MessageProxy

from middleware.fleet import FleetBroker, FleetConsumer
from middleware.job_state import JobState


class HeldWriter:
    """Blocks the broker's job-state writer until released: nothing submitted after it is written.

    A process that died (or froze) before writing, as far as Redis can tell.
    """

    def __init__(self, state: JobState, broker: FleetBroker) -> None:
        self.released = threading.Event()
        blocking = threading.Event()

        def block(pipe: Any) -> None:
            blocking.set()
            self.released.wait(30)

        state._writer_for(broker).submit_commands(block)
        assert blocking.wait(10), "the job-state writer never reached the block"

    def release(self) -> None:
        self.released.set()


def run_delivery(
    state: JobState, broker: FleetBroker, consumer: FleetConsumer, *, raised: bool = False
) -> MessageProxy:
    """One delivery through the job-state hooks and the ack, as a worker thread does it."""
    message = next(consumer)
    assert message is not None
    state.before_process_message(broker, message)
    if raised:
        # Retried: the retry middleware queued the next attempt; the message is not failed.
        state.after_process_message(broker, message, exception=RuntimeError("transient"))
    else:
        state.after_process_message(broker, message, result={"n": message.args[0]})
    consumer.ack(message)
    return message
