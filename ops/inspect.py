"""The operator's read model of the fleet, straight from Redis.

Used by the dashboard, the CLI and the metrics endpoint; every argument it
returns has been through the sanitizer (sensitive and secret-named arguments
redacted, sealed ones shown as sealed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from dramatiq.message import Message

from middleware import keys, metrics
from middleware.encryption import SEALED
from middleware.fleet import FleetBroker
from middleware.job_state import JobStateReader
from middleware.sanitize import REDACTED, redact
from middleware.secrets_scope import sensitive_args_of

MessageKind = Literal["waiting", "delayed", "dead"]
DELAYED_SCAN_LIMIT = 2000


@dataclass(frozen=True)
class QueueOverview:
    name: str
    waiting: int
    delayed: int
    running: int
    cap: int | None
    dead: int
    paused: bool
    succeeded_1h: int
    failed_1h: int


@dataclass(frozen=True)
class MessageRow:
    message_id: str
    redis_id: str
    queue: str
    actor: str
    attempts: int
    error_code: str | None
    error: str | None
    enqueued_at: datetime
    at: datetime | None  # due time (delayed) or failure time (dead)
    args: dict[str, Any] = field(default_factory=dict)
    lane: str = "normal"  # "high": the queue's high-priority lane (consumed first)

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.enqueued_at.timestamp())


@dataclass(frozen=True)
class WorkerRow:
    worker_id: str
    host: str
    pid: int | None
    queues: str
    started_at: datetime | None
    last_seen: datetime
    alive: bool


def _dt(ms: float | int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(float(ms) / 1000, tz=UTC)


class Inspector:
    def __init__(self, broker: FleetBroker, queues: tuple[str, ...], socket_timeout_s: float = 30.0) -> None:
        self.broker = broker
        self.client = broker.client
        self.ns = broker.namespace
        self.queues = queues
        self.state = JobStateReader(self.client, self.ns, socket_timeout_s=socket_timeout_s)

    # --- queues -------------------------------------------------------------------
    def overview(self, now_ms: int | None = None) -> list[QueueOverview]:
        now_ms = now_ms or int(time.time() * 1000)
        minute_keys = metrics.minute_keys(self.ns, now_ms, 60)
        pipe = self.client.pipeline(transaction=False)
        for q in self.queues:
            pipe.llen(keys.queue(self.ns, q))
            pipe.llen(keys.queue(self.ns, keys.high_lane(q)))
            pipe.hlen(keys.messages(self.ns, keys.delayed(q)))
            pipe.hlen(keys.messages(self.ns, keys.delayed(keys.high_lane(q))))
            pipe.zcount(keys.slots(self.ns, q), now_ms, "+inf")
            pipe.zcard(keys.dead_letters(self.ns, q))
        pipe.smembers(keys.paused(self.ns))
        for key in minute_keys:
            pipe.hgetall(key)
        replies = pipe.execute()
        per_queue = 6
        paused = {p.decode() for p in replies[per_queue * len(self.queues)]}
        hour: dict[tuple[str, str], int] = {}
        for raw in replies[per_queue * len(self.queues) + 1 :]:
            for k, v in metrics.parse_minute(raw).items():
                hour[k] = hour.get(k, 0) + v
        rows = []
        for i, q in enumerate(self.queues):
            waiting, waiting_high, delayed, delayed_high, running, dead = replies[
                per_queue * i : per_queue * i + per_queue
            ]
            rows.append(
                QueueOverview(
                    name=q,
                    waiting=int(waiting) + int(waiting_high),
                    delayed=int(delayed) + int(delayed_high),
                    running=int(running),
                    cap=self.broker.caps.get(q),
                    dead=int(dead),
                    paused=q in paused,
                    succeeded_1h=hour.get((q, "succeeded"), 0),
                    failed_1h=hour.get((q, "failed"), 0),
                )
            )
        return rows

    def throughput(
        self, minutes: int = 60, now_ms: int | None = None
    ) -> list[tuple[datetime, dict[str, int]]]:
        """Per UTC minute, oldest first: jobs finished per outcome across all queues."""
        now_ms = now_ms or int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        minute_keys = metrics.minute_keys(self.ns, now_ms, minutes)
        for key in minute_keys:
            pipe.hgetall(key)
        series = []
        first_minute = now_ms // 60_000 - minutes + 1
        for offset, raw in enumerate(pipe.execute()):
            totals: dict[str, int] = {}
            for (_, outcome), count in metrics.parse_minute(raw).items():
                totals[outcome] = totals.get(outcome, 0) + count
            series.append((datetime.fromtimestamp((first_minute + offset) * 60, tz=UTC), totals))
        return series

    # --- messages -------------------------------------------------------------------
    def messages(
        self, queue: str, kind: MessageKind, page: int = 0, per_page: int = 25
    ) -> tuple[list[MessageRow], int]:
        """One page of a queue's waiting, delayed or dead messages, newest first, and the total.

        Waiting messages of a high-priority lane come first (they run first), then
        the normal lane's, each newest first; delayed messages of both lanes are
        listed together by due time.
        """
        if queue not in self.queues:
            raise KeyError(queue)
        start, stop = page * per_page, (page + 1) * per_page - 1
        if kind == "waiting":
            return self._waiting(queue, start, stop)
        times: Mapping[bytes, float] = {}
        if kind == "dead":
            zkey = keys.dead_letters(self.ns, queue)
            total = int(self.client.zcard(zkey))
            pairs = cast(list[tuple[bytes, float]], self.client.zrevrange(zkey, start, stop, withscores=True))
            ids = [i for i, _ in pairs]
            times = dict(pairs)
            store = keys.dead_letter_messages(self.ns, queue)
        else:
            stores = [(keys.messages(self.ns, keys.delayed(lane)), name) for lane, name in self._lanes(queue)]
            total = sum(int(self.client.hlen(store)) for store, _ in stores)
            decoded = []
            if total <= DELAYED_SCAN_LIMIT:
                for store, lane_name in stores:
                    decoded += [
                        (rid, json.loads(raw), lane_name)
                        for rid, raw in self.client.hscan_iter(store, count=500)
                    ]
            decoded.sort(key=lambda item: item[1].get("options", {}).get("eta", 0), reverse=True)
            return [
                self._row(rid, data, queue, data.get("options", {}).get("eta"), lane=lane_name)
                for rid, data, lane_name in decoded[start : stop + 1]
            ], total
        raws = self.client.hmget(store, ids) if ids else []
        rows = [
            self._row(rid, json.loads(raw), queue, times.get(rid))
            for rid, raw in zip(ids, raws, strict=True)
            if raw
        ]
        return rows, total

    def _lanes(self, queue: str) -> list[tuple[str, str]]:
        """(queue name, lane) of each lane of ``queue``, the one consumed first first."""
        if queue in self.broker.high_lanes:
            return [(keys.high_lane(queue), "high"), (queue, "normal")]
        return [(queue, "normal")]

    def _waiting(self, queue: str, start: int, stop: int) -> tuple[list[MessageRow], int]:
        lanes = self._lanes(queue)
        pipe = self.client.pipeline(transaction=False)
        for lane, _ in lanes:
            pipe.llen(keys.queue(self.ns, lane))
        lengths = [int(n) for n in pipe.execute()]
        rows: list[MessageRow] = []
        offset = 0
        # The page is a window on the lanes one after the other, each newest first.
        for (lane, lane_name), length in zip(lanes, lengths, strict=True):
            first, last = max(start, offset) - offset, min(stop, offset + length - 1) - offset
            offset += length
            if first > last:
                continue
            ids = list(reversed(self.client.lrange(keys.queue(self.ns, lane), -(last + 1), -(first + 1))))
            raws = self.client.hmget(keys.messages(self.ns, lane), ids) if ids else []
            rows += [
                self._row(rid, json.loads(raw), queue, None, lane=lane_name)
                for rid, raw in zip(ids, raws, strict=True)
                if raw
            ]
        return rows, sum(lengths)

    def _row(
        self,
        redis_id: bytes | str,
        data: dict[str, Any],
        queue: str,
        at_ms: float | None,
        *,
        lane: str = "normal",
    ) -> MessageRow:
        options = data.get("options", {})
        return MessageRow(
            message_id=data.get("message_id", "?"),
            redis_id=redis_id.decode() if isinstance(redis_id, bytes) else redis_id,
            queue=queue,
            actor=data.get("actor_name", "?"),
            attempts=int(options.get("attempts") or options.get("attempt") or 1),
            error_code=options.get("error_code") or options.get("last_error_code"),
            error=options.get("error") or options.get("last_error"),
            enqueued_at=_dt(data.get("message_timestamp", 0)) or datetime.now(UTC),
            at=_dt(at_ms),
            args=self.safe_args(data),
            lane=lane,
        )

    def safe_args(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A message's keyword arguments as an operator may see them."""
        sensitive = sensitive_args_of(self.broker, str(data.get("actor_name", "")))
        args: dict[str, Any] = redact(dict(data.get("kwargs", {})), extra_keys=sensitive)
        if SEALED in data.get("options", {}):
            args.update({name: REDACTED + " (sealed)" for name in sorted(sensitive) if name not in args})
        return args

    # --- one job ----------------------------------------------------------------------
    def job(self, message_id: str) -> dict[str, Any] | None:
        """Its state and history, and, while the message is stored, its sanitized arguments."""
        status = self.state.status(message_id)
        if status is None:
            return None
        queue, redis_id = status.get("queue"), status.get("redis_id")
        status["args"] = None
        if queue and redis_id:
            pipe = self.client.pipeline(transaction=False)
            for store in (
                keys.messages(self.ns, queue),
                keys.messages(self.ns, keys.delayed(queue)),
                keys.messages(self.ns, keys.high_lane(queue)),
                keys.messages(self.ns, keys.delayed(keys.high_lane(queue))),
                keys.dead_letter_messages(self.ns, queue),
            ):
                pipe.hget(store, redis_id)
            stored = next((raw for raw in pipe.execute() if raw), None)
            if stored is not None:
                status["args"] = self.safe_args(json.loads(stored))
        return status

    # --- fleet -------------------------------------------------------------------------
    def workers(self, heartbeat_timeout_ms: int | None = None) -> list[WorkerRow]:
        timeout = heartbeat_timeout_ms or self.broker.heartbeat_timeout
        now_ms = time.time() * 1000
        beats = cast(
            list[tuple[bytes, float]], self.client.zrange(keys.heartbeats(self.ns), 0, -1, withscores=True)
        )
        pipe = self.client.pipeline(transaction=False)
        for worker_id, _ in beats:
            pipe.hgetall(keys.worker(self.ns, worker_id.decode()))
        rows = []
        for (worker_id, seen), info in zip(beats, pipe.execute(), strict=True):
            if not info:
                continue  # a sender, not a worker process
            fields = {k.decode(): v.decode() for k, v in info.items()}
            rows.append(
                WorkerRow(
                    worker_id=worker_id.decode(),
                    host=fields.get("host", "?"),
                    pid=int(fields["pid"]) if fields.get("pid") else None,
                    queues=fields.get("queues", ""),
                    started_at=_dt(int(fields["started_at"])) if fields.get("started_at") else None,
                    last_seen=_dt(seen) or datetime.now(UTC),
                    alive=now_ms - seen < timeout,
                )
            )
        return sorted(rows, key=lambda r: (r.host, r.pid or 0))

    def decode(self, raw: bytes) -> Message[Any]:
        return Message.decode(raw)
