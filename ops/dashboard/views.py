"""What pages and the JSON API show, built from the read model.

Everything an operator sees of a job — arguments, results, errors — goes
through :func:`safe` or :func:`safe_text` here, the sanitizer of the policy
middleware, even where the read model already redacted it: one choke point
is easier to trust than many careful call sites.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from middleware.errors import registry
from middleware.sanitize import redact, redact_text
from ops.inspect import MessageRow, QueueOverview, WorkerRow

from .scheduler_panel import Replica

CHART_OUTCOMES = ("succeeded", "retried", "failed")


def safe(data: Any) -> Any:
    return redact(data)


def safe_text(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


def compact_json(data: Any, limit: int | None = None) -> str:
    text = json.dumps(data, default=str, ensure_ascii=False, separators=(", ", ": "))
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def pretty_json(data: Any) -> str:
    return json.dumps(data, default=str, ensure_ascii=False, indent=2, sort_keys=True)


def span(seconds: float) -> str:
    """A duration for humans: ``45s``, ``3m 12s``, ``2h 5m``, ``3d 4h``."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def relative(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "—"
    delta = (when - now).total_seconds()
    return f"in {span(delta)}" if delta > 0.5 else f"{span(delta)} ago"


def utc(when: datetime | None) -> str:
    return "—" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


def error_meaning(code: str | None) -> str | None:
    entry = registry().get(code or "")
    return entry.meaning if entry else None


# --- overview ------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    waiting: int
    delayed: int
    running: int
    succeeded_1h: int
    failed_1h: int
    dead: int
    paused: tuple[str, ...]


def totals(queues: Sequence[QueueOverview]) -> Totals:
    return Totals(
        waiting=sum(q.waiting for q in queues),
        delayed=sum(q.delayed for q in queues),
        running=sum(q.running for q in queues),
        succeeded_1h=sum(q.succeeded_1h for q in queues),
        failed_1h=sum(q.failed_1h for q in queues),
        dead=sum(q.dead for q in queues),
        paused=tuple(q.name for q in queues if q.paused),
    )


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    label: str
    segments: tuple[tuple[str, float, float, int], ...]  # (outcome, y, height, count)


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int
    bottom: int
    left: int
    scale_max: int
    bars: tuple[Bar, ...]
    sums: dict[str, int]
    ticks: tuple[tuple[float, str], ...]

    @property
    def plot_height(self) -> int:
        return self.bottom - self.top

    @property
    def gridlines(self) -> list[tuple[float, str]]:
        """(y, label) at zero, half and full scale."""
        return [(self.bottom - self.plot_height * f, f"{self.scale_max * f:g}") for f in (0.0, 0.5, 1.0)]


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n that is >= value (a readable axis maximum)."""
    if value <= 1:
        return 1
    magnitude: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def chart(
    series: Sequence[tuple[datetime, Mapping[str, int]]], width: int = 1200, height: int = 170
) -> Chart:
    """Stacked bars per minute (succeeded, retried, failed), laid out for an inline SVG."""
    left, top, bottom = 44, 8, height - 22
    plot_w = width - left - 4
    slot = plot_w / max(1, len(series))
    peak = max((sum(counts.get(o, 0) for o in CHART_OUTCOMES) for _, counts in series), default=0)
    scale = _nice_ceiling(peak)
    per_unit = (bottom - top) / scale
    bars = []
    for i, (minute, counts) in enumerate(series):
        y = float(bottom)
        segments = []
        for outcome in CHART_OUTCOMES:
            n = counts.get(outcome, 0)
            if n:
                h = n * per_unit
                y -= h
                segments.append((outcome, round(y, 2), round(h, 2), n))
        label = (
            minute.strftime("%H:%M UTC")
            + ": "
            + (
                ", ".join(f"{counts.get(o, 0)} {o}" for o in CHART_OUTCOMES)
                if segments
                else "nothing finished"
            )
        )
        bars.append(
            Bar(round(left + i * slot + slot * 0.12, 2), round(slot * 0.76, 2), label, tuple(segments))
        )
    n = len(series)
    ticks = tuple(
        (round(left + i * slot + slot / 2, 2), "now" if i == n - 1 else f"-{n - 1 - i}m")
        for i in range(n)
        if (n - 1 - i) % 15 == 0
    )
    sums = {o: sum(c.get(o, 0) for _, c in series) for o in CHART_OUTCOMES}
    return Chart(width, height, top, bottom, left, scale, tuple(bars), sums, ticks)


@dataclass(frozen=True)
class HostSummary:
    host: str
    alive: int
    total: int
    last_seen: datetime


def hosts(workers: Sequence[WorkerRow]) -> list[HostSummary]:
    by_host: dict[str, list[WorkerRow]] = {}
    for w in workers:
        by_host.setdefault(w.host, []).append(w)
    return [
        HostSummary(host, sum(w.alive for w in rows), len(rows), max(w.last_seen for w in rows))
        for host, rows in sorted(by_host.items())
    ]


@dataclass(frozen=True)
class Alert:
    level: str  # "bad" or "warn"
    text: str


def alerts(queues: Sequence[QueueOverview], workers: Sequence[WorkerRow]) -> list[Alert]:
    """The few things an on-call engineer must not miss, worst first."""
    out = []
    if not any(w.alive for w in workers):
        out.append(Alert("bad", "No worker process is alive: nothing is being processed."))
    dead = [f"{q.name} {q.dead}" for q in queues if q.dead]
    if dead:
        out.append(Alert("bad", "Dead letters waiting for a decision: " + ", ".join(dead) + "."))
    for q in queues:
        if q.paused:
            held = f"{q.waiting} waiting message{'s' if q.waiting != 1 else ''}"
            out.append(Alert("warn", f"Queue {q.name} is paused: {held} will not start until resumed."))
    return out


# --- JSON ----------------------------------------------------------------------------
def queue_json(q: QueueOverview) -> dict[str, Any]:
    return asdict(q)


def message_json(row: MessageRow) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "redis_id": row.redis_id,
        "queue": row.queue,
        "lane": row.lane,
        "actor": row.actor,
        "attempts": row.attempts,
        "error_code": row.error_code,
        "error": safe_text(row.error),
        "enqueued_at": iso(row.enqueued_at),
        "at": iso(row.at),
        "age_s": round(row.age_s, 3),
        "args": safe(row.args),
    }


def job_json(status: Mapping[str, Any]) -> dict[str, Any]:
    """A job's state for the page and the API, every free value sanitized."""
    out: dict[str, Any] = {}
    for key, value in status.items():
        if isinstance(value, datetime):
            out[key] = iso(value)
        elif key == "history":
            out[key] = [{"state": h["state"], "at": iso(h["at"])} for h in value]
        elif key in ("error", "progress_note"):
            out[key] = safe_text(value) if value else value
        elif key == "logs":
            out[key] = [safe_text(line) for line in value or []]
        elif key in ("result", "args"):
            out[key] = safe(value)
        else:
            out[key] = value
    return out


def worker_json(w: WorkerRow) -> dict[str, Any]:
    data = asdict(w)
    data["started_at"], data["last_seen"] = iso(w.started_at), iso(w.last_seen)
    return data


def replica_json(r: Replica) -> dict[str, Any]:
    return {
        "replica_id": r.replica_id,
        "alive": r.alive,
        "seen": iso(r.seen),
        "state": r.state,
        "leader": r.leader,
        "ttl_s": r.ttl_s,
        "details": r.details,
        "schedules": [
            {"name": s.name, "last": iso(s.last), "next": iso(s.next), "details": s.details}
            for s in r.schedules
        ],
    }
