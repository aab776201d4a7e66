"""Scheduler time logic: cron parsing, windows, due windows, clocks. Pure functions of `now`, no Redis."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobs.payloads import AnalyticsPayload, CleanupPayload
from jobs.settings import Settings, SettingsError
from scheduler.cron import Resolution, parse_cron
from scheduler.schedules import build_schedules
from scheduler.stop import StopEvent
from scheduler.windows import (
    as_utc,
    clock_jump,
    due_windows,
    fires_between,
    next_fire,
    previous_fire,
    retry_delay,
    window_of,
)


def at(text: str) -> datetime:
    """'2026-01-01T10:05' or '2026-01-01T10:05:07' as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


H = timedelta(hours=1)
SCHEDULES = {s.name: s for s in build_schedules(Settings.from_mapping({}))}


# --- cron expressions ----


@pytest.mark.parametrize(
    ("expression", "resolution"),
    [
        ("5 * * * *", Resolution.HOUR),
        ("15 0 * * *", Resolution.DAY),
        ("0 3 * * *", Resolution.DAY),
        ("30 3 1,15 * *", Resolution.DAY),
        ("0 0 * * mon", Resolution.DAY),
        ("5 9,17 * * *", Resolution.HOUR),
        ("*/15 * * * *", Resolution.MINUTE),
        ("* * * * * *", Resolution.SECOND),
        ("*/1 * * * * *", Resolution.SECOND),
        ("0 */15 * * * *", Resolution.MINUTE),
        ("30 0 0 1 * *", Resolution.DAY),
    ],
)
def test_resolution_is_the_finest_varying_field(expression: str, resolution: Resolution) -> None:
    assert parse_cron(expression).resolution is resolution


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("61 * * * *", "higher than the maximum value (59)"),
        ("5 * * *", "5 fields"),
        ("* * * * * * *", "got 7 field(s)"),
        ("", "got 0 field(s)"),
        ("x * * * *", 'Unrecognized expression "x"'),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("0 3 * * 0", "name the days of the week"),
        ("0 3 * * 1-5", "name the days of the week"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_invalid_cron_says_why(expression: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_cron(expression)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "SCHEDULE_ANALYTICS_HOURLY_CRON",
        "SCHEDULE_ANALYTICS_DAILY_CRON",
        "SCHEDULE_CLEANUP_ANALYTICS_CRON",
        "SCHEDULE_CLEANUP_ERROR_LOGS_CRON",
    ],
)
def test_invalid_cron_setting_names_the_variable(name: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({name: "5 25 * * *"})
    assert f"{name}='5 25 * * *'" in str(info.value)
    assert "higher than the maximum value (23)" in str(info.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"RETENTION_ANALYTICS_DAYS": "3"},
            "RETENTION_ANALYTICS_DAYS=3 is below CLEANUP_MIN_OLDER_THAN_DAYS=7",
        ),
        (
            {"RETENTION_ERROR_LOGS_DAYS": "10", "CLEANUP_MIN_OLDER_THAN_DAYS": "14"},
            "RETENTION_ERROR_LOGS_DAYS=10",
        ),
        ({"SCHEDULER_LOOKBACK_HOURS": "0"}, "SCHEDULER_LOOKBACK_HOURS"),
        ({"SCHEDULER_MISFIRE_GRACE_S": "-1"}, "SCHEDULER_MISFIRE_GRACE_S"),
        ({"SCHEDULER_HEARTBEAT_S": "0"}, "SCHEDULER_HEARTBEAT_S"),
        ({"SCHEDULER_REPLICA_ID": "has space"}, "SCHEDULER_REPLICA_ID"),
    ],
)
def test_scheduler_settings_are_validated(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping(env)
    assert expected in str(info.value)


def test_six_field_cron_and_whitespace_are_normalised() -> None:
    s = Settings.from_mapping({"SCHEDULE_ANALYTICS_HOURLY_CRON": "  */1  * * * * * "})
    assert s.schedule_analytics_hourly_cron == "*/1 * * * * *"


# --- windows around boundaries ----


@pytest.mark.parametrize(
    ("schedule", "fire", "start", "end", "key"),
    [
        # hourly at minute 5 owes the previous hour
        ("analytics:hourly", "2026-06-15T10:05", "2026-06-15T09:00", "2026-06-15T10:00", "2026-06-15T09:00Z"),
        ("analytics:hourly", "2026-06-16T00:05", "2026-06-15T23:00", "2026-06-16T00:00", "2026-06-15T23:00Z"),
        ("analytics:hourly", "2026-03-01T00:05", "2026-02-28T23:00", "2026-03-01T00:00", "2026-02-28T23:00Z"),
        ("analytics:hourly", "2027-01-01T00:05", "2026-12-31T23:00", "2027-01-01T00:00", "2026-12-31T23:00Z"),
        # European and American DST changes are invisible in UTC: still one hour
        ("analytics:hourly", "2026-03-29T01:05", "2026-03-29T00:00", "2026-03-29T01:00", "2026-03-29T00:00Z"),
        ("analytics:hourly", "2026-11-01T06:05", "2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T05:00Z"),
        # daily at 00:15 owes the previous day
        ("analytics:daily", "2026-06-16T00:15", "2026-06-15", "2026-06-16", "2026-06-15"),
        ("analytics:daily", "2026-05-01T00:15", "2026-04-30", "2026-05-01", "2026-04-30"),
        ("analytics:daily", "2026-03-01T00:15", "2026-02-28", "2026-03-01", "2026-02-28"),
        ("analytics:daily", "2028-03-01T00:15", "2028-02-29", "2028-03-01", "2028-02-29"),
        ("analytics:daily", "2027-01-01T00:15", "2026-12-31", "2027-01-01", "2026-12-31"),
        # cleanups are named by the day before their run
        ("cleanup:analytics", "2027-01-01T03:00", "2026-12-31", "2027-01-01", "2026-12-31"),
        ("cleanup:error_logs", "2026-03-01T03:30", "2026-02-28", "2026-03-01", "2026-02-28"),
    ],
)
def test_window_of_default_schedules(schedule: str, fire: str, start: str, end: str, key: str) -> None:
    s = SCHEDULES[schedule]
    window = window_of(s.cron, at(fire))
    assert (window.start, window.end) == (at(start), at(end))
    assert s.key(window) == f"{schedule}:{key}"


@pytest.mark.parametrize(
    ("expression", "fire", "start", "end", "label"),
    [
        (
            "* * * * * *",
            "2027-01-01T00:00:00",
            "2026-12-31T23:59:59",
            "2027-01-01T00:00:00",
            "2026-12-31T23:59:59Z",
        ),
        (
            "*/5 * * * * *",
            "2026-03-01T00:00:00",
            "2026-02-28T23:59:55",
            "2026-03-01T00:00:00",
            "2026-02-28T23:59:55Z",
        ),
        (
            "0 */15 * * * *",
            "2026-01-01T10:00:00",
            "2026-01-01T09:45",
            "2026-01-01T10:00",
            "2026-01-01T09:45Z",
        ),
        # irregular hours tile the day: 17:00 -> 09:00 -> 17:00
        ("5 9,17 * * *", "2026-01-01T09:05", "2025-12-31T17:00", "2026-01-01T09:00", "2025-12-31T17:00Z"),
        ("5 9,17 * * *", "2026-01-01T17:05", "2026-01-01T09:00", "2026-01-01T17:00", "2026-01-01T09:00Z"),
        # weekly (2026-01-05 is a Monday) and monthly
        ("0 0 * * mon", "2026-01-05T00:00", "2025-12-29", "2026-01-05", "2025-12-29"),
        ("0 2 1 * *", "2026-03-01T02:00", "2026-02-01", "2026-03-01", "2026-02-01"),
        ("0 2 1 * *", "2029-01-01T02:00", "2028-12-01", "2029-01-01", "2028-12-01"),
    ],
)
def test_window_follows_the_schedules_period(
    expression: str, fire: str, start: str, end: str, label: str
) -> None:
    window = window_of(parse_cron(expression), at(fire))
    assert (window.start, window.end, window.label) == (at(start), at(end), label)


@pytest.mark.parametrize(
    ("schedule", "fire", "kwargs"),
    [
        (
            "analytics:hourly",
            "2027-01-01T00:05",
            {
                "start_date": "2026-12-31T23:00:00+00:00",
                "end_date": "2027-01-01T00:00:00+00:00",
                "aggregation_type": "hourly",
            },
        ),
        (
            "analytics:daily",
            "2028-03-01T00:15",
            {"start_date": "2028-02-29", "end_date": "2028-02-29", "aggregation_type": "daily"},
        ),
        ("cleanup:analytics", "2026-01-01T03:00", {"cleanup_type": "analytics", "older_than_days": 90}),
        ("cleanup:error_logs", "2026-01-01T03:30", {"cleanup_type": "error_logs", "older_than_days": 30}),
    ],
)
def test_payloads_follow_the_contract(schedule: str, fire: str, kwargs: dict[str, object]) -> None:
    s = SCHEDULES[schedule]
    assert s.kwargs(window_of(s.cron, at(fire))) == kwargs
    payload = AnalyticsPayload if s.actor == "aggregate_analytics" else CleanupPayload
    payload.parse(kwargs, {"cleanup_min_older_than_days": 7})


def test_multi_day_window_sends_inclusive_dates() -> None:
    spec = parse_cron("0 0 * * mon")
    assert SCHEDULES["analytics:daily"].window_kwargs(window_of(spec, at("2026-01-05T00:00"))) == {
        "start_date": "2025-12-29",
        "end_date": "2026-01-04",
    }


@pytest.mark.parametrize(
    ("expression", "after", "until", "step"),
    [
        ("5 * * * *", "2026-03-01T00:00", "2026-04-01T00:00", H),  # March: both DST changes
        ("5 * * * *", "2026-10-20T00:00", "2026-11-05T00:00", H),
        ("15 0 * * *", "2027-12-01T00:00", "2028-03-15T00:00", 24 * H),  # year end, leap day
        ("* * * * * *", "2026-12-31T23:58:00", "2027-01-01T00:02:00", timedelta(seconds=1)),
    ],
)
def test_windows_tile_time_without_gaps_or_overlaps(
    expression: str, after: str, until: str, step: timedelta
) -> None:
    spec = parse_cron(expression)
    windows = due_windows(spec, at(after), at(until), lookback=timedelta(days=400))
    assert len(windows) >= 100
    for earlier, later in itertools.pairwise(windows):
        assert earlier.end == later.start
        assert later.end - later.start == step
        assert later.fire - earlier.fire == step


# --- which windows are due ----


@pytest.mark.parametrize(
    ("cursor", "now", "lookback_h", "limit", "expected_fires"),
    [
        # 5 hourly windows missed, oldest first
        ("2026-01-01T05:05", "2026-01-01T10:05:00", 48, None, ["06:05", "07:05", "08:05", "09:05", "10:05"]),
        ("2026-01-01T05:05", "2026-01-01T10:04:59", 48, None, ["06:05", "07:05", "08:05", "09:05"]),
        ("2026-01-01T05:05", "2026-01-01T10:30:00", 48, 2, ["06:05", "07:05"]),
        # nothing owed right after the last fire, or when the clock went back behind the cursor
        ("2026-01-01T10:05", "2026-01-01T10:05:00", 48, None, []),
        ("2026-01-01T10:05", "2026-01-01T09:30:00", 48, None, []),
        # the look-back bounds a catch-up; a fire exactly look-back ago is out
        ("2025-12-20T00:05", "2026-01-01T10:05:00", 2, None, ["09:05", "10:05"]),
        ("2025-12-20T00:05", "2026-01-01T10:30:00", 2, None, ["09:05", "10:05"]),
        # a cursor that is not a fire time (a first start) owes the fires after it
        ("2026-01-01T08:42:17", "2026-01-01T10:05:00", 48, None, ["09:05", "10:05"]),
    ],
)
def test_due_hourly_windows(
    cursor: str, now: str, lookback_h: int, limit: int | None, expected_fires: list[str]
) -> None:
    spec = SCHEDULES["analytics:hourly"].cron
    windows = due_windows(spec, at(cursor), at(now), timedelta(hours=lookback_h), limit)
    assert [w.fire.strftime("%H:%M") for w in windows] == expected_fires
    assert all(w.fire.date() == at(now).date() for w in windows)


def test_due_daily_windows_across_the_year_end() -> None:
    spec = SCHEDULES["analytics:daily"].cron
    windows = due_windows(spec, at("2026-12-30T00:15"), at("2027-01-02T01:00"), timedelta(hours=96))
    assert [w.label for w in windows] == ["2026-12-30", "2026-12-31", "2027-01-01"]


def test_catch_up_is_the_same_windows_as_firing_on_time() -> None:
    spec = SCHEDULES["analytics:hourly"].cron
    caught_up = due_windows(spec, at("2026-01-01T05:05"), at("2026-01-01T10:05"), timedelta(hours=48))
    on_time = [due_windows(spec, w.fire - H, w.fire, timedelta(hours=48))[0] for w in caught_up]
    assert caught_up == on_time


def test_other_time_zones_are_converted_and_naive_ones_refused() -> None:
    spec = SCHEDULES["analytics:hourly"].cron
    new_york = timezone(timedelta(hours=-5))
    local = datetime(2026, 1, 1, 5, 30, tzinfo=new_york)  # 10:30 UTC
    assert due_windows(spec, at("2026-01-01T08:05"), local, timedelta(hours=48)) == due_windows(
        spec, at("2026-01-01T08:05"), at("2026-01-01T10:30"), timedelta(hours=48)
    )
    assert as_utc(local).tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        due_windows(spec, at("2026-01-01T08:05"), datetime(2026, 1, 1, 10, 30), timedelta(hours=1))


@pytest.mark.parametrize(
    ("expression", "moment", "previous", "following"),
    [
        ("5 * * * *", "2026-01-01T10:05:00", "2026-01-01T09:05", "2026-01-01T11:05"),
        ("5 * * * *", "2026-01-01T10:05:01", "2026-01-01T10:05", "2026-01-01T11:05"),
        ("15 0 * * *", "2026-01-01T00:00:00", "2025-12-31T00:15", "2026-01-01T00:15"),
        ("0 0 29 2 *", "2026-01-01T00:00:00", "2024-02-29T00:00", "2028-02-29T00:00"),
        ("* * * * * *", "2026-01-01T00:00:00.5", "2026-01-01T00:00:00", "2026-01-01T00:00:01"),
    ],
)
def test_previous_and_next_fire_are_strict(
    expression: str, moment: str, previous: str, following: str
) -> None:
    spec = parse_cron(expression)
    assert previous_fire(spec, at(moment)) == at(previous)
    assert next_fire(spec, at(moment)) == at(following)


def test_fires_between_is_half_open() -> None:
    spec = SCHEDULES["analytics:hourly"].cron
    assert fires_between(spec, at("2026-01-01T09:05"), at("2026-01-01T11:05")) == [
        at("2026-01-01T10:05"),
        at("2026-01-01T11:05"),
    ]


# --- clocks and retries ----


@pytest.mark.parametrize(
    ("wall_elapsed_s", "mono_elapsed_s", "expected"),
    [
        (10.0, 10.0, None),
        (11.5, 10.0, None),  # within tolerance
        (3610.0, 10.0, 3600.0),  # jumped forward an hour
        (-3590.0, 10.0, -3600.0),  # went back an hour
    ],
)
def test_clock_jump(wall_elapsed_s: float, mono_elapsed_s: float, expected: float | None) -> None:
    base = at("2026-01-01T10:00")
    assert (
        clock_jump(base, 100.0, base + timedelta(seconds=wall_elapsed_s), 100.0 + mono_elapsed_s, 2.0)
        == expected
    )


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [
        (0, 0.0, 0.0),
        (1, 0.0, 1.0),
        (2, 0.0, 2.0),
        (5, 0.0, 16.0),
        (6, 0.0, 30.0),
        (500, 0.0, 30.0),
        (2, 0.2, 2.4),
    ],
)
def test_retry_delay_doubles_to_a_cap(failures: int, jitter: float, expected: float) -> None:
    assert retry_delay(failures, base_s=1.0, cap_s=30.0, jitter=jitter) == pytest.approx(expected)


# --- the stop event ----


def test_stop_event_set_by_a_signal_handler_ends_the_wait() -> None:
    stop = StopEvent()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: stop.set())
    try:
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        assert stop.wait(10.0) is True
        timer.join()
        assert stop.is_set()
        assert stop.wait(0) is True
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stop.close()


def test_stop_event_wait_times_out_unset() -> None:
    stop = StopEvent()
    try:
        assert stop.wait(0.01) is False
    finally:
        stop.close()
