"""Per-queue time limits on top of Dramatiq's TimeLimit.

Dramatiq resolves a limit from the message and then the actor; we add the
queue's policy as the default, so every actor on a queue gets its limit
without repeating it. A job over its limit gets ``TimeLimitExceeded`` raised
in its thread, which the attempts policy translates to ``SRV_6005`` (retried).
The limit arms on ``process_boot``, which the embedded worker also fires.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import TimeLimit

from . import keys


class QueueTimeLimit(TimeLimit):
    def __init__(self, limits_ms: Mapping[str, int], default_ms: int, *, interval_ms: int = 250) -> None:
        super().__init__(time_limit=default_ms, interval=interval_ms)
        self.limits_ms = dict(limits_ms)
        self.default_ms = default_ms

    def limit_ms_for(self, broker: Broker, message: MessageProxy) -> int:
        """The message's limit, else its actor's, else its queue's (a lane's is its queue's)."""
        actor_options = broker.get_actor(message.actor_name).options
        return int(
            message.options.get("time_limit")
            or actor_options.get("time_limit")
            or self.limits_ms.get(keys.group(message.queue_name), self.default_ms)
        )

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        limit = self.limit_ms_for(broker, message)
        self.manager.add_timeout(threading.get_ident(), limit)  # type: ignore[no-untyped-call]
