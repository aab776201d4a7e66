"""What the app calls besides ``actor.send()``: job status and results, pausing queues."""

from __future__ import annotations

from typing import Any

from middleware.fleet import FleetBroker
from middleware.job_state import JobStateReader
from middleware.queue_control import QueueControl, promote_job

from .settings import QUEUES, Settings


class JobsAPI:
    """Bound to one broker; ``jobs`` exposes the methods of its own instance as functions."""

    def __init__(self, broker: FleetBroker, settings: Settings) -> None:
        self.state = JobStateReader(
            broker.client, broker.namespace, socket_timeout_s=settings.redis_socket_timeout_s
        )
        self.queues = QueueControl(broker.client, broker.namespace, frozenset(QUEUES))

    def status(self, message_id: str) -> dict[str, Any] | None:
        """The job's state, queue, actor, attempts, error code, timestamps (aware UTC) and result."""
        return self.state.status(message_id)

    def result(self, message_id: str, timeout: float = 30.0) -> Any:
        """Wait for the job's result; raises JobError with its code if it failed."""
        return self.state.result(message_id, timeout)

    def promote(self, message_id: str) -> bool:
        """Run a delayed or retry-waiting job now; False if it is in no such state."""
        return promote_job(self.state, message_id)

    def pause(self, queue: str) -> None:
        self.queues.pause(queue)

    def resume(self, queue: str) -> None:
        self.queues.resume(queue)

    def paused(self) -> set[str]:
        return self.queues.paused()
