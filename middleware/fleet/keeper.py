"""The keeper thread of a worker process: heartbeats, lease renewal, dead-worker recovery.

It runs beside the consumers, so heartbeats keep flowing while every worker
thread is busy with a long job (Dramatiq's consumers only heartbeat when they
talk to Redis, and stop when prefetch is full: its issue #692). Every tick it
renews the leases of the messages this process holds and requeues the
in-flight messages of workers whose heartbeat is older than the timeout, so a
SIGKILLed worker's jobs run again within about timeout + one tick.

After a Redis outage every worker's heartbeat looks stale at once, the live
ones included. A keeper that lost Redis therefore heartbeats and renews as
soon as it is back, but judges other workers dead only once it has been
connected again for a full timeout: by then every live worker has
heartbeated. (At boot it may recover at once.) It also returns the messages
its consumers could not put back while Redis was down (see
``FleetBroker.return_later``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import redis

from .. import keys

if TYPE_CHECKING:
    from . import FleetBroker

logger = logging.getLogger("middleware.fleet")

# The worker's description (for operators) changes rarely: refresh it every
# fifth tick; its expiry covers the gap.
DESCRIBE_EVERY = 5


class Keeper(threading.Thread):
    def __init__(self, broker: FleetBroker, interval_s: float) -> None:
        super().__init__(name="taatom-fleet-keeper", daemon=True)
        self.broker = broker
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.ticks = 0
        self._cut_off = False
        self._judge_after = 0.0  # time.monotonic() from which dead workers may be recovered
        self.info: dict[str, str | int] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": int(time.time() * 1000),
        }

    def run(self) -> None:
        self.tick()  # describe this worker at once, not one interval after it starts
        while not self.stopped.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        broker = self.broker
        try:
            queues = sorted(broker.get_declared_queues() | broker.delay_queues)
            if self.ticks % DESCRIBE_EVERY == 0:
                self._describe(queues)
            self.ticks += 1
            judging = not self._cut_off and time.monotonic() >= self._judge_after
            recovered = broker.fleet.tick(
                broker.lease_ms, broker.held_messages(), broker.heartbeat_timeout if judging else -1, queues
            )
            if self._cut_off:
                self._cut_off = False
                self._judge_after = time.monotonic() + broker.heartbeat_timeout / 1000
                logger.info(
                    "Fleet keeper reaches Redis again; recovery of dead workers resumes in %d ms.",
                    broker.heartbeat_timeout,
                )
            if recovered:
                logger.warning("Requeued %d in-flight messages of dead workers.", recovered)
            returned = broker.return_orphans()
            if returned:
                logger.warning(
                    "Returned %d messages this worker could not requeue during an outage.", returned
                )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._cut_off = True
            logger.warning("Fleet keeper cannot reach Redis (%s); retrying.", type(exc).__name__)

    def _describe(self, queues: list[str]) -> None:
        """Who this worker is, for operators; expires shortly after the worker stops."""
        key = keys.worker(self.broker.namespace, self.broker.broker_id)
        pipe = self.broker.client.pipeline(transaction=False)
        info: dict[str | bytes, str | int] = {k: v for k, v in self.info.items()}
        info["queues"] = ",".join(q for q in queues if "." not in q)
        pipe.hset(key, mapping=info)  # type: ignore[arg-type]  # redis-py wants an invariant key union
        pipe.pexpire(key, int(self.interval_s * 1000 * DESCRIBE_EVERY) + self.broker.heartbeat_timeout)
        pipe.execute()

    def stop(self) -> None:
        self.stopped.set()
