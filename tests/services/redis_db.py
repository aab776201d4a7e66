"""Real Redis for tests: a fixed test DB number and a fresh key namespace per test.

Tests only ever delete keys under the namespace they created, never flush.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

__all__ = ["REDIS_TEST_URL", "delete_namespace", "redis_client", "redis_namespace"]

REDIS_TEST_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_TEST_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
REDIS_TEST_DB = int(os.environ.get("TEST_REDIS_DB", "13"))
REDIS_TEST_URL = f"redis://{REDIS_TEST_HOST}:{REDIS_TEST_PORT}/{REDIS_TEST_DB}"


def delete_namespace(client: redis.Redis, namespace: str) -> int:
    """Delete every key under ``namespace`` (and nothing else); return how many."""
    deleted = 0
    for batch in _batched(client.scan_iter(match=f"{namespace}*", count=500), 500):
        deleted += client.delete(*batch)
    return deleted


def _batched(it: Iterator[bytes], n: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=10)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not answering at {REDIS_TEST_URL}: {exc} (.ci/run starts it)")
    yield client
    client.close()


@pytest.fixture
def redis_namespace(redis_client: redis.Redis) -> Iterator[str]:
    namespace = f"taatom-test-{uuid.uuid4().hex[:10]}"
    yield namespace
    delete_namespace(redis_client, namespace)
