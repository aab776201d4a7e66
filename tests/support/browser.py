"""Serve the dashboard on a free loopback port and drive it: httpx, or Debian's chromium via Playwright.

Playwright's own browser download is never used: ``executable_path`` points at
``/usr/bin/chromium`` and each context gets a fresh user-data directory.
"""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from jobs.actor import JobActor
from ops.context import Ops
from ops.dashboard import create_app
from tests.conftest import Stack
from tests.support.probe import declare_all_probes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class LiveServer:
    """``app`` served by uvicorn in a background thread on 127.0.0.1 (a real socket, real headers)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1") -> None:
        # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections (40 ms a request).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextmanager
def chromium(user_data_dir: Path, **context_options: Any) -> Iterator[Any]:
    """A persistent chromium context on a fresh profile directory; yields the BrowserContext."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            **context_options,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Dashboard:
    """A dashboard app on a live server, over a real-mode stack with a probe actor on every queue."""

    server: LiveServer
    stack: Stack
    ops: Ops
    probes: dict[str, JobActor]
    app: Starlette
    prefix: str = ""

    def __repr__(self) -> str:
        return f"<Dashboard {self.url} namespace={self.stack.broker.namespace}>"

    @property
    def url(self) -> str:
        """Where the dashboard answers (the mount point included)."""
        return self.server.url + self.prefix

    def client(self, auth: tuple[str, str] | None = None, **headers: str) -> httpx.Client:
        """A client of the server root; paths given to it include any mount point."""
        return httpx.Client(base_url=self.server.url, auth=auth, headers=headers, timeout=10)


@contextmanager
def serve_dashboard(stack: Stack, mount: str | None = None) -> Iterator[Dashboard]:
    """``create_app`` over ``stack`` on a live server; with ``mount``, inside a host web app at that path.

    The host app has routes of its own named like ours ("overview", "static"),
    so a link built from the host's routing table instead of ours would show.
    """
    probes = declare_all_probes(stack.broker)
    ops = Ops(stack.broker, stack.settings)
    app = create_app(ops)
    served: ASGIApp = app
    if mount is not None:

        async def host_home(request: Request) -> Response:
            return PlainTextResponse("the host web app")

        served = Starlette(
            routes=[
                Route("/", host_home, name="overview"),
                Route("/static/{path:path}", host_home, name="static"),
                Mount(mount, app=app, name="jobs"),
            ]
        )
    with LiveServer(served) as server:
        yield Dashboard(server, stack, ops, probes, app, mount or "")


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "no CSRF token in the page"
    return html.unescape(found.group(1))


def cell(page: str, queue: str, column: str) -> str:
    """Text of the overview's cell ``column`` in the row of ``queue``."""
    row = re.search(rf'<tr data-queue="{re.escape(queue)}"[^>]*>(.*?)</tr>', page, re.S)
    assert row, f"no row for queue {queue}"
    found = re.search(rf'data-col="{column}"[^>]*>(.*?)</td>', row.group(1), re.S)
    assert found, f"no {column} cell for {queue}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())
