"""What the operator surface works with: one broker, its settings, the read model and the actions."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.actor import JobActor
from jobs.settings import QUEUES, Settings
from middleware.fleet import FleetBroker

from .actions import Operator
from .inspect import Inspector


@dataclass
class Ops:
    broker: FleetBroker
    settings: Settings
    inspector: Inspector = field(init=False)
    operator: Operator = field(init=False)

    def __post_init__(self) -> None:
        self.inspector = Inspector(self.broker, QUEUES, socket_timeout_s=self.settings.redis_socket_timeout_s)
        self.operator = Operator(self.broker, QUEUES)

    def actor(self, name: str) -> JobActor:
        actor = self.broker.actors.get(name)
        if not isinstance(actor, JobActor):
            known = ", ".join(sorted(n for n, a in self.broker.actors.items() if isinstance(a, JobActor)))
            raise KeyError(f"unknown actor {name!r}; known: {known}")
        return actor


def default_ops() -> Ops:
    """The operator surface of this process's own broker (``import jobs``)."""
    import jobs

    return Ops(jobs.broker, jobs.settings)
