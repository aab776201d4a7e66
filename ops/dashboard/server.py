"""Run the dashboard standalone with uvicorn (``taatom-jobs dashboard``)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ops.context import Ops

from .app import create_app
from .auth import is_loopback

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 78  # as ops.cli: a setting forbids what was asked


def refusal(ops: Ops, host: str) -> str | None:
    """Why the dashboard must not listen on ``host`` with these settings, or None."""
    if ops.settings.dashboard_protected or is_loopback(host):
        return None
    return (
        f"taatom-jobs dashboard: refusing to listen on {host} without credentials; "
        "set DASHBOARD_USER and DASHBOARD_PASSWORD, or DASHBOARD_TOKEN, or listen on 127.0.0.1"
    )


@contextmanager
def _quiet_exit_signals() -> Iterator[None]:
    """Let SIGINT/SIGTERM end ``serve()`` with a return, not a traceback or a re-raised signal.

    uvicorn handles both while it runs and, once shut down, re-raises the
    signal to the handler it found: this one, which only ignores it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ignore(signum: int, frame: object) -> None:
        return None

    previous = {sig: signal.signal(sig, ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(ops: Ops, host: str, port: int) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; returns the process exit code.

    Refuses (78) a non-loopback ``host`` unless credentials are configured.
    """
    problem = refusal(ops, host)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_CONFIG
    config = uvicorn.Config(
        create_app(ops), host=host, port=port, lifespan="off", server_header=False, log_level="info"
    )
    server = uvicorn.Server(config)
    with _quiet_exit_signals():
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    return EXIT_OK if server.started else EXIT_FAILED
