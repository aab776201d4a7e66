"""A high-priority lane runs under its queue's policy: attempts, backoff and time limit.

``email.HI`` is a lane of ``email``: OTP and password-reset e-mails must get
the e-mail queue's settings, not the catch-all default's (which, for one,
allows a job ten times as long).
"""

from __future__ import annotations

from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from jobs.settings import Settings
from jobs.wiring import policy_middleware
from middleware.attempts import Attempts
from middleware.time_limits import QueueTimeLimit
from tests.conftest import Stack


def _delivery(queue_name: str, actor_name: str) -> MessageProxy:
    message: Message[Any] = Message(
        queue_name=queue_name, actor_name=actor_name, args=(), kwargs={}, options={"attempt": 1}
    )
    return MessageProxy(message)


def test_high_lane_messages_get_the_email_queues_attempts_backoff_and_time_limit(
    embedded_stack: Stack,
) -> None:
    settings = Settings.from_mapping(
        {"EMAIL_MAX_ATTEMPTS": "5", "EMAIL_BACKOFF_MIN_MS": "1500", "EMAIL_TIME_LIMIT_S": "45"}
    )
    middleware = policy_middleware(settings)
    attempts = next(m for m in middleware if isinstance(m, Attempts))
    limits = next(m for m in middleware if isinstance(m, QueueTimeLimit))
    broker = embedded_stack.broker
    email = settings.queue_policy("email")
    assert (email.max_attempts, email.backoff_min_ms, email.time_limit_ms) == (5, 1500, 45000)
    assert settings.default_queue_policy().time_limit_ms != 45000

    for lane in ("email", "email.HI", "email.HI.DQ", "email.DQ"):
        message = _delivery(lane, "send_email")
        policy = attempts.policy_for(broker, message)
        assert (policy.max_attempts, policy.backoff_min_ms) == (5, 1500), lane
        assert limits.limit_ms_for(broker, message) == 45000, lane
