"""Which windows a schedule owes at a given moment: plain functions of ``now``.

A schedule fires at the times of its cron expression. The *window* of a fire
time ``f`` is the span from the previous fire time to ``f``, both truncated
to the schedule's resolution (the finest cron field that varies):

- ``5 * * * *`` (resolution hour): the fire at 10:05 owes [09:00, 10:00);
- ``15 0 * * *`` (resolution day): the fire on 2 Jan 00:15 owes [1 Jan, 2 Jan);
- ``* * * * * *`` (resolution second): the fire at 10:00:05 owes [10:00:04, 10:00:05).

Consecutive windows tile the time line with no gap and no overlap, whatever
the expression, so a window is named by its start alone and catching up
fire times in order covers every moment exactly once.

Every function takes aware datetimes and works in UTC; nothing here reads
the clock, so tests pass ``now`` and never sleep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .cron import CronSpec, Resolution

_TICK = timedelta(microseconds=1)
# Looking further back than this for a previous fire time is pointless:
# an expression that fires so rarely (29 February) gets a one-unit window.
_MAX_GAP = timedelta(days=366 * 8)


@dataclass(frozen=True)
class Window:
    """The span ``[start, end)`` a fire time owes, with the fire time itself."""

    fire: datetime
    start: datetime
    end: datetime
    resolution: Resolution

    @property
    def label(self) -> str:
        """The window's name: its start at its resolution (``2026-01-01T10:00Z``, ``2026-01-01``)."""
        return self.resolution.format(self.start)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; naive datetimes are refused, never guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass an aware (UTC) datetime")
    return moment.astimezone(UTC)


def next_fire(spec: CronSpec, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``."""
    fire: datetime | None = spec.trigger.get_next_fire_time(None, as_utc(after) + _TICK)
    return fire


def previous_fire(spec: CronSpec, before: datetime) -> datetime | None:
    """The last fire time strictly before ``before``."""
    before = as_utc(before)
    span = timedelta(seconds=1)
    while span <= _MAX_GAP:
        candidate = next_fire(spec, before - span - _TICK)
        if candidate is not None and candidate < before:
            while (following := next_fire(spec, candidate)) is not None and following < before:
                candidate = following
            return candidate
        span *= 2
    return None


def fires_between(
    spec: CronSpec, after: datetime, until: datetime, limit: int | None = None
) -> list[datetime]:
    """Fire times ``f`` with ``after < f <= until``, oldest first, at most ``limit`` of them."""
    fires: list[datetime] = []
    until = as_utc(until)
    fire = next_fire(spec, after)
    while fire is not None and fire <= until and (limit is None or len(fires) < limit):
        fires.append(fire)
        fire = next_fire(spec, fire)
    return fires


def window_of(spec: CronSpec, fire: datetime, previous: datetime | None = None) -> Window:
    """The window owed by ``fire``; pass ``previous`` (its previous fire time) when known."""
    fire = as_utc(fire)
    if previous is None:
        previous = previous_fire(spec, fire)
    resolution = spec.resolution
    end = resolution.truncate(fire)
    start = resolution.truncate(previous) if previous is not None else end - resolution.value
    return Window(fire=fire, start=start, end=end, resolution=resolution)


def windows_between(
    spec: CronSpec, after: datetime, until: datetime, limit: int | None = None
) -> list[Window]:
    """The windows of :func:`fires_between`, oldest first."""
    fires = fires_between(spec, after, until, limit)
    previous = [previous_fire(spec, fires[0]), *fires[:-1]] if fires else []
    return [window_of(spec, fire, prev) for fire, prev in zip(fires, previous, strict=True)]


def due_windows(
    spec: CronSpec, cursor: datetime, now: datetime, lookback: timedelta, limit: int | None = None
) -> list[Window]:
    """Windows owed at ``now`` by a schedule settled up to ``cursor``, oldest first.

    Those are the fire times after the cursor and no later than ``now``, but
    none that fired ``lookback`` or longer before ``now``. A cursor ahead of
    ``now`` (the clock went back) owes nothing until the clock passes it.
    """
    now = as_utc(now)
    return windows_between(spec, max(as_utc(cursor), now - lookback), now, limit)


def clock_jump(
    wall_before: datetime, mono_before: float, wall_now: datetime, mono_now: float, tolerance_s: float
) -> float | None:
    """Seconds the wall clock moved beyond the monotonic clock (negative: back), or None within tolerance."""
    drift = (as_utc(wall_now) - as_utc(wall_before)).total_seconds() - (mono_now - mono_before)
    return drift if abs(drift) > tolerance_s else None


def retry_delay(failures: int, *, base_s: float = 1.0, cap_s: float = 30.0, jitter: float = 0.0) -> float:
    """Seconds to wait after ``failures`` consecutive failures: doubling from ``base_s``, capped.

    ``jitter`` (0..1, drawn by the caller) adds up to that fraction of extra
    delay so that replicas cut off together do not retry in lockstep.
    """
    if failures <= 0:
        return 0.0
    delay = min(cap_s, base_s * 2.0 ** min(failures - 1, 30))
    return delay * (1 + jitter)
