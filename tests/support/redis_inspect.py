"""Read what the broker left in Redis: dead letters, delayed messages, every value of a namespace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis


def dead_letters(client: redis.Redis, namespace: str, queue: str) -> list[dict[str, Any]]:
    ids = client.zrange(f"{namespace}:{queue}.XQ", 0, -1)
    if not ids:
        return []
    return [json.loads(raw) for raw in client.hmget(f"{namespace}:{queue}.XQ.msgs", ids) if raw]


def delayed_count(client: redis.Redis, namespace: str, queue: str) -> int:
    return int(client.hlen(f"{namespace}:{queue}.DQ.msgs"))


def dump_namespace(client: redis.Redis, namespace: str) -> str:
    """Every key and value under ``namespace`` as one text, for leak scans."""
    parts: list[str] = []
    for key in client.scan_iter(match=f"{namespace}*", count=500):
        kind = client.type(key).decode()
        values: list[Any]
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [json.dumps(e, default=repr) for e in client.xrange(key)]
        else:
            values = [kind]
        parts.append(key.decode("utf-8", "replace"))
        parts.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
    return "\n".join(parts)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; never a bare sleep in a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
