"""Fleet-wide job counters in Redis, for the dashboard and Prometheus.

Every worker process adds to the same Redis hashes, so a scrape of any one
process (or of the dashboard) sees the whole fleet, once: no per-process
registries to sum, no double counting, no port per worker process. Counts
are written by each process's job-state writer, summed over a batch of
transitions, in the same round trip as the transitions.

Keys (under the namespace):
  metrics:jobs          field "actor|queue|outcome|code" -> count (outcome: succeeded, failed, retried, dead)
  metrics:duration      field "actor|le" -> jobs whose run time fell in the bucket ending at ``le``
                        (not cumulative: the scrape sums them up); "actor|sum", "actor|count"
  metrics:minute:{m}    field "queue|outcome" -> count in that UTC minute (kept two hours): throughput charts
"""

from __future__ import annotations

from collections.abc import Iterable

#: Histogram bucket bounds in seconds (Prometheus convention: cumulative, plus +Inf).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
MINUTE_TTL_S = 2 * 3600


def jobs_key(ns: str) -> str:
    return f"{ns}:metrics:jobs"


def duration_key(ns: str) -> str:
    return f"{ns}:metrics:duration"


def minute_key(ns: str, epoch_minute: int) -> str:
    return f"{ns}:metrics:minute:{epoch_minute}"


def bucket_for(duration_s: float) -> str:
    """The histogram bucket a run time falls in."""
    for bound in DURATION_BUCKETS:
        if duration_s <= bound:
            return str(bound)
    return "+Inf"


def minute_keys(ns: str, now_ms: int, minutes: int) -> list[str]:
    """Keys of the last ``minutes`` whole-or-current UTC minutes, oldest first."""
    current = now_ms // 60_000
    return [minute_key(ns, m) for m in range(current - minutes + 1, current + 1)]


def parse_minute(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        queue, _, outcome = field.decode().rpartition("|")
        out[(queue, outcome)] = int(value)
    return out


def parse_jobs(raw: dict[bytes, bytes]) -> Iterable[tuple[str, str, str, str, int]]:
    for field, value in raw.items():
        actor, queue, outcome, code = field.decode().split("|", 3)
        yield actor, queue, outcome, code, int(value)
