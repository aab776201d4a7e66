"""The operator's web dashboard: queues, dead letters, jobs, workers, scheduler, ``/metrics``.

``create_app(ops)`` gives an ASGI app to mount in a web app; ``serve(ops, host,
port)`` runs it standalone. See docs/dashboard.md.
"""

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
