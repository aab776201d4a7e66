"""The heartbeat key: a replica's identity and state, each schedule's next and last fire.

``{ns}:scheduler:heartbeat:{replica}`` holds one JSON document, rewritten
every ``SCHEDULER_HEARTBEAT_S`` with a TTL of three intervals: a replica that
dies disappears on its own; one that stops cleanly says ``"state": "stopped"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from . import keys
from .gate import Cursor
from .schedules import Schedule
from .windows import next_fire, window_of


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    replica: str
    host: str
    pid: int
    started_at: datetime
    dry_run: bool = False


def heartbeat_document(
    identity: Identity,
    *,
    now: datetime,
    state: str,
    schedules: Iterable[Schedule],
    cursors: Mapping[str, Cursor | None],
    error: str | None = None,
) -> dict[str, Any]:
    """What the dashboard reads about one replica at ``now``."""
    entries: dict[str, Any] = {}
    for schedule in schedules:
        upcoming = next_fire(schedule.cron, now)
        cursor = cursors.get(schedule.name)
        last = cursor if cursor is not None and cursor.window is not None else None
        entries[schedule.name] = {
            "cron": schedule.cron.expression,
            "actor": schedule.actor,
            "next_fire": iso(upcoming),
            "next_window": schedule.key(window_of(schedule.cron, upcoming)) if upcoming else None,
            "last_fire": iso(last.fire) if last else None,
            "last_window": f"{schedule.name}:{last.window}" if last else None,
        }
    return {
        "replica": identity.replica,
        "host": identity.host,
        "pid": identity.pid,
        "dry_run": identity.dry_run,
        "state": state,
        "started_at": iso(identity.started_at),
        "updated_at": iso(now),
        "error": error,
        "schedules": entries,
    }


class Heartbeat:
    def __init__(self, client: redis.Redis, namespace: str, replica: str, interval_s: float) -> None:
        self.client = client
        self.key = keys.heartbeat(namespace, replica)
        self.ttl_ms = max(5000, int(interval_s * 3000))

    def write(self, document: Mapping[str, Any]) -> None:
        self.client.set(self.key, json.dumps(document), px=self.ttl_ms)


def read_heartbeats(client: redis.Redis, namespace: str) -> list[dict[str, Any]]:
    """Every live replica's heartbeat (for the dashboard and tests)."""
    names = sorted(client.scan_iter(match=keys.heartbeat_pattern(namespace), count=100))
    raw = client.mget(names) if names else []
    return [json.loads(value) for value in raw if value]
