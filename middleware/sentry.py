"""Sentry: one event per final job failure, tagged and sanitized.

sentry-sdk's DramatiqIntegration patches ``Broker.__init__`` to add its own
middleware, which opens a scope and a transaction for every message (it cost
about a third of no-op throughput when measured) and reports every failed
attempt with the message's arguments attached. We initialise the SDK with
the integration before the broker exists, then take that middleware out and
report from :class:`SentryReporter` instead: only final failures (permanent,
or attempts exhausted, as the attempts policy decided), tagged ``error_code``,
``queue``, ``actor``, ``attempts``, and every event passes through the
sanitizer. The logging integration is off: the failure line we log at ERROR
is not reported a second time, and no log line pays for Sentry.
"""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware
from sentry_sdk.integrations.dramatiq import DramatiqIntegration, SentryMiddleware
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.redis import RedisIntegration
from sentry_sdk.types import Event

from .sanitize import redact

logger = logging.getLogger("middleware.sentry")


def _before_send(event: Event, hint: dict[str, Any]) -> Event | None:
    event.get("contexts", {}).pop("dramatiq", None)  # the raw message, arguments and all
    sanitized: Event = redact(event)
    return sanitized


def init_sentry(dsn: str, *, environment: str) -> bool:
    """Initialise sentry-sdk for job reporting, unless the process already did (the app owns it then)."""
    if sentry_sdk.get_client().is_active():
        logger.info("Sentry is already initialised by this process; job failures are reported through it.")
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DramatiqIntegration()],
        # Per-command breadcrumbs of the Redis integration cost time and say nothing useful here.
        # The logging integration would wrap every log call (~40 us per job's success line,
        # measured) to make breadcrumbs and events we do not want: failures come from
        # SentryReporter, with their context.
        disabled_integrations=[RedisIntegration(), LoggingIntegration()],
        include_local_variables=False,  # frame locals hold job arguments
        send_default_pii=False,
        max_request_body_size="never",
        before_send=_before_send,
    )
    return True


def strip_integration_middleware(broker: Broker) -> None:
    """Remove the per-message middleware DramatiqIntegration added to ``broker``."""
    broker.middleware[:] = [m for m in broker.middleware if not isinstance(m, SentryMiddleware)]


class SentryReporter(Middleware):
    """Reports final failures; placed before the attempts policy so its after-hook sees the decision."""

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed:
            return
        client = sentry_sdk.get_client()
        if not client.is_active():
            return
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("error_code", str(message.options.get("error_code", "")))
            scope.set_tag("queue", message.queue_name)
            scope.set_tag("actor", message.actor_name)
            scope.set_tag("attempts", str(message.options.get("attempts", "")))
            scope.set_context("job", {"job_id": message.message_id, "error": message.options.get("error")})
            scope.fingerprint = ["{{ default }}", str(message.options.get("error_code", ""))]
            sentry_sdk.capture_exception(exception)

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # Forked worker processes end without running atexit handlers.
        sentry_sdk.flush(timeout=2)
