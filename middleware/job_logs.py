"""Log lines kept with the job that emitted them (Bull's ``job.log()``, automatic).

While a job runs, a handler on the root logger copies every record that
reaches it, sanitized, into a buffer of that job (a context variable, so
concurrent jobs on other threads keep their own). When the job ends, the
job-state writer stores the buffer beside the job's state, with the same TTL.
A job that logged nothing of its own stores nothing: its success line would
only repeat its state.
Capped in lines and line length: a chatty job cannot fill Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar

from .log_sanitizer import SanitizingFilter

MAX_LINES = 100
MAX_LINE_CHARS = 500

_buffer: ContextVar[list[str] | None] = ContextVar("taatom_job_log_lines", default=None)
_install_lock = threading.Lock()


class JobLogHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(SanitizingFilter())

    def handle(self, record: logging.LogRecord) -> bool:
        # Outside a job there is nothing to keep: skip even the filter.
        lines = _buffer.get()
        if lines is None or len(lines) >= MAX_LINES:
            return False
        if not lines and getattr(record, "_taatom_outcome", False):
            return False  # a silent job's success line: its state already says it
        return bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        lines = _buffer.get()
        if lines is None or len(lines) >= MAX_LINES:
            return
        stamp = time.strftime("%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp} [{record.levelname}] {record.name}: {record.getMessage()}"
        lines.append(line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "...")
        if len(lines) == MAX_LINES:
            lines[-1] = f"{stamp} [INFO] taatom: further lines of this job were not kept (limit {MAX_LINES})"


def start_capture() -> None:
    """Begin keeping lines for the job now running in this context."""
    root = logging.getLogger()
    if not any(isinstance(h, JobLogHandler) for h in root.handlers):
        with _install_lock:
            if not any(isinstance(h, JobLogHandler) for h in root.handlers):
                root.addHandler(JobLogHandler())
    _buffer.set([])


def take_lines() -> list[str]:
    lines = _buffer.get() or []
    _buffer.set(None)
    return lines
