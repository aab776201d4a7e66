"""Terminal rendering for the CLI (rich tables and progress bars)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from middleware.sanitize import redact, redact_text

from .inspect import MessageRow, QueueOverview, WorkerRow


def console() -> Console:
    # Wide enough that piped output (tests, logs) is not wrapped mid-row.
    return Console(width=160, highlight=False)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def _age(at: datetime | None) -> str:
    if at is None:
        return "-"
    seconds = int((datetime.now(UTC) - at).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def overview_table(rows: Sequence[QueueOverview], workers: Sequence[WorkerRow]) -> Table:
    alive = sum(1 for w in workers if w.alive)
    table = Table(title=f"taatom-jobs - {alive} worker process{'es' if alive != 1 else ''} alive")
    for column in ("queue", "waiting", "delayed", "running/cap", "ok 1h", "failed 1h", "dead", "state"):
        table.add_column(column, justify="left" if column in ("queue", "state") else "right")
    for row in rows:
        table.add_row(
            row.name,
            str(row.waiting),
            str(row.delayed),
            f"{row.running}/{row.cap if row.cap is not None else '-'}",
            str(row.succeeded_1h),
            str(row.failed_1h),
            str(row.dead),
            "paused" if row.paused else "active",
        )
    return table


def dead_table(rows: Sequence[MessageRow]) -> Table:
    table = Table(title="dead letters (newest first)")
    for column in ("failed", "queue", "actor", "job id", "redis id", "attempts", "code", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            _age(row.at) + " ago",
            row.queue,
            row.actor,
            row.message_id,
            row.redis_id,
            str(row.attempts),
            row.error_code or "-",
            redact_text(row.error or "")[:80],
        )
    return table


def job_panel(status: dict[str, Any]) -> Panel:
    lines = [
        f"state      {status['state']}",
        f"queue      {status['queue']}    actor {status['actor']}",
        f"attempts   {status['attempts']}",
        *(
            [f"progress   {status['progress']:.0f} % {redact_text(status.get('progress_note') or '')}"]
            if status.get("progress") is not None
            else []
        ),
        f"error      {status['error_code'] or '-'} {redact_text(status['error'] or '')}",
        f"enqueued   {status['enqueued_at']}",
        f"started    {status['started_at']}",
        f"finished   {status['finished_at']}",
        f"arguments  {json.dumps(status.get('args'), default=str)}",
        f"result     {json.dumps(redact(status['result']), default=str)}",
        "history    " + " -> ".join(f"{h['state']} ({h['at']:%H:%M:%S})" for h in status["history"]),
        *(
            ["log lines", *("  " + redact_text(line) for line in status.get("logs") or [])]
            if status.get("logs")
            else []
        ),
    ]
    return Panel("\n".join(lines), title=f"job {status['id']}")
