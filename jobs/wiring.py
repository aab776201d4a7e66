"""Build the broker and its middleware stack from the settings.

Nothing here opens a connection: redis-py connects on first use, and the
embedded worker starts on the first enqueue.
"""

from __future__ import annotations

from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, TimeLimit

from middleware.sanitize import register_secret

from .embedded import EmbeddedWorker
from .logs import WorkerLogging
from .settings import Settings


def redis_client(settings: Settings) -> redis.Redis:
    """A client for the configured Redis (TLS with rediss://), with explicit timeouts."""
    return redis.Redis.from_url(
        settings.redis_connection_url(),
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def embedded_redis_client() -> redis.Redis:
    import fakeredis  # only embedded mode pays for the import

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def policy_middleware(settings: Settings) -> list[Middleware]:
    """The middleware every broker of ours runs, in order."""
    return [
        CurrentMessage(),
        TimeLimit(),
    ]


def register_settings_secrets(settings: Settings) -> None:
    """Teach the sanitizer the literal secrets of this configuration."""
    for value in (
        settings.redis_password,
        settings.smtp_password,
        settings.sentry_dsn,
        settings.jobs_encryption_key,
        settings.jobs_encryption_old_keys,
    ):
        if value is not None:
            register_secret(value.get_secret_value())


def build_broker(settings: Settings, *, client: redis.Redis | None = None) -> RedisBroker:
    """The broker for ``settings``: Redis in real mode, an in-process Redis in embedded mode."""
    register_settings_secrets(settings)
    middleware: list[Middleware] = policy_middleware(settings)
    options: dict[str, Any] = {"namespace": settings.redis_namespace}
    if settings.real_mode:
        client = client or redis_client(settings)
        # Embedded mode leaves logging to the app that embeds it.
        middleware.append(WorkerLogging(settings))
    else:
        client = client or embedded_redis_client()
        middleware.append(EmbeddedWorker(worker_threads=settings.embedded_worker_threads))
    return RedisBroker(client=client, middleware=middleware, **options)  # type: ignore[no-untyped-call]


def embedded_worker(broker: RedisBroker) -> EmbeddedWorker | None:
    for m in broker.middleware:
        if isinstance(m, EmbeddedWorker):
            return m
    return None
