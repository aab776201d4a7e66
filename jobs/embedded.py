"""Embedded mode: run jobs on worker threads inside the sending process.

The broker is Dramatiq's own RedisBroker over an in-process Redis (fakeredis
with Lua), so embedded jobs pass through exactly the middleware and Lua
scripts that real workers use. The worker starts on the first enqueue, never
at import.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading

from dramatiq import Worker
from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

logger = logging.getLogger("jobs.embedded")

# sysexits' EX_CONFIG: the configuration, not the code, is wrong.
EXIT_EMBEDDED_MODE = 78

REFUSAL = (
    "taatom-jobs is in embedded mode: jobs run inside the app process and there is nothing "
    "for `dramatiq jobs` to consume. To run workers, switch to real mode: set "
    "ENABLE_BACKGROUND_JOBS=true (or APP_ENV=production) and point REDIS_URL (or "
    "REDIS_HOST/REDIS_PORT) at the Redis the app sends to."
)


class EmbeddedWorker(Middleware):
    """Starts an in-process :class:`dramatiq.Worker` on the first enqueue.

    It also refuses to boot inside ``dramatiq jobs``: the CLI fires the
    ``process_boot`` hook in each worker process, while our own start-up fires
    it with ``_booting`` set.
    """

    def __init__(self, *, worker_threads: int, worker_timeout_ms: int = 100) -> None:
        self.worker_threads = worker_threads
        self.worker_timeout_ms = worker_timeout_ms
        self.worker: Worker | None = None
        self._lock = threading.Lock()
        self._booting = False

    def after_process_boot(self, broker: Broker) -> None:
        if not self._booting:
            logger.critical(REFUSAL)
            print(REFUSAL, file=sys.stderr)  # noqa: T201 - the CLI may not show our logs
            sys.exit(EXIT_EMBEDDED_MODE)

    def after_enqueue(self, broker: Broker, message: object, delay: int | None) -> None:
        if self.worker is None:
            self.start(broker)

    def start(self, broker: Broker) -> Worker:
        with self._lock:
            if self.worker is None:
                self._booting = True
                try:
                    # Middleware that arms itself on process boot (time
                    # limits among them) must be armed here too.
                    broker.emit_after("process_boot")
                finally:
                    self._booting = False
                worker = Worker(
                    broker, worker_threads=self.worker_threads, worker_timeout=self.worker_timeout_ms
                )
                worker.start()
                self.worker = worker
                atexit.register(self.stop)
                logger.debug("Embedded worker started with %d threads.", self.worker_threads)
            return self.worker

    def join(self, broker: Broker, timeout_ms: int | None = None) -> None:
        """Wait until every queue is drained and every worker thread is idle (demo and tests)."""
        for queue in sorted(broker.get_declared_queues()):
            broker.join(queue, timeout=timeout_ms)
        if self.worker is not None:
            self.worker.join()

    def stop(self, timeout_ms: int = 10_000) -> None:
        with self._lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(timeout=timeout_ms)
