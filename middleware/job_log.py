"""Job lifecycle log lines: start, success, retry, failure.

Each line names the job by its label and message id and carries structured
fields (``job_id``, ``actor``, ``queue``, ``attempt``, ``max_attempts``,
``duration_ms``, ``error_code``) that the JSON format emits as keys. Lines
never include job arguments.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware

from .errors import JobError

_started: ContextVar[float | None] = ContextVar("taatom_job_started", default=None)


def job_label(broker: Broker, actor_name: str) -> str:
    """How lines name a job: the actor's ``label`` ("image processing"), else its name."""
    try:
        return str(getattr(broker.get_actor(actor_name), "label", actor_name.replace("_", " ")))
    except ActorNotFound:
        return actor_name.replace("_", " ")


def job_logger(queue_name: str) -> logging.Logger:
    return logging.getLogger(f"jobs.{queue_name}")


# Marks a record whose text is built only from labels, ids and numbers: the
# sanitizing filter can skip its pattern pass (lines with error text keep it).
SAFE = {"_taatom_sanitized": True}
# Marks a job's success line: kept in the job's own log lines only beside
# lines of its own (a silent job's outcome is already in its state), which
# spares most jobs a log-list write.
OUTCOME = {**SAFE, "_taatom_outcome": True}


def _fields(message: MessageProxy, attempt: int, max_attempts: int, **more: Any) -> dict[str, Any]:
    return {
        "job_id": message.message_id,
        "actor": message.actor_name,
        "queue": message.queue_name,
        "attempt": attempt,
        "max_attempts": max_attempts,
        **more,
    }


def elapsed_ms() -> float | None:
    started = _started.get()
    return None if started is None else round((time.perf_counter() - started) * 1000, 1)


def log_retry(
    broker: Broker, message: MessageProxy, error: JobError, attempt: int, max_attempts: int, delay_ms: int
) -> None:
    job_logger(message.queue_name).warning(
        "Retrying %s job %s (attempt %d/%d) in %.1fs: %s %s",
        job_label(broker, message.actor_name),
        message.message_id,
        attempt,
        max_attempts,
        delay_ms / 1000,
        error.code,
        error.message,
        extra=_fields(message, attempt, max_attempts, error_code=error.code, duration_ms=elapsed_ms()),
    )


def log_final_failure(
    broker: Broker, message: MessageProxy, error: JobError, attempt: int, max_attempts: int
) -> None:
    label = job_label(broker, message.actor_name)
    how = "permanently" if not error.retry else f"after {attempt} attempts"
    job_logger(message.queue_name).error(
        "%s job %s failed %s: %s %s",
        label[:1].upper() + label[1:],
        message.message_id,
        how,
        error.code,
        error.message,
        extra=_fields(message, attempt, max_attempts, error_code=error.code, duration_ms=elapsed_ms()),
    )


class JobLog(Middleware):
    """Logs the start and the success of every job; retries and failures are
    logged by the attempts policy, which decides them."""

    def __init__(self, max_attempts_of: Any) -> None:
        # A callable (broker, message) -> int, from the attempts policy.
        self.max_attempts_of = max_attempts_of

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        _started.set(time.perf_counter())
        # DEBUG: one INFO line per job (its outcome) keeps logs readable and cheap.
        logger = job_logger(message.queue_name)
        if not logger.isEnabledFor(logging.DEBUG):
            return
        attempt = int(message.options.get("attempt", 1))
        max_attempts = self.max_attempts_of(broker, message)
        logger.debug(
            "Starting %s job %s (attempt %d/%d)",
            job_label(broker, message.actor_name),
            message.message_id,
            attempt,
            max_attempts,
            extra={**_fields(message, attempt, max_attempts), **SAFE},
        )

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            attempt = int(message.options.get("attempt", 1))
            duration = elapsed_ms()
            label = job_label(broker, message.actor_name)
            job_logger(message.queue_name).info(
                "%s job %s succeeded in %s ms",
                label[:1].upper() + label[1:],
                message.message_id,
                duration,
                extra={
                    **_fields(message, attempt, self.max_attempts_of(broker, message), duration_ms=duration),
                    **OUTCOME,
                },
            )
        _started.set(None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        _started.set(None)
