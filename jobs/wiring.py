"""Build the broker and its middleware stack from the settings.

Nothing here opens a connection: redis-py connects on first use, and the
embedded worker starts on the first enqueue.
"""

from __future__ import annotations

from typing import Any

import redis
from cryptography.fernet import MultiFernet
from dramatiq.middleware import CurrentMessage, Middleware

from middleware.attempts import Attempts
from middleware.dead_letters import DeadLetters
from middleware.encryption import ArgumentEncryption, build_keyring
from middleware.fleet import FleetBroker
from middleware.job_log import JobLog
from middleware.job_state import JobState
from middleware.log_sanitizer import guard_dramatiq_loggers
from middleware.sanitize import register_secret
from middleware.secrets_scope import JobSecretsScope
from middleware.sentry import SentryReporter, init_sentry, strip_integration_middleware
from middleware.time_limits import QueueTimeLimit
from middleware.unique import UniqueJobs

from .embedded import EmbeddedWorker
from .logs import WorkerLogging
from .settings import QUEUES, Settings


def redis_client(settings: Settings) -> redis.Redis:
    """A client for the configured Redis (TLS with rediss://), with explicit timeouts.

    With ``REDIS_SENTINELS`` it is a client of the master the Sentinels name.
    Every new connection asks them where the master is, so after a failover
    the next command reaches the promoted replica; a command caught on the old
    master fails once with ``redis.ConnectionError``, which the broker, the
    keeper and the scheduler already treat as transient.
    """
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
    }
    sentinels = settings.redis_sentinel_addresses
    if not sentinels:
        return redis.Redis.from_url(settings.redis_connection_url(), **timeouts)
    from redis.sentinel import Sentinel

    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        sentinels,
        # Sentinels answer at once or not at all: a short timeout moves on to the next one.
        sentinel_kwargs={
            "password": (
                settings.redis_sentinel_password.get_secret_value()
                if settings.redis_sentinel_password is not None
                else None
            ),
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
        },
    )
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        settings.redis_sentinel_master,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        db=settings.redis_db,
        **timeouts,
    )
    return master


def embedded_redis_client() -> redis.Redis:
    import fakeredis  # only embedded mode pays for the import

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def policy_middleware(settings: Settings) -> list[Middleware]:
    """The middleware every broker of ours runs, in order.

    ``before_*`` hooks run in this order and ``after_*`` hooks in reverse, so:
    the secrets scope wraps everything; Sentry, unique keys, job state and the
    job log see the attempts policy's decision; arguments are opened before
    the job and re-sealed before a dead letter is written. Concurrency caps
    and pauses are enforced by the broker's consumer, where messages are
    fetched (see middleware.fleet).
    """
    attempts = Attempts({q: settings.queue_policy(q) for q in QUEUES}, settings.default_queue_policy())
    return [
        JobSecretsScope(),
        SentryReporter(),
        # A duplicate of a unique job is skipped before anything else records it as started.
        UniqueJobs(settings.unique_ttl_s),
        JobState(settings.job_state_ttl_s),
        JobLog(attempts.max_attempts_of),
        ArgumentEncryption(encryption_keyring(settings)),
        DeadLetters(),
        attempts,
        CurrentMessage(),
        QueueTimeLimit(
            {q: settings.queue_policy(q).time_limit_ms for q in QUEUES},
            settings.default_queue_policy().time_limit_ms,
        ),
    ]


def encryption_keyring(settings: Settings) -> MultiFernet | None:
    if settings.jobs_encryption_key is None:
        return None
    old = (
        settings.jobs_encryption_old_keys.get_secret_value().split(",")
        if settings.jobs_encryption_old_keys
        else []
    )
    return build_keyring([settings.jobs_encryption_key.get_secret_value(), *[k for k in old if k.strip()]])


def register_settings_secrets(settings: Settings) -> None:
    """Teach the sanitizer the literal secrets of this configuration."""
    for value in (
        settings.redis_password,
        settings.redis_sentinel_password,
        settings.smtp_password,
        settings.dashboard_password,
        settings.dashboard_token,
        settings.sentry_dsn,
        settings.jobs_encryption_key,
        settings.jobs_encryption_old_keys,
    ):
        if value is not None:
            register_secret(value.get_secret_value())


def build_broker(settings: Settings, *, client: redis.Redis | None = None) -> FleetBroker:
    """The broker for ``settings``: Redis in real mode, an in-process Redis in embedded mode."""
    register_settings_secrets(settings)
    guard_dramatiq_loggers(mask_emails=settings.is_production)
    if settings.sentry_dsn is not None:
        # Before the broker exists: the integration hooks broker construction.
        init_sentry(settings.sentry_dsn.get_secret_value(), environment=settings.app_env)
    middleware: list[Middleware] = policy_middleware(settings)
    options: dict[str, Any] = {"namespace": settings.redis_namespace}
    if settings.real_mode:
        client = client or redis_client(settings)
        # Embedded mode leaves logging to the app that embeds it.
        middleware.append(WorkerLogging(settings))
    else:
        client = client or embedded_redis_client()
        middleware.append(EmbeddedWorker(worker_threads=settings.embedded_worker_threads))
    broker = FleetBroker(
        client=client,
        middleware=middleware,
        caps={q: settings.queue_policy(q).concurrency for q in QUEUES},
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        # OTP and password-reset e-mails must not wait behind notifications.
        high_lanes=frozenset({"email"}),
        **options,
    )
    strip_integration_middleware(broker)
    return broker


def embedded_worker(broker: FleetBroker) -> EmbeddedWorker | None:
    for m in broker.middleware:
        if isinstance(m, EmbeddedWorker):
            return m
    return None
