"""The ``aggregate_analytics`` actor's job function: payload in, roll-up report out."""

from __future__ import annotations

from collections.abc import Callable

from middleware.errors import VAL_2001, JobError

from ..actor import JobResult
from ..collections import CollectionNames
from ..payloads import AnalyticsPayload
from ..runtime import Runtime
from ..settings import Settings
from .ranges import RangeError, requested_range
from .rollup import aggregate


def make_analytics_job(runtime: Runtime, settings: Settings) -> Callable[[AnalyticsPayload], JobResult]:
    names = CollectionNames.from_settings(settings)
    max_days = settings.analytics_max_range_days

    def aggregate_analytics(payload: AnalyticsPayload) -> JobResult:
        # The schema checks the range too when it knows the maximum; this is
        # the check that always holds, whoever wrote the message.
        try:
            requested = requested_range(payload.start_date, payload.end_date, max_days=max_days)
        except RangeError as exc:
            raise JobError(VAL_2001, f"invalid AnalyticsPayload payload: {exc}") from None
        report = aggregate(runtime.mongo_db(), requested, payload.aggregation_type, names=names)
        return report.as_result()

    return aggregate_analytics
