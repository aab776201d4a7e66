"""Bulk enqueue: all or nothing on validation, then pipelined enqueue through the same hooks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from jobs.bulk import BulkValidationError, send_many
from tests.conftest import Stack
from tests.support.probe import declare_probe


def _payloads(n: int) -> list[dict[str, object]]:
    return [
        {"to": f"user{i}@example.com", "subject": f"Hello {i}", "text": "Welcome to Taatom"} for i in range(n)
    ]


def test_one_invalid_payload_enqueues_nothing_and_is_reported(
    real_env: dict[str, str], make_stack: Callable[[dict[str, str]], Stack], redis_client: redis.Redis
) -> None:
    stack = make_stack(real_env)
    payloads = _payloads(10_000)
    payloads[7321] = {"to": "user@example.com", "subject": "bad\r\nBcc: x@evil.example", "text": "x"}
    with pytest.raises(BulkValidationError) as info:
        send_many(stack.actors.send_email, payloads)
    assert list(info.value.invalid) == [7321] and info.value.count == 1
    assert info.value.code == "VAL_2001" and "#7321" in info.value.message
    assert redis_client.llen(f"{stack.broker.namespace}:email") == 0


def test_all_valid_payloads_are_enqueued_with_their_state(
    real_env: dict[str, str], make_stack: Callable[[dict[str, str]], Stack], redis_client: redis.Redis
) -> None:
    stack = make_stack(real_env)
    messages = send_many(stack.actors.send_email, _payloads(10_000))
    ns = stack.broker.namespace
    assert len(messages) == 10_000 and len({m.message_id for m in messages}) == 10_000
    assert redis_client.llen(f"{ns}:email") == 10_000
    assert redis_client.hlen(f"{ns}:email.msgs") == 10_000
    for message in (messages[0], messages[4999], messages[-1]):
        status = stack.api.status(message.message_id)
        assert status is not None and status["state"] == "queued" and status["queue"] == "email"
    # order is kept
    first, last = redis_client.lindex(f"{ns}:email", 0), redis_client.lindex(f"{ns}:email", -1)
    assert (first.decode(), last.decode()) == (
        messages[0].options["redis_message_id"],
        messages[-1].options["redis_message_id"],
    )


def test_bulk_sends_run_in_embedded_mode(embedded_stack: Stack) -> None:
    probe = declare_probe(embedded_stack.broker)
    messages = send_many(probe, [{"key": f"b{i}"} for i in range(50)])
    for message in messages:
        assert embedded_stack.api.result(message.message_id, timeout=20)["success"] is True
