"""Wire a scheduler daemon from the settings: real (Redis gate, actors, heartbeat) or dry run."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import redis

from jobs.actors import declare_actors
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.wiring import build_broker, redis_client

from .daemon import Daemon, describe, utc_now
from .emitter import ActorSender, DryRunSender, Emitter, Sender
from .gate import Cursor, Gate, MemoryGate, RedisGate
from .health import Heartbeat, Identity
from .schedules import Schedule, build_schedules
from .stop import StopEvent

logger = logging.getLogger("scheduler.wiring")

# The scheduler issues no blocking reads: a short socket timeout lets it
# notice a hung Redis, and stop, within seconds.
SOCKET_TIMEOUT_S = 5.0


def replica_id(settings: Settings) -> str:
    return settings.scheduler_replica_id or f"{socket.gethostname()}:{os.getpid()}"


def build_daemon(
    settings: Settings, *, dry_run: bool = False, clock: Callable[[], datetime] = utc_now
) -> Daemon:
    """Wire a daemon for ``settings``: Redis gate, actors and heartbeat, or memory gate and logs (dry run)."""
    schedules = build_schedules(settings)
    replica = replica_id(settings)
    identity = Identity(replica, socket.gethostname(), os.getpid(), clock(), dry_run)
    stop = StopEvent()
    lookback = timedelta(hours=settings.scheduler_lookback_hours)
    client_settings = settings.model_copy(
        update={"redis_socket_timeout_s": min(settings.redis_socket_timeout_s, SOCKET_TIMEOUT_S)}
    )
    gate: Gate
    sender: Sender
    heartbeat: Heartbeat | None = None
    on_close: list[Callable[[], object]] = []
    if dry_run:
        gate = MemoryGate(_read_cursors(client_settings, schedules, replica) if settings.real_mode else {})
        sender = DryRunSender()
    else:
        client = redis_client(client_settings)
        # A sent window stays known a day longer than anything is caught up.
        emitted_ttl_s = int(lookback.total_seconds()) + 86_400
        gate = RedisGate(client, settings.redis_namespace, replica, emitted_ttl_s=emitted_ttl_s)
        broker = build_broker(settings, client=client)
        runtime = Runtime(settings)
        sender = ActorSender({actor.actor_name: actor for actor in declare_actors(broker, settings, runtime)})
        heartbeat = Heartbeat(client, settings.redis_namespace, replica, settings.scheduler_heartbeat_s)
        on_close = [broker.close, runtime.close, client.close]
    emitter = Emitter(gate, sender, lookback=lookback, start=identity.started_at, stopping=stop.is_set)
    return Daemon(
        settings, schedules, emitter, identity, stop, heartbeat=heartbeat, clock=clock, on_close=on_close
    )


def _read_cursors(settings: Settings, schedules: Sequence[Schedule], replica: str) -> dict[str, Cursor]:
    """The fleet's cursors, read only, so a dry run shows what catching up would emit."""
    client = redis_client(settings)
    gate = RedisGate(client, settings.redis_namespace, replica, emitted_ttl_s=1)
    try:
        found = {s.name: gate.cursor(s.name) for s in schedules}
        return {name: cursor for name, cursor in found.items() if cursor is not None}
    except redis.RedisError as exc:
        logger.warning("Dry run: cannot read the cursors (%s); starting from now", describe(exc))
        return {}
    finally:
        client.close()
