"""Tell the sanitizer which values of the running job are secrets.

An exception message or a log line that repeats an OTP, a password argument
or an e-mail body is then redacted even though nothing about it looks secret.
This middleware goes first in the stack: its ``before`` hook runs before any
other and its ``after`` hook after every other, so the scope covers them all.
"""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware

from .sanitize import clear_job_secrets, is_secret_key, set_job_secrets


def sensitive_args_of(broker: Broker, actor_name: str) -> frozenset[str]:
    """The argument names an actor declares sensitive (``JobActor.sensitive_args``)."""
    try:
        actor = broker.get_actor(actor_name)
    except ActorNotFound:
        return frozenset()
    return frozenset(getattr(actor, "sensitive_args", frozenset()))


def secret_values(kwargs: dict[str, Any], sensitive: frozenset[str]) -> list[Any]:
    return [v for k, v in kwargs.items() if k in sensitive or is_secret_key(k)]


class JobSecretsScope(Middleware):
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        sensitive = sensitive_args_of(broker, message.actor_name)
        set_job_secrets(secret_values(message.kwargs, sensitive))

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        clear_job_secrets()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        clear_job_secrets()
