"""Logging, configured once per process from the settings."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from middleware.log_sanitizer import SanitizingFilter

from .log_batching import BatchedStreamHandler
from .settings import Settings

# Our records' internal flags (see middleware.log_sanitizer, middleware.job_log): never output.
_MARKERS = ("_taatom_sanitized", "_taatom_masked", "_taatom_outcome")
_SHORT_LEVELS = {"WARNING": "WARN", "CRITICAL": "CRIT"}
_HANDLER_NAME = "taatom-jobs"


class TextFormatter(logging.Formatter):
    """``2026-01-01 10:00:00 [WARN] jobs.images: ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(short_level)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.short_level = _SHORT_LEVELS.get(record.levelname, record.levelname)
        return super().format(record)


def build_formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "short_level", *_MARKERS],
        )
    return TextFormatter()


def style_handler(handler: logging.Handler, settings: Settings) -> logging.Handler:
    handler.setFormatter(build_formatter(settings))
    for old in [f for f in handler.filters if isinstance(f, SanitizingFilter)]:
        handler.removeFilter(old)
    # E-mail addresses are personal data: masked in production logs.
    handler.addFilter(SanitizingFilter(mask_emails=settings.is_production))
    return handler


def configure_logging(
    settings: Settings, stream: TextIO | None = None, *, adopt_handlers: bool = False
) -> None:
    """Configure the root logger once per process: our format, the sanitizer on every handler.

    Called by entry points (the demo, the scheduler, each worker process),
    never at import time. ``adopt_handlers`` restyles the handlers already
    installed (Dramatiq's CLI pipes worker output to its main process)
    instead of adding ours.
    """
    root = logging.getLogger()
    if adopt_handlers and root.handlers:
        for handler in list(root.handlers):
            style_handler(_batched(root, handler), settings)
    else:
        for existing in list(root.handlers):
            if existing.get_name() == _HANDLER_NAME:
                root.removeHandler(existing)
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name(_HANDLER_NAME)
        root.addHandler(style_handler(handler, settings))
    root.setLevel(settings.log_level)
    _skip_unused_record_fields()
    # Dramatiq's debug chatter only when asked for; pymongo's never by default.
    if settings.log_level != "DEBUG":
        logging.getLogger("pymongo").setLevel(logging.WARNING)


def _skip_unused_record_fields() -> None:
    """Our formats show no caller, thread or process: don't look them up for every record.

    The switches the logging module provides for this (its HOWTO, "Optimization");
    the caller lookup alone walks the stack on every call. Only our own entry
    points call this: an app that embeds the jobs keeps its logging as it is.
    """
    logging._srcfile = None  # the documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _batched(root: logging.Logger, handler: logging.Handler) -> logging.Handler:
    """Dramatiq's pipe to its main process, replaced by one that writes jobs' success lines in batches."""
    if type(handler) is not logging.StreamHandler:
        return handler
    root.removeHandler(handler)
    batched = BatchedStreamHandler(handler.stream)
    batched.setLevel(handler.level)
    root.addHandler(batched)
    return batched


class WorkerLogging(Middleware):
    """Configures logging in each `dramatiq jobs` worker process as it boots."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: Broker) -> None:
        configure_logging(self.settings, adopt_handlers=True)
