"""``python -m scheduler`` (or ``taatom-scheduler``): run the daemon, ``--list`` or ``--dry-run``.

Exit codes: 0 success (also after SIGTERM/SIGINT), 2 usage error,
78 configuration error (an invalid setting, or embedded mode).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime

from jobs.embedded import EXIT_EMBEDDED_MODE
from jobs.settings import Settings, SettingsError

from .daemon import utc_now
from .health import iso
from .schedules import Schedule, build_schedules
from .windows import next_fire, window_of
from .wiring import build_daemon

EXIT_OK = 0
EXIT_CONFIG = 78

REFUSAL = (
    "taatom-jobs is in embedded mode: jobs run inside the app process, so there is no shared Redis "
    "for the scheduler to enqueue to. Switch to real mode: set ENABLE_BACKGROUND_JOBS=true (or "
    "APP_ENV=production) and point REDIS_URL (or REDIS_HOST/REDIS_PORT) at the workers' Redis. "
    "`--list` and `--dry-run` work in either mode."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler",
        description="Enqueue the periodic jobs. Run any number of replicas: each window is emitted once.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--list", action="store_true", help="print the schedule and the next fire times, then exit"
    )
    mode.add_argument(
        "--dry-run", action="store_true", help="run, but only log what would be emitted (no Redis writes)"
    )
    return parser


def render_schedule(schedules: Sequence[Schedule], settings: Settings, now: datetime) -> str:
    """The ``--list`` table: each schedule, its next fire time and the window that fire owes."""
    rows = [("SCHEDULE", "CRON (UTC)", "NEXT FIRE", "WINDOW", "JOB")]
    for schedule in schedules:
        upcoming = next_fire(schedule.cron, now)
        if upcoming is None:
            rows.append((schedule.name, schedule.cron.expression, "never", "-", schedule.actor))
            continue
        window = window_of(schedule.cron, upcoming)
        kwargs = ", ".join(f"{k}={v!r}" for k, v in schedule.static_kwargs.items())
        rows.append(
            (
                schedule.name,
                schedule.cron.expression,
                iso(upcoming) or "",
                f"{iso(window.start)} .. {iso(window.end)}",
                f"{schedule.actor}({kwargs})",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows
    ]
    lines.append(
        f"as of {iso(now.replace(microsecond=0))}; look-back {settings.scheduler_lookback_hours} h, "
        f"misfire grace {settings.scheduler_misfire_grace_s} s"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(environ)
    except SettingsError as exc:
        sys.stderr.write(f"scheduler: {exc}\n")
        return EXIT_CONFIG
    schedules = build_schedules(settings)
    if args.list:
        sys.stdout.write(render_schedule(schedules, settings, utc_now()))
        return EXIT_OK
    if not (settings.real_mode or args.dry_run):
        sys.stderr.write(f"scheduler: {REFUSAL}\n")
        return EXIT_EMBEDDED_MODE

    from jobs.logs import configure_logging

    configure_logging(settings)
    if settings.log_level != "DEBUG":
        # One line per job run and per fire otherwise; its warnings (a run
        # missed or skipped) still show.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return build_daemon(settings, dry_run=args.dry_run).run()
