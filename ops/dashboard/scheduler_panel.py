"""The scheduler panel's view of ``{ns}:scheduler:heartbeat:*``.

The scheduler daemon is young and its heartbeat format may still change, so
this module reads it defensively and alone. A heartbeat is a JSON string (as
``scheduler.health`` writes it today) or a hash, with a TTL. Fields it
recognises (replica id, time seen, state, leadership, each schedule's last
and next fire) get their own columns; any other field is shown as it is.
Everything shown passes through the sanitizer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from middleware.sanitize import redact_text

#: A heartbeat whose own timestamp is older than this is shown as stale even if its key lives on.
STALE_AFTER_S = 90
MAX_REPLICAS = 100

_ID_FIELDS = ("replica", "replica_id", "id", "instance", "name")
_SEEN_FIELDS = (
    "seen",
    "last_seen",
    "heartbeat",
    "heartbeat_at",
    "updated_at",
    "at",
    "ts",
    "timestamp",
    "now",
)
_LEADER_FIELDS = ("leader", "is_leader", "role")
_STATE_FIELDS = ("state", "status")
#: States in which a replica is not scheduling anything.
_DOWN_STATES = frozenset({"stopped", "stopping", "dead", "exited"})
_SCHEDULES_FIELDS = ("schedules", "jobs")
_LAST_FIELDS = ("last_fire", "last_fire_at", "last_fire_time", "last", "last_run", "previous_fire", "prev")
_NEXT_FIELDS = ("next_fire", "next_fire_at", "next_fire_time", "next", "next_run")


@dataclass(frozen=True)
class ScheduleFire:
    name: str
    last: datetime | None
    next: datetime | None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Replica:
    replica_id: str
    alive: bool
    seen: datetime | None
    state: str | None
    leader: bool | None
    schedules: list[ScheduleFire]
    details: dict[str, str]
    ttl_s: float | None


def to_datetime(value: Any) -> datetime | None:
    """Epoch seconds or milliseconds (number or text) or ISO 8601 text -> aware UTC; else None."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if number is None or number <= 0:
        return None
    if number > 1e11:  # milliseconds
        number /= 1000
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str:
    raw = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return redact_text(raw)


def _first(data: Mapping[str, Any], names: Iterable[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in data and data[name] not in (None, ""):
            return name, data[name]
    return None, None


def _leader(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "leader"):
        return True
    if text in ("0", "false", "no", "follower", "standby"):
        return False
    return None


def _schedule(name: str, value: Any) -> ScheduleFire:
    if not isinstance(value, Mapping):
        # {"cleanup": "2026-01-01T03:00:00Z"}: a bare time is the next fire
        return ScheduleFire(name=name, last=None, next=to_datetime(value))
    last_field, last = _first(value, _LAST_FIELDS)
    next_field, nxt = _first(value, _NEXT_FIELDS)
    used = {last_field, next_field, "name", "id", "schedule"}
    return ScheduleFire(
        name=str(value.get("name") or value.get("id") or value.get("schedule") or name),
        last=to_datetime(last),
        next=to_datetime(nxt),
        details={str(k): _text(v) for k, v in value.items() if k not in used and v is not None},
    )


def _schedules(value: Any) -> list[ScheduleFire]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, Mapping):
        items = [_schedule(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [_schedule(str(i), v) for i, v in enumerate(value)]
    else:
        return []
    return sorted(items, key=lambda s: s.name)


def parse_heartbeat(key_suffix: str, data: Mapping[str, Any], ttl_s: float | None, now: float) -> Replica:
    """One replica from its heartbeat's fields (already decoded from JSON or a hash)."""
    data = {str(k): v for k, v in data.items()}
    id_field, replica_id = _first(data, _ID_FIELDS)
    seen_field, seen_raw = _first(data, _SEEN_FIELDS)
    leader_field, leader_raw = _first(data, _LEADER_FIELDS)
    schedules_field, schedules_raw = _first(data, _SCHEDULES_FIELDS)
    state_field, state_raw = _first(data, _STATE_FIELDS)
    seen = to_datetime(seen_raw)
    state = None if state_raw is None else redact_text(str(state_raw))
    fresh = seen is None or now - seen.timestamp() < STALE_AFTER_S
    used = {id_field, seen_field, leader_field, schedules_field, state_field}
    return Replica(
        replica_id=redact_text(str(replica_id or key_suffix)),
        alive=fresh and (state or "").lower() not in _DOWN_STATES,
        seen=seen,
        state=state,
        leader=_leader(leader_raw),
        schedules=_schedules(schedules_raw),
        details={k: _text(v) for k, v in sorted(data.items()) if k not in used and v is not None},
        ttl_s=ttl_s,
    )


def _decode_hash_value(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def read_replicas(client: redis.Redis, namespace: str, now: float | None = None) -> list[Replica]:
    """Every scheduler replica with a live heartbeat key, sorted by id."""
    now = time.time() if now is None else now
    prefix = f"{namespace}:scheduler:heartbeat:"
    found = sorted(client.scan_iter(match=prefix + "*", count=200))[:MAX_REPLICAS]
    replicas = []
    for key in found:
        kind = client.type(key)
        pttl = client.pttl(key)
        ttl_s = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
        data: Mapping[str, Any]
        if kind == b"hash":
            raw_hash: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            data = {k.decode("utf-8", "replace"): _decode_hash_value(v) for k, v in raw_hash.items()}
        elif kind == b"string":
            raw = client.get(key)
            try:
                decoded = json.loads(raw) if raw else {}
            except ValueError:
                decoded = {"value": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw}
            data = decoded if isinstance(decoded, Mapping) else {"value": decoded}
        else:
            continue  # gone between SCAN and TYPE, or a shape we do not know
        suffix = key.decode("utf-8", "replace")[len(prefix) :]
        replicas.append(parse_heartbeat(suffix, data, ttl_s, now))
    return replicas
