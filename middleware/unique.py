"""Unique jobs: a message sent with a ``unique_key`` has its effect at most once per TTL.

At start a message claims its key (``run:<message id>``, with the TTL); a
different message finding the key claimed or done is skipped (recorded as
``skipped``, not failed). The same message may run again while its claim is
``run:`` (a retry, or a redelivery after its worker died mid-job); once it
succeeded the key says ``done:`` and even a redelivery of that message is
skipped. A final failure releases the key so a later send can try again.
"""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from . import keys
from .settle import pending_outcome

_CLAIM = """
local current = redis.call("get", KEYS[1])
if not current then
    redis.call("set", KEYS[1], "run:" .. ARGV[1], "PX", ARGV[2])
    return 1
end
if current == "run:" .. ARGV[1] then
    return 1
end
return 0
"""

_RELEASE = """
if redis.call("get", KEYS[1]) == "run:" .. ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class UniqueJobs(Middleware):
    def __init__(self, ttl_s: int) -> None:
        self.ttl_ms = ttl_s * 1000
        self._scripts: dict[str, Any] = {}

    def _script(self, broker: Broker, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = broker.client.register_script(source)  # type: ignore[attr-defined]
        return self._scripts[name]

    def _key(self, broker: Broker, message: MessageProxy) -> str | None:
        unique_key = message.options.get("unique_key")
        return None if not unique_key else keys.unique(broker.namespace, str(unique_key))  # type: ignore[attr-defined]

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        key = self._key(broker, message)
        if key is None:
            return
        claimed = self._script(broker, "claim", _CLAIM)(keys=[key], args=[message.message_id, self.ttl_ms])
        if not claimed:
            raise SkipMessage(f"unique_key {message.options['unique_key']!r} already ran or is running")

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        key = self._key(broker, message)
        if key is None:
            return
        if exception is None:
            done, ttl_ms = f"done:{message.message_id}", self.ttl_ms
            pending = pending_outcome(message)
            if pending is None:
                broker.client.set(key, done, px=ttl_ms)  # type: ignore[attr-defined]
            else:
                # With the outcome, in its round trip: the message stays in Redis until
                # then, and a redelivery meanwhile finds its own claim and runs again.
                pending.write_after(lambda pipe: pipe.set(key, done, px=ttl_ms))
        elif message.failed:
            self._script(broker, "release", _RELEASE)(keys=[key], args=[message.message_id])
