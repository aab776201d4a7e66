"""Dead letters that say why: the error code and a sanitized message, no traceback.

Dramatiq's RedisBroker moves a failed message into the queue's dead-letter
set as it was stored at enqueue time. Just before that ``nack``, this
middleware rewrites the stored copy with the outcome the attempts policy
recorded (``error_code``, ``error``, ``attempts``, ``failed_at``), so
operators and the dashboard can see what happened.
"""

from __future__ import annotations

from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

# Rewrite only while the stored copy exists: never create a stray entry.
_REWRITE_IF_PRESENT = """
if redis.call("hexists", KEYS[1], ARGV[1]) == 1 then
    redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
    return 1
end
return 0
"""

DEAD_LETTER_FIELDS = ("error_code", "error", "attempts", "failed_at")


class DeadLetters(Middleware):
    def __init__(self) -> None:
        self._script: object | None = None

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        if not isinstance(broker, RedisBroker) or "redis_message_id" not in message.options:
            return
        if self._script is None:
            self._script = broker.client.register_script(_REWRITE_IF_PRESENT)
        message.options.pop("traceback", None)
        key = f"{broker.namespace}:{message.queue_name}.msgs"
        self._script(keys=[key], args=[message.options["redis_message_id"], message.encode()])  # type: ignore[operator]
