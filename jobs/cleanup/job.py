"""The ``cleanup`` actor's job function: payload in, counts out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ..actor import JobResult
from ..collections import CollectionNames
from ..payloads import CleanupPayload
from ..runtime import Runtime
from ..settings import Settings
from .batches import Batching
from .run import cleanup


def make_cleanup_job(runtime: Runtime, settings: Settings) -> Callable[[CleanupPayload], JobResult]:
    names = CollectionNames.from_settings(settings)
    batching = Batching(
        size=settings.cleanup_batch_size,
        pause_s=settings.cleanup_batch_pause_ms / 1000,
        progress_every=settings.cleanup_progress_every_batches,
    )

    def run_cleanup(payload: CleanupPayload) -> JobResult:
        # The schema has already held older_than_days to CLEANUP_MIN_OLDER_THAN_DAYS
        # (JobActor validates again in the worker).
        report = cleanup(
            runtime.mongo_db(),
            payload.cleanup_type,
            payload.older_than_days,
            dry_run=payload.dry_run,
            names=names,
            batching=batching,
            now=datetime.now(UTC),
        )
        return report.as_result()

    return run_cleanup
