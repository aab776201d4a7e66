"""The scheduler's Redis keys, beside the broker's under the same namespace (see middleware.keys)."""

from __future__ import annotations


def emitted(ns: str, key: str) -> str:
    """String: who claimed or sent window ``key`` (``pending:...`` or ``sent:...``), with a TTL."""
    return f"{ns}:scheduler:emitted:{key}"


def cursor(ns: str, schedule: str) -> str:
    """Hash: the schedule's last settled fire time (``fire``, epoch s) and window (``window``)."""
    return f"{ns}:scheduler:last:{schedule}"


def heartbeat(ns: str, replica: str) -> str:
    """String (JSON): a replica's state and each schedule's next and last fire, with a TTL."""
    return f"{ns}:scheduler:heartbeat:{replica}"


def heartbeat_pattern(ns: str) -> str:
    return f"{ns}:scheduler:heartbeat:*"
