"""Imported by `dramatiq jobs tests.reliability.ledger_worker`: adds the ledger actors to the real broker.

The ledger goes to ``RELIABILITY_LEDGER_URL`` under ``RELIABILITY_LEDGER_NS``
(test-only variables; by default the broker's own Redis and namespace).
"""

import os

import redis

import jobs

from .ledger import Ledger, declare_ledger_actors

_url = os.environ.get("RELIABILITY_LEDGER_URL")
_client = (
    redis.Redis.from_url(_url, socket_timeout=10, socket_connect_timeout=5) if _url else jobs.broker.client
)
ledger = Ledger(_client, os.environ.get("RELIABILITY_LEDGER_NS", jobs.broker.namespace))
actors = declare_ledger_actors(jobs.broker, ledger)
