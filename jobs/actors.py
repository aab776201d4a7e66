"""Declare the four actors of DESIGN.md on a broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dramatiq.broker import Broker

from .actor import JobActor, JobResult
from .analytics.job import make_analytics_job
from .cleanup.job import make_cleanup_job
from .images.job import make_image_job
from .mail.job import make_email_job
from .payloads import AnalyticsPayload, CleanupPayload, EmailPayload, ImagePayload, Payload
from .runtime import Runtime
from .settings import Settings


@dataclass(frozen=True)
class Actors:
    send_email: JobActor
    process_image: JobActor
    aggregate_analytics: JobActor
    cleanup: JobActor

    def __iter__(self) -> Iterator[JobActor]:
        return iter((self.send_email, self.process_image, self.aggregate_analytics, self.cleanup))


def declare_actors(broker: Broker, settings: Settings, runtime: Runtime) -> Actors:
    """Declare the four actors; their job logic reaches shared clients through ``runtime``."""

    def declare(
        name: str,
        queue: str,
        fn: Callable[[Any], JobResult],
        payload: type[Payload],
        label: str,
        sensitive: frozenset[str] = frozenset(),
    ) -> JobActor:
        return JobActor(
            fn,
            broker=broker,
            actor_name=name,
            queue_name=queue,
            payload=payload,
            label=label,
            sensitive_args=sensitive,
            validation_context={
                "cleanup_min_older_than_days": settings.cleanup_min_older_than_days,
                "analytics_max_range_days": settings.analytics_max_range_days,
            },
            max_message_bytes=settings.max_message_bytes,
        )

    return Actors(
        send_email=declare(
            "send_email",
            "email",
            make_email_job(runtime, settings),
            EmailPayload,
            "email",
            # OTP codes and reset links travel in these, often in the subject too.
            frozenset({"subject", "html", "text"}),
        ),
        process_image=declare(
            "process_image",
            "image-processing",
            make_image_job(runtime, settings),
            ImagePayload,
            "image processing",
        ),
        aggregate_analytics=declare(
            "aggregate_analytics",
            "analytics",
            make_analytics_job(runtime, settings),
            AnalyticsPayload,
            "analytics",
        ),
        cleanup=declare("cleanup", "cleanup", make_cleanup_job(runtime, settings), CleanupPayload, "cleanup"),
    )
