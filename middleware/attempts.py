"""Attempts in total and exponential backoff with jitter, per queue.

Replaces Dramatiq's Retries middleware, whose defaults (20 retries from 15 s,
spread over weeks) and stored tracebacks do not fit. The failure is
translated to a registered code first: permanent codes fail at once,
transient ones are retried until the queue's attempts run out. A failed
message is marked failed, so the worker dead-letters it.

Options resolve in three levels: message option, actor option, queue policy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from . import keys
from .errors import SRV_6003, JobError
from .job_log import log_final_failure, log_retry
from .policy import QueuePolicy
from .translate import translate

logger = logging.getLogger("middleware.attempts")

# Dramatiq's RedisBroker refuses delays of 7 days or more.
MAX_DELAY_MS = 7 * 86_400_000 - 1


def backoff_ms(attempt: int, policy: QueuePolicy, rng: Callable[[], float] = random.random) -> int:
    """Delay before the attempt after ``attempt``: min * 2^(attempt-1), capped, plus up to ``jitter`` more.

    Jitter only adds, so a retry never comes sooner than the exponential
    schedule promises, and retries of a burst of failures spread out.
    """
    base = min(policy.backoff_max_ms, policy.backoff_min_ms * 2 ** max(attempt - 1, 0))
    return min(MAX_DELAY_MS, int(base * (1 + policy.backoff_jitter * rng())))


class Attempts(Middleware):
    """Decides, for each failure, between a delayed retry and a final failure."""

    def __init__(
        self,
        policies: Mapping[str, QueuePolicy],
        default: QueuePolicy,
        *,
        rng: Callable[[], float] = random.random,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.policies = dict(policies)
        self.default = default
        self.rng = rng
        self.clock_ms = clock_ms

    @property
    def actor_options(self) -> set[str]:
        return {"max_attempts", "backoff_min_ms", "backoff_max_ms"}

    def policy_for(self, broker: Broker, message: Message[Any] | MessageProxy) -> QueuePolicy:
        # A lane (email.HI) or a delay queue (email.DQ) has its queue's policy.
        base = self.policies.get(keys.group(message.queue_name), self.default)
        actor_options = (
            broker.get_actor(message.actor_name).options if message.actor_name in broker.actors else {}
        )
        overrides = {
            name: message.options.get(name, actor_options.get(name))
            for name in ("max_attempts", "backoff_min_ms", "backoff_max_ms")
        }
        changed = {k: int(v) for k, v in overrides.items() if v is not None}
        if not changed:
            return base
        return QueuePolicy(**{**_as_dict(base), **changed})

    def max_attempts_of(self, broker: Broker, message: MessageProxy) -> int:
        return self.policy_for(broker, message).max_attempts

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # Tracebacks carry secrets and bulk; nothing of ours stores one, and a
        # message from elsewhere loses it here before it reaches Redis.
        message.options.pop("traceback", None)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        error = translate(exception)
        policy = self.policy_for(broker, message)
        attempt = int(message.options.get("attempt", 1))
        if error.retry and attempt < policy.max_attempts:
            delay = backoff_ms(attempt, policy, self.rng)
            if self._schedule_retry(broker, message, error, attempt, delay):
                log_retry(broker, message, error, attempt, policy.max_attempts, delay)
                return
            error = JobError(SRV_6003, f"retry could not be scheduled after: {error.code} {error.message}")
        message.fail()
        message.options.update(
            error_code=error.code, error=error.message, attempts=attempt, failed_at=self.clock_ms()
        )
        message.options.pop("retry_at", None)
        log_final_failure(broker, message, error, attempt, policy.max_attempts)

    def _schedule_retry(
        self, broker: Broker, message: MessageProxy, error: JobError, attempt: int, delay: int
    ) -> bool:
        retry_at = self.clock_ms() + delay
        retry = message.copy(
            options={
                "attempt": attempt + 1,
                "last_error_code": error.code,
                "last_error": error.message,
                "retry_at": retry_at,
            }
        )
        try:
            broker.enqueue(retry, delay=delay)
        except Exception:
            # Marking the message failed dead-letters it: kept, not lost.
            logger.exception("Could not enqueue the retry of job %s", message.message_id)
            return False
        message.options["retry_at"] = retry_at
        message.options["last_error_code"] = error.code
        return True


def _as_dict(policy: QueuePolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__slots__}
