"""Per-queue policy values the middleware reads (built from the settings by `jobs`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """What the middleware needs to know about one queue."""

    name: str
    concurrency: int
    max_attempts: int
    backoff_min_ms: int
    backoff_max_ms: int
    backoff_jitter: float
    time_limit_ms: int
