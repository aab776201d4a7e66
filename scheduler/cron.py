"""Cron expressions of the schedule, always in UTC.

Two forms are accepted: crontab's five fields (``minute hour day month
day_of_week``) and six fields with seconds first (``second minute hour day
month day_of_week``), which the tests use for a schedule that fires every
second. Each becomes an APScheduler :class:`CronTrigger` in UTC.

Days of the week must be named (``mon``..``sun``): APScheduler 3 counts
weekday 0 as Monday where crontab counts it as Sunday, so a number would
silently fire on the wrong day.

This module imports nothing of ours: the settings validate crons with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from apscheduler.triggers.cron import CronTrigger

FIVE_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
SIX_FIELDS = ("second", *FIVE_FIELDS)

_STEP = re.compile(r"/\d+")
_LITERAL = re.compile(r"^\d+$")
# A date far enough back that every valid expression fires after it.
_PROBE_FROM = datetime(2000, 1, 1, tzinfo=UTC)


class Resolution(Enum):
    """The finest calendar unit in which a schedule's fire times differ."""

    SECOND = timedelta(seconds=1)
    MINUTE = timedelta(minutes=1)
    HOUR = timedelta(hours=1)
    DAY = timedelta(days=1)

    def truncate(self, moment: datetime) -> datetime:
        """``moment`` rounded down to this unit."""
        moment = moment.replace(microsecond=0)
        if self is Resolution.SECOND:
            return moment
        moment = moment.replace(second=0)
        if self is Resolution.MINUTE:
            return moment
        moment = moment.replace(minute=0)
        if self is Resolution.HOUR:
            return moment
        return moment.replace(hour=0)

    def format(self, moment: datetime) -> str:
        """``2026-01-01`` (day), ``2026-01-01T10:00Z`` (hour, minute) or ``2026-01-01T10:00:05Z``."""
        if self is Resolution.DAY:
            return moment.strftime("%Y-%m-%d")
        if self is Resolution.SECOND:
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        return moment.strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class CronSpec:
    """A validated cron expression: its normalised text, UTC trigger and resolution."""

    expression: str
    trigger: Any  # apscheduler.triggers.cron.CronTrigger (untyped)
    resolution: Resolution


def parse_cron(expression: str) -> CronSpec:
    """Validate ``expression`` and build its trigger.

    Raises:
      ValueError: with a message saying what is wrong and what is accepted.
    """
    values = expression.split()
    if len(values) not in (5, 6):
        raise ValueError(
            f"must be a cron expression of 5 fields ({' '.join(FIVE_FIELDS)}) or 6 with the second"
            f" first; got {len(values)} field(s)"
        )
    fields = dict(zip(FIVE_FIELDS if len(values) == 5 else SIX_FIELDS, values, strict=True))
    fields.setdefault("second", "0")
    if any(ch.isdigit() for ch in _STEP.sub("", fields["day_of_week"])):
        raise ValueError(
            "name the days of the week (mon, tue, wed, thu, fri, sat, sun): APScheduler counts 0 as"
            " Monday, crontab as Sunday"
        )
    try:
        trigger = CronTrigger(timezone=UTC, **fields)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    if trigger.get_next_fire_time(None, _PROBE_FROM) is None:
        raise ValueError("the cron expression never fires")
    return CronSpec(" ".join(values), trigger, _resolution(fields))


def _resolution(fields: dict[str, str]) -> Resolution:
    # The finest field that is not a single fixed value: two fire times then
    # always differ in that unit or a coarser one, so truncating fire times
    # to it keeps them distinct and ordered (see windows.window_of).
    for name, resolution in (
        ("second", Resolution.SECOND),
        ("minute", Resolution.MINUTE),
        ("hour", Resolution.HOUR),
    ):
        if not _LITERAL.match(fields[name]):
            return resolution
    return Resolution.DAY
