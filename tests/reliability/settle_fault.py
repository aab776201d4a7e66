"""Imported by `dramatiq jobs tests.reliability.ledger_worker tests.reliability.settle_fault`.

Fault injection for one window: a worker process killed after it acked a
finished job and before it wrote that job's outcome. For a ledger job whose
key starts with ``die-after-ack`` (its first delivery only), the process's
job-state writer is held from the job's start, and the process SIGKILLs
itself right after the ack: whatever the job's outcome, only what Redis kept
can tell.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware

import jobs
from middleware.job_state import JobState

from . import ledger_worker  # noqa: F401  (declares the ledger actors on jobs.broker)

PREFIX = "die-after-ack"
_MARK = "_taatom_die_after_ack"


class DieAfterAck(Middleware):
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        key = str(message.kwargs.get("key", ""))
        if not key.startswith(PREFIX):
            return
        first = broker.client.set(  # type: ignore[attr-defined]
            f"{broker.namespace}:fault:{message.message_id}",  # type: ignore[attr-defined]
            1,
            nx=True,
            ex=600,
        )
        if not first:
            return
        state = next(m for m in broker.middleware if isinstance(m, JobState))
        never = threading.Event()
        state._writer_for(broker).submit_commands(lambda pipe: never.wait())
        message.__dict__[_MARK] = True

    def after_ack(self, broker: Broker, message: MessageProxy, *args: Any) -> None:
        if message.__dict__.get(_MARK):
            os.kill(os.getpid(), signal.SIGKILL)


jobs.broker.add_middleware(DieAfterAck())
