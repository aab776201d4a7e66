"""Hands a job's return value to the job-state middleware.

Dramatiq logs a warning for every actor that returns a value unless its own
Results middleware stores it; our results live in the job state instead. So
the actor records its value here and returns ``None`` to Dramatiq, and the
job-state middleware takes the value in the same worker thread.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_NOTHING = object()
_result: ContextVar[Any] = ContextVar("taatom_job_result", default=_NOTHING)


def set_job_result(value: Any) -> None:
    _result.set(value)


def take_job_result() -> Any:
    """The value the running job returned (None if none), cleared for the next job."""
    value = _result.get()
    _result.set(_NOTHING)
    return None if value is _NOTHING else value
