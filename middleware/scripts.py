"""Lua scripts run with EVALSHA, also inside pipelines, without a SCRIPT EXISTS per call.

redis-py's Script objects check ``SCRIPT EXISTS`` before every pipeline that
contains them: one extra round trip per enqueue. We load each script once per
client and call EVALSHA; after a Redis restart (NOSCRIPT) we load again and
retry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import NoScriptError


class LuaScript:
    def __init__(self, source: bytes | str) -> None:
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()

    @classmethod
    def from_file(cls, path: Path) -> LuaScript:
        return cls(path.read_bytes())

    def load(self, client: redis.Redis) -> None:
        client.script_load(self.source)

    def __call__(self, client: redis.Redis, keys: list[Any], args: list[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.load(client)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: list[Any], args: list[Any]) -> None:
        """Add a call to ``pipe``; run the pipeline with :func:`execute`."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


def execute(pipe: Any, client: redis.Redis, scripts: list[LuaScript]) -> list[Any]:
    """Execute ``pipe``; a call that failed only because Redis lost our scripts is loaded and re-issued.

    Only the failed calls run again: re-running the whole pipeline would
    repeat commands that did run (an enqueue, twice).
    """
    commands = [args for args, _options in pipe.command_stack]
    results = list(pipe.execute(raise_on_error=False))
    loaded = False
    for i, result in enumerate(results):
        if isinstance(result, NoScriptError):
            if not loaded:
                for script in scripts:
                    script.load(client)
                loaded = True
            results[i] = client.execute_command(*commands[i])  # type: ignore[no-untyped-call]
        elif isinstance(result, Exception):
            raise result
    return results
