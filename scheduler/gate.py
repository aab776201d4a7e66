"""The exactly-once gate: which replica emits a window, and how far each schedule is settled.

Emitting window ``key`` is two-phase:

1. ``claim``: ``SET {ns}:scheduler:emitted:{key} pending:<replica> NX PX <lease>``.
   One replica wins; the others see ``pending`` (wait) or ``sent`` (done).
2. The winner sends the message with ``unique_key=key``, then ``confirm``
   rewrites the key to ``sent:<replica>:<message id>`` with a TTL longer
   than the look-back.

A replica that dies (or loses Redis) between the two leaves a ``pending``
claim that expires after the lease; the window is then claimed and sent
again. If the first send did reach Redis, both messages carry the same
``unique_key``, so the unique-jobs middleware runs only one of them.

The cursor (``{ns}:scheduler:last:{schedule}``) is the last fire time up to
which every window is sent. It only moves forward (a Lua max), so replicas
racing, restarts and clock jumps never move it back.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

import redis

from . import keys

DEFAULT_LEASE_S = 30.0

# KEYS[1] cursor hash. ARGV: fire time (epoch s), window label, time of the update (ISO).
# Moves the cursor to ARGV[1] only if that is later. Returns 1 if it moved.
_ADVANCE = """
local current = tonumber(redis.call("hget", KEYS[1], "fire"))
if current and current >= tonumber(ARGV[1]) then
    return 0
end
redis.call("hset", KEYS[1], "fire", ARGV[1], "window", ARGV[2], "updated_at", ARGV[3])
return 1
"""

# KEYS[1] emitted key. ARGV[1] our pending claim. Deletes the key only if the claim is still ours.
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class Claim(Enum):
    WON = "won"  # this replica emits the window
    SENT = "sent"  # already emitted, by anyone
    PENDING = "pending"  # another replica is emitting it right now


@dataclass(frozen=True)
class Cursor:
    fire: datetime  # every window that fired up to here is settled
    window: str | None  # label of the last settled window; None right after bootstrap


class Gate(Protocol):
    def cursor(self, schedule: str) -> Cursor | None: ...

    def bootstrap(self, schedule: str, at: datetime) -> Cursor:
        """Start an unknown schedule's cursor at ``at``; returns whatever cursor won."""
        ...

    def advance(self, schedule: str, fire: datetime, window: str) -> None: ...

    def claim(self, key: str) -> Claim: ...

    def confirm(self, key: str, message_id: str) -> None: ...

    def release(self, key: str) -> None: ...


def _epoch(moment: datetime) -> int:
    # Fire times are whole seconds; a bootstrap instant is rounded down.
    return int(moment.timestamp())


def _from_epoch(raw: bytes | str | int) -> datetime:
    return datetime.fromtimestamp(int(raw), UTC)


class RedisGate:
    """The gate shared by every replica, in Redis.

    Parameters:
      replica: this replica's id, written into claims for operators.
      emitted_ttl_s: how long a sent window stays known; longer than the look-back.
      lease_s: how long a pending claim blocks other replicas.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        replica: str,
        *,
        emitted_ttl_s: int,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.pending_value = f"pending:{replica}:{uuid.uuid4().hex[:8]}"
        self.replica = replica
        self.emitted_ttl_s = emitted_ttl_s
        self.lease_ms = max(1, int(lease_s * 1000))
        self._advance: Any = client.register_script(_ADVANCE)
        self._release: Any = client.register_script(_RELEASE)

    def cursor(self, schedule: str) -> Cursor | None:
        fields: dict[bytes, bytes] = self.client.hgetall(keys.cursor(self.namespace, schedule))  # type: ignore[assignment]
        if b"fire" not in fields:
            return None
        window = fields.get(b"window")
        return Cursor(_from_epoch(fields[b"fire"]), window.decode() if window else None)

    def bootstrap(self, schedule: str, at: datetime) -> Cursor:
        self.client.hsetnx(keys.cursor(self.namespace, schedule), "fire", _epoch(at))
        cursor = self.cursor(schedule)
        assert cursor is not None
        return cursor

    def advance(self, schedule: str, fire: datetime, window: str) -> None:
        self._advance(
            keys=[keys.cursor(self.namespace, schedule)],
            args=[_epoch(fire), window, datetime.now(UTC).isoformat()],
        )

    def claim(self, key: str) -> Claim:
        name = keys.emitted(self.namespace, key)
        for _ in range(3):
            if self.client.set(name, self.pending_value, nx=True, px=self.lease_ms):
                return Claim.WON
            value = self.client.get(name)
            if value is not None:
                return Claim.SENT if bytes(value).startswith(b"sent:") else Claim.PENDING  # type: ignore[arg-type]
            # The other claim expired between our two commands: try again.
        return Claim.PENDING

    def confirm(self, key: str, message_id: str) -> None:
        self.client.set(
            keys.emitted(self.namespace, key), f"sent:{self.replica}:{message_id}", ex=self.emitted_ttl_s
        )

    def release(self, key: str) -> None:
        self._release(keys=[keys.emitted(self.namespace, key)], args=[self.pending_value])


class MemoryGate:
    """A gate in this process only: for ``--dry-run``, which must not touch Redis."""

    def __init__(self, cursors: dict[str, Cursor] | None = None) -> None:
        self._lock = threading.Lock()
        self._cursors = dict(cursors or {})
        self._emitted: dict[str, str] = {}

    def cursor(self, schedule: str) -> Cursor | None:
        with self._lock:
            return self._cursors.get(schedule)

    def bootstrap(self, schedule: str, at: datetime) -> Cursor:
        with self._lock:
            return self._cursors.setdefault(schedule, Cursor(_from_epoch(_epoch(at)), None))

    def advance(self, schedule: str, fire: datetime, window: str) -> None:
        with self._lock:
            current = self._cursors.get(schedule)
            if current is None or current.fire < fire:
                self._cursors[schedule] = Cursor(fire, window)

    def claim(self, key: str) -> Claim:
        with self._lock:
            state = self._emitted.get(key)
            if state is None:
                self._emitted[key] = "pending"
                return Claim.WON
            return Claim.SENT if state.startswith("sent:") else Claim.PENDING

    def confirm(self, key: str, message_id: str) -> None:
        with self._lock:
            self._emitted[key] = f"sent:{message_id}"

    def release(self, key: str) -> None:
        with self._lock:
            self._emitted.pop(key, None)
