"""The scheduler daemon: APScheduler wakes it at each cron fire, a main loop does the rest.

- APScheduler (3.11, UTC cron triggers, ``coalesce``, ``max_instances=1``,
  a misfire grace time) runs :meth:`Daemon.fire` on a worker thread when a
  schedule fires; it emits what that schedule owes through the gate.
- The main loop runs :meth:`Daemon.tick` every ``SCHEDULER_HEARTBEAT_S``:
  a catch-up pass over every schedule (what fired while this replica, or
  Redis, was down, or a fire APScheduler dropped as misfired) and the
  heartbeat. While Redis is unavailable the pass fails, is logged, and is
  retried with backoff; the first pass that succeeds catches up.
- SIGTERM and SIGINT only set the stop event the loop waits on; the loop
  then shuts APScheduler down (its running fires finish their current
  window) and records the replica's stop in a ``finally``.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from jobs.settings import Settings
from middleware.errors import JobError

from .emitter import Emitter
from .gate import Cursor
from .health import Heartbeat, Identity, heartbeat_document
from .schedules import Schedule
from .stop import StopEvent
from .windows import clock_jump, retry_delay

logger = logging.getLogger("scheduler.daemon")

EXIT_OK = 0
RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0
RETRY_JITTER = 0.2
CLOCK_JUMP_TOLERANCE_S = 2.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        schedules: Sequence[Schedule],
        emitter: Emitter,
        identity: Identity,
        stop: StopEvent,
        *,
        heartbeat: Heartbeat | None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        draw_jitter: Callable[[], float] = random.random,
        on_close: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.settings = settings
        self.schedules = {s.name: s for s in schedules}
        self.emitter = emitter
        self.identity = identity
        self.stop = stop
        self.heartbeat = heartbeat
        self.clock = clock
        self.monotonic = monotonic
        self.draw_jitter = draw_jitter
        self.on_close = list(on_close)
        self.failures = 0  # consecutive passes that could not reach Redis
        self.cursors: dict[str, Cursor | None] = dict.fromkeys(self.schedules)
        self._locks = {name: threading.Lock() for name in self.schedules}
        self._errors: dict[str, str] = {}
        self._last_clocks: tuple[datetime, float] | None = None
        self._signal: int | None = None

    # --- one schedule ------------------------------------------------------------
    def _run(self, schedule: Schedule, now: datetime) -> bool:
        """Emit what ``schedule`` owes at ``now``; True if more is owed than one pass handles."""
        # A fire and the catch-up pass may meet on the same schedule: the gate
        # would keep them exactly-once anyway, the lock keeps them orderly.
        with self._locks[schedule.name]:
            try:
                outcome = self.emitter.run(schedule, now)
            except JobError as exc:
                # The payload was refused: a bug or a setting the job rejects.
                # The window stays owed and is retried; it must not be skipped.
                self._errors[schedule.name] = f"{exc.code}: {exc.message}"
                logger.error("%s: the job refused the window's message: %s", schedule.name, exc)
                return False
            self._errors.pop(schedule.name, None)
            if outcome.cursor is not None:
                self.cursors[schedule.name] = Cursor(outcome.cursor, outcome.cursor_window)
            if outcome.blocked_on:
                logger.debug("%s: %s is being emitted by another replica", schedule.name, outcome.blocked_on)
            return outcome.more

    def fire(self, name: str) -> None:
        """APScheduler's job: ``name`` fired."""
        if self.stop.is_set():
            return
        try:
            self._run(self.schedules[name], self.clock())
        except redis.RedisError as exc:
            logger.warning(
                "%s fired but Redis is unavailable (%s); the catch-up pass emits it once Redis answers",
                name,
                describe(exc),
            )

    # --- the main loop's pass ---------------------------------------------------------
    def tick(self, now: datetime) -> float:
        """Catch up every schedule and write the heartbeat; return the seconds until the next pass."""
        self._watch_clock(now)
        more = False
        try:
            for schedule in self.schedules.values():
                if self.stop.is_set():
                    return 0.0
                more = self._run(schedule, now) or more
            self._beat(now, "degraded" if self._errors else "running")
        except redis.RedisError as exc:
            self.failures += 1
            delay = retry_delay(
                self.failures,
                base_s=RETRY_BASE_S,
                cap_s=RETRY_CAP_S,
                jitter=RETRY_JITTER * self.draw_jitter(),
            )
            logger.warning(
                "Redis unavailable (%s); still running, retrying in %.1fs (attempt %d)",
                describe(exc),
                delay,
                self.failures,
            )
            return delay
        if self.failures:
            logger.info("Redis answers again after %d failed passes; missed windows caught up", self.failures)
            self.failures = 0
        return 0.0 if more else self.settings.scheduler_heartbeat_s

    def _beat(self, now: datetime, state: str) -> None:
        if self.heartbeat is None:
            return
        errors = dict(self._errors)  # a copy: fires on other threads update it
        error = "; ".join(f"{name}: {text}" for name, text in sorted(errors.items())) or None
        self.heartbeat.write(
            heartbeat_document(
                self.identity,
                now=now,
                state=state,
                schedules=self.schedules.values(),
                cursors=self.cursors,
                error=error,
            )
        )

    def _watch_clock(self, now: datetime) -> None:
        mono = self.monotonic()
        if self._last_clocks is not None:
            jump = clock_jump(*self._last_clocks, now, mono, CLOCK_JUMP_TOLERANCE_S)
            if jump is not None:
                logger.warning(
                    "The wall clock jumped %+.1fs. No window is emitted twice: windows are keyed and"
                    " each schedule's cursor only moves forward%s",
                    jump,
                    "; windows after the cursor are emitted once the clock reaches them again"
                    if jump < 0
                    else "",
                )
        self._last_clocks = (now, mono)

    # --- the process ---------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags: logging and shutdown happen in the main loop.
        self._signal = signum
        self.stop.set()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; return the exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.settings.scheduler_misfire_grace_s,
            },
        )
        for schedule in self.schedules.values():
            scheduler.add_job(
                self.fire, trigger=schedule.cron.trigger, args=(schedule.name,), id=schedule.name
            )
        try:
            scheduler.start()
            logger.info(
                "Scheduler replica %s started%s: %s",
                self.identity.replica,
                " (dry run: nothing is sent)" if self.identity.dry_run else "",
                ", ".join(f"{s.name} [{s.cron.expression}]" for s in self.schedules.values()),
            )
            delay = 0.0
            while not self.stop.wait(delay):
                delay = self.tick(self.clock())
            name = signal.Signals(self._signal).name if self._signal else "stop requested"
            logger.info("Scheduler replica %s stopping (%s)", self.identity.replica, name)
        finally:
            self.stop.set()
            if scheduler.running:
                scheduler.shutdown(wait=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._record_stop()
        logger.info("Scheduler replica %s stopped", self.identity.replica)
        return EXIT_OK

    def _record_stop(self) -> None:
        try:
            self._beat(self.clock(), "stopped")
        except redis.RedisError as exc:
            logger.warning("Could not record the stop in the heartbeat key: %s", describe(exc))
        finally:
            self.close()

    def close(self) -> None:
        """Release the broker, the clients and the stop event's pipe."""
        for close in self.on_close:
            try:
                close()
            except Exception as exc:
                logger.debug("Closing %r failed: %s", close, exc)
        self.on_close = []
        self.stop.close()


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
