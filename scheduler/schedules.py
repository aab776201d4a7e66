"""The four schedules of taatom-jobs, built from the settings.

Each names its cron setting, the actor it sends to and the keyword
arguments a window turns into. A window is named ``{schedule}:{label}``
(``analytics:hourly:2026-01-01T10:00Z``): the key that decides which replica
emits it and the message's ``unique_key``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jobs.settings import Settings

from .cron import CronSpec, Resolution, parse_cron
from .windows import Window

Kwargs = dict[str, Any]


@dataclass(frozen=True)
class Schedule:
    name: str
    setting: str  # the environment variable holding the cron expression
    cron: CronSpec
    actor: str
    static_kwargs: Kwargs  # what every message of the schedule carries
    window_kwargs: Callable[[Window], Kwargs]  # what depends on the window

    def key(self, window: Window) -> str:
        return f"{self.name}:{window.label}"

    def kwargs(self, window: Window) -> Kwargs:
        return {**self.window_kwargs(window), **self.static_kwargs}


def analytics_range(window: Window) -> Kwargs:
    """The window as ``aggregate_analytics`` dates.

    Whole days go as ``YYYY-MM-DD`` with the end day included; anything finer
    as ISO-8601 datetimes with the end excluded (the payload contract).
    """
    if window.resolution is Resolution.DAY:
        return {
            "start_date": window.start.date().isoformat(),
            "end_date": (window.end - timedelta(days=1)).date().isoformat(),
        }
    return {"start_date": window.start.isoformat(), "end_date": window.end.isoformat()}


def _no_window_kwargs(window: Window) -> Kwargs:
    # A cleanup deletes by age, not by window; the window only names the run.
    return {}


def build_schedules(settings: Settings) -> tuple[Schedule, ...]:
    return (
        Schedule(
            "analytics:hourly",
            "SCHEDULE_ANALYTICS_HOURLY_CRON",
            parse_cron(settings.schedule_analytics_hourly_cron),
            "aggregate_analytics",
            {"aggregation_type": "hourly"},
            analytics_range,
        ),
        Schedule(
            "analytics:daily",
            "SCHEDULE_ANALYTICS_DAILY_CRON",
            parse_cron(settings.schedule_analytics_daily_cron),
            "aggregate_analytics",
            {"aggregation_type": "daily"},
            analytics_range,
        ),
        Schedule(
            "cleanup:analytics",
            "SCHEDULE_CLEANUP_ANALYTICS_CRON",
            parse_cron(settings.schedule_cleanup_analytics_cron),
            "cleanup",
            {"cleanup_type": "analytics", "older_than_days": settings.retention_analytics_days},
            _no_window_kwargs,
        ),
        Schedule(
            "cleanup:error_logs",
            "SCHEDULE_CLEANUP_ERROR_LOGS_CRON",
            parse_cron(settings.schedule_cleanup_error_logs_cron),
            "cleanup",
            {"cleanup_type": "error_logs", "older_than_days": settings.retention_error_logs_days},
            _no_window_kwargs,
        ),
    )
