"""The MongoDB collections the analytics and cleanup jobs read and write.

Names are configurable (DESIGN.md, "MongoDB collections"); the defaults are
the design's. The jobs receive one :class:`CollectionNames` built from the
settings, so nothing below the actor reads configuration itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal

from bson.codec_options import CodecOptions

from .settings import Settings

AggregationType = Literal["hourly", "daily"]

# Dates read back as aware UTC, whatever options the caller's client was built with.
UTC_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)


@dataclass(frozen=True)
class CollectionNames:
    analytics_events: str = "analytics_events"
    analytics_hourly: str = "analytics_hourly"
    analytics_daily: str = "analytics_daily"
    error_logs: str = "error_logs"

    @classmethod
    def from_settings(cls, settings: Settings) -> CollectionNames:
        return cls(
            analytics_events=settings.analytics_events_collection,
            analytics_hourly=settings.analytics_hourly_collection,
            analytics_daily=settings.analytics_daily_collection,
            error_logs=settings.error_logs_collection,
        )

    def aggregates(self, aggregation_type: AggregationType) -> str:
        """Where roll-ups of ``aggregation_type`` go."""
        return self.analytics_hourly if aggregation_type == "hourly" else self.analytics_daily
