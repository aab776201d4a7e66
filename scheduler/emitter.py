"""Emit what a schedule owes at ``now``, through the gate, oldest first.

The same code serves the cron trigger firing on time, the catch-up pass on
start and after a Redis outage, and ``--dry-run`` (with a memory gate and a
sender that only logs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from .gate import Claim, Gate
from .schedules import Schedule
from .windows import Window, as_utc, due_windows

logger = logging.getLogger("scheduler.emitter")

# Windows handled per schedule and pass: a long catch-up (a seconds cron that
# was down for hours) proceeds in batches and shutdown is never held up.
DEFAULT_BATCH = 500


class Sender(Protocol):
    def send(self, schedule: Schedule, window: Window, key: str) -> str:
        """Enqueue the window's message with ``unique_key=key``; return its message id."""
        ...


class ActorSender:
    """Sends through the declared actors (payloads are validated on send)."""

    def __init__(self, actors: Mapping[str, Any]) -> None:
        self.actors = dict(actors)

    def send(self, schedule: Schedule, window: Window, key: str) -> str:
        message = self.actors[schedule.actor].send_with_options(
            kwargs=schedule.kwargs(window), unique_key=key
        )
        logger.info("Emitted %s: %s message %s", key, schedule.actor, message.message_id)
        return str(message.message_id)


class DryRunSender:
    """Logs what would be sent."""

    def send(self, schedule: Schedule, window: Window, key: str) -> str:
        logger.info(
            "[dry-run] would emit %s: %s(%s) unique_key=%s",
            key,
            schedule.actor,
            ", ".join(f"{k}={v!r}" for k, v in schedule.kwargs(window).items()),
            key,
        )
        return "dry-run"


@dataclass
class Outcome:
    schedule: str
    emitted: list[str] = field(default_factory=list)  # keys this replica sent
    already_sent: int = 0  # windows another replica had sent
    blocked_on: str | None = None  # a window another replica is sending right now
    more: bool = False  # the batch was full: more windows are owed
    cursor: datetime | None = None
    cursor_window: str | None = None


class Emitter:
    """Parameters:
    start: when this replica started; an unknown schedule's cursor starts here
      (windows that fired before any scheduler ran are not owed).
    stopping: polled between windows; True ends the pass early.
    """

    def __init__(
        self,
        gate: Gate,
        sender: Sender,
        *,
        lookback: timedelta,
        start: datetime,
        stopping: Callable[[], bool] = lambda: False,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.gate = gate
        self.sender = sender
        self.lookback = lookback
        self.start = as_utc(start)
        self.stopping = stopping
        self.batch = batch
        # The last cursor seen per schedule: if Redis loses the cursor (a
        # restart without persistence) it is restored from here, not from now.
        self._known: dict[str, datetime] = {}
        self._warned_lookback: set[str] = set()

    def run(self, schedule: Schedule, now: datetime) -> Outcome:
        """Emit every window ``schedule`` owes at ``now``; Redis errors propagate to the caller."""
        now = as_utc(now)
        outcome = Outcome(schedule.name)
        cursor = self.gate.cursor(schedule.name)
        if cursor is None:
            cursor = self.gate.bootstrap(schedule.name, self._known.get(schedule.name, self.start))
            logger.info(
                "%s: no cursor yet; windows firing after %s are owed", schedule.name, cursor.fire.isoformat()
            )
        self._known[schedule.name] = cursor.fire
        outcome.cursor, outcome.cursor_window = cursor.fire, cursor.window
        self._warn_if_beyond_lookback(schedule, cursor.fire, now)

        windows = due_windows(schedule.cron, cursor.fire, now, self.lookback, limit=self.batch)
        outcome.more = len(windows) == self.batch
        settled: Window | None = None
        for window in windows:
            if self.stopping():
                outcome.more = True
                break
            key = schedule.key(window)
            claim = self.gate.claim(key)
            if claim is Claim.PENDING:
                # Never skip ahead of a window in flight: the cursor means
                # "everything up to here is sent".
                outcome.blocked_on = key
                break
            if claim is Claim.WON:
                self._send(schedule, window, key)
                outcome.emitted.append(key)
            else:
                outcome.already_sent += 1
            settled = window

        if settled is not None:
            self.gate.advance(schedule.name, settled.fire, settled.label)
            self._known[schedule.name] = settled.fire
            outcome.cursor, outcome.cursor_window = settled.fire, settled.label
        if len(outcome.emitted) > 1:
            logger.info(
                "%s: caught up %d windows, %s .. %s",
                schedule.name,
                len(outcome.emitted),
                outcome.emitted[0],
                outcome.emitted[-1],
            )
        return outcome

    def _send(self, schedule: Schedule, window: Window, key: str) -> None:
        try:
            message_id = self.sender.send(schedule, window, key)
        except Exception:
            # Let another attempt (ours or another replica's) claim it at once
            # rather than after the lease; if Redis is gone the lease does it.
            try:
                self.gate.release(key)
            except Exception:
                logger.debug("Could not release the claim on %s; it expires with its lease.", key)
            raise
        self.gate.confirm(key, message_id)

    def _warn_if_beyond_lookback(self, schedule: Schedule, cursor: datetime, now: datetime) -> None:
        if cursor < now - self.lookback and schedule.name not in self._warned_lookback:
            self._warned_lookback.add(schedule.name)
            logger.warning(
                "%s: last settled fire time %s is more than the look-back (%s) ago;"
                " windows that fired before %s are not caught up",
                schedule.name,
                cursor.isoformat(),
                self.lookback,
                (now - self.lookback).isoformat(),
            )
