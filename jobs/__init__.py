"""taatom-jobs: importing this package wires the broker and declares every actor.

It is the target of ``dramatiq jobs`` and what the app imports::

    from jobs import send_email
    send_email.send(to="ana@example.com", subject="Your code", text="...")

Importing reads the settings once and builds the broker; it opens no
connection and starts no thread.
"""

from __future__ import annotations

import dramatiq

from middleware.job_state import report_progress

from .actors import declare_actors
from .api import JobsAPI
from .bulk import send_many
from .runtime import Runtime
from .settings import Settings
from .wiring import build_broker

settings = Settings.load()
broker = build_broker(settings)
dramatiq.set_broker(broker)
runtime = Runtime(settings)
actors = declare_actors(broker, settings, runtime)
api = JobsAPI(broker, settings)

status = api.status
result = api.result
pause = api.pause
promote = api.promote
resume = api.resume

send_email = actors.send_email
process_image = actors.process_image
aggregate_analytics = actors.aggregate_analytics
cleanup = actors.cleanup

__all__ = [
    "actors",
    "aggregate_analytics",
    "api",
    "broker",
    "cleanup",
    "pause",
    "process_image",
    "promote",
    "report_progress",
    "result",
    "resume",
    "runtime",
    "send_email",
    "send_many",
    "settings",
    "status",
]
