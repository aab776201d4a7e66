"""Every Redis key name taatom-jobs uses, in one place.

Dramatiq's RedisBroker owns the queue layout (``{ns}:{queue}``, ``.msgs``,
``.DQ``, ``.XQ``, ``__acks__``, ``__heartbeats__``); our keys live beside
them under the same namespace so one namespace holds a whole deployment.
"""

from __future__ import annotations


def queue(ns: str, name: str) -> str:
    return f"{ns}:{name}"


def messages(ns: str, name: str) -> str:
    return f"{ns}:{name}.msgs"


def dead_letters(ns: str, name: str) -> str:
    return f"{ns}:{group(name)}.XQ"


def dead_letter_messages(ns: str, name: str) -> str:
    return f"{ns}:{group(name)}.XQ.msgs"


def delayed(name: str) -> str:
    return f"{canonical(name)}.DQ"


def canonical(name: str) -> str:
    return name.removesuffix(".DQ").removesuffix(".XQ")


HIGH_LANE = ".HI"


def high_lane(name: str) -> str:
    """The high-priority lane of a queue: consumed first, sharing the queue's slots and dead letters."""
    return f"{group(name)}{HIGH_LANE}"


def group(name: str) -> str:
    """The queue a lane belongs to: slots, dead letters and job state are kept per group."""
    return canonical(name).removesuffix(HIGH_LANE)


def acks(ns: str, worker_id: str, name: str) -> str:
    return f"{ns}:__acks__.{worker_id}.{name}"


def heartbeats(ns: str) -> str:
    return f"{ns}:__heartbeats__"


def slots(ns: str, name: str) -> str:
    """Sorted set of concurrency leases: redis message id -> lease expiry (ms)."""
    return f"{ns}:slots:{group(name)}"


def wake(ns: str, name: str) -> str:
    """List idle consumers of ``name`` block on; every enqueue (and freed slot) pushes a token."""
    return f"{ns}:wake:{name}"


def promoted(ns: str) -> str:
    """Set of ids of delayed or retry-waiting jobs an operator asked to run now."""
    return f"{ns}:promoted"


def paused(ns: str) -> str:
    """Set of paused queue names."""
    return f"{ns}:paused"


def job(ns: str, message_id: str) -> str:
    """Hash with a job's state, timestamps, attempts, error and result."""
    return f"{ns}:job:{message_id}"


def job_history(ns: str, message_id: str) -> str:
    return f"{ns}:job:{message_id}:history"


def job_logs(ns: str, message_id: str) -> str:
    """List of the log lines a job emitted (sanitized, capped)."""
    return f"{ns}:job:{message_id}:logs"


def job_done(ns: str, message_id: str) -> str:
    """List pushed to when a job reaches a final state: what result() blocks on."""
    return f"{ns}:job:{message_id}:done"


def unique(ns: str, unique_key: str) -> str:
    return f"{ns}:unique:{unique_key}"


def worker(ns: str, worker_id: str) -> str:
    """Hash describing a live worker process (host, pid, started_at, queues), refreshed by its keeper."""
    return f"{ns}:workers:{worker_id}"
