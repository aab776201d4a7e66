"""Logging, configured once per process from the settings."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from middleware.log_sanitizer import SanitizingFilter

from .settings import Settings

_SHORT_LEVELS = {"WARNING": "WARN", "CRITICAL": "CRIT"}
_HANDLER_NAME = "taatom-jobs"


class TextFormatter(logging.Formatter):
    """``2026-01-01 10:00:00 [WARN] jobs.images: ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(short_level)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.short_level = _SHORT_LEVELS.get(record.levelname, record.levelname)
        return super().format(record)


def build_handler(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    # E-mail addresses are personal data: masked in production logs.
    handler.addFilter(SanitizingFilter(mask_emails=settings.is_production))
    return handler


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Install our handler on the root logger, replacing any earlier one of ours.

    Called by entry points (the demo, the scheduler, each worker process),
    never at import time.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(build_handler(settings, stream))
    root.setLevel(settings.log_level)
    # Dramatiq's debug chatter only when asked for; pymongo's never by default.
    if settings.log_level != "DEBUG":
        logging.getLogger("pymongo").setLevel(logging.WARNING)
