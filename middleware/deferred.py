"""Redis writes that ride in a round trip the broker makes anyway.

Middleware registers a write for a message (keyed by its redis message id);
the broker's enqueue pipeline, and the consumer's ack or nack pipeline, take
the writes for the message they handle and send them in the same round trip.
Hooks and the broker call run in the same thread, so the registry is
thread-local.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Write = Callable[[Any], None]  # receives a redis pipeline and adds commands to it

_local = threading.local()


def _pending() -> dict[str, list[Write]]:
    pending: dict[str, list[Write]] | None = getattr(_local, "pending", None)
    if pending is None:
        pending = _local.pending = {}
    return pending


def defer(redis_id: str, write: Write) -> None:
    _pending().setdefault(redis_id, []).append(write)


def take(redis_id: str) -> list[Write]:
    return _pending().pop(redis_id, [])
