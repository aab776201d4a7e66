"""A real HTTP server for image-source tests: stdlib ThreadingHTTPServer on 127.0.0.1.

Routes are registered per test and include the misbehaviours an image fetcher must
survive: redirects and redirect loops, error statuses, a Content-Length that lies and a
body that trickles in. Every request is recorded so tests can assert what was fetched.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = [
    "HTTPTestServer",
    "RecordedRequest",
    "http_server",
    "running_http_server",
]

# Upper bound for one trickle response, so a forgotten route cannot stall a test run.
MAX_TRICKLE_SECONDS = 30.0
# Socket timeout of a handler thread: bounds how long a silent client can hold it (and teardown).
HANDLER_SOCKET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. ``headers`` keys are lower-case."""

    method: str
    path: str  # with the query string
    headers: Mapping[str, str]


@dataclass(frozen=True)
class _Bytes:
    data: bytes
    content_type: str
    status: int


@dataclass(frozen=True)
class _Redirect:
    location: str
    status: int


@dataclass(frozen=True)
class _Status:
    status: int
    body: bytes


@dataclass(frozen=True)
class _Trickle:
    total_bytes: int
    interval_s: float
    content_type: str


@dataclass(frozen=True)
class _LyingLength:
    declared: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class _RedirectLoop:
    status: int


_Route = _Bytes | _Redirect | _Status | _Trickle | _LyingLength | _RedirectLoop


class _Server(ThreadingHTTPServer):
    """Holds the routes and the request log shared by the handler threads."""

    # Non-daemon handler threads are tracked and joined by server_close(), so nothing
    # the fixture started outlives it; the socket timeout and the stop event bound that join.
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.routes: dict[str, _Route] = {}
        self.requests: list[RecordedRequest] = []
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response is an expected event in these tests, not an error.
        if isinstance(sys.exception(), ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = HANDLER_SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.0"  # one request per connection: the server closes after each

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""

    def _respond(self, *, send_body: bool) -> None:
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=MappingProxyType({k.lower(): v for k, v in self.headers.items()}),
        )
        route_path = urlsplit(self.path).path
        with self.server.lock:
            self.server.requests.append(record)
            route = self.server.routes.get(route_path)

        match route:
            case None:
                self._simple(HTTPStatus.NOT_FOUND, b"no such route\n", "text/plain", send_body)
            case _Bytes(data, content_type, status):
                self._simple(status, data, content_type, send_body)
            case _Status(status, body):
                self._simple(status, body, "text/plain; charset=utf-8", send_body)
            case _Redirect(location, status):
                self._redirect(status, location)
            case _RedirectLoop(status):
                hop = int(parse_qs(urlsplit(self.path).query).get("hop", ["0"])[0])
                self._redirect(status, f"{route_path}?hop={hop + 1}")
            case _LyingLength(declared, body, content_type):
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                if send_body:
                    self._write(body)
            case _Trickle(total_bytes, interval_s, content_type):
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(total_bytes))
                self.end_headers()
                if send_body:
                    self._trickle(total_bytes, interval_s)

    def _simple(self, status: int, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self._write(body)

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away; nothing left to do for this request
            self.close_connection = True
            return False
        return True

    def _trickle(self, total_bytes: int, interval_s: float) -> None:
        for i in range(total_bytes):
            if not self._write(b"\x00"):
                return
            # Event.wait is the pause: teardown sets the event and ends every trickle at once.
            if i + 1 < total_bytes and self.server.stopping.wait(interval_s):
                return


class HTTPTestServer:
    """A running test HTTP server; the object the ``http_server`` fixture yields."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="http-test-server"
        )
        self.host = "127.0.0.1"
        self.port: int = self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end trickles, join handler threads, close the socket."""
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server (``path`` starts with "/")."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        return f"http://{self.host}:{self.port}{path}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, oldest first (a snapshot)."""
        with self._server.lock:
            return list(self._server.requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Requests whose path (query ignored) is ``path``."""
        return [r for r in self.requests if urlsplit(r.path).path == path]

    def clear(self) -> None:
        """Forget recorded requests (routes stay)."""
        with self._server.lock:
            self._server.requests.clear()

    def _add(self, path: str, route: _Route) -> str:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        with self._server.lock:
            self._server.routes[path] = route
        return self.url(path)

    def add_bytes(
        self, path: str, data: bytes, content_type: str = "application/octet-stream", *, status: int = 200
    ) -> str:
        """Serve ``data`` with this content type; returns the route's URL."""
        return self._add(path, _Bytes(bytes(data), content_type, status))

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer with a redirect (301, 302, 303, 307, 308) to ``location``."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"not a redirect status: {status}")
        return self._add(path, _Redirect(location, status))

    def add_redirect_loop(self, path: str, status: int = 302) -> str:
        """Redirect forever: ``path`` -> ``path?hop=1`` -> ``path?hop=2`` -> ..."""
        return self._add(path, _RedirectLoop(status))

    def add_status(self, path: str, status: int, body: bytes | None = None) -> str:
        """Answer with this status (404, 500, 503...) and a short text body."""
        if body is None:
            body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        return self._add(path, _Status(status, body))

    def add_trickle(
        self,
        path: str,
        total_bytes: int,
        interval_s: float,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Send ``total_bytes`` zero bytes one at a time, ``interval_s`` apart.

        Content-Length is honest, so only a client's read timeout or total deadline can
        cut the response short. Capped at MAX_TRICKLE_SECONDS in total.
        """
        if total_bytes < 1 or interval_s < 0:
            raise ValueError("total_bytes must be >= 1 and interval_s >= 0")
        if (total_bytes - 1) * interval_s > MAX_TRICKLE_SECONDS:
            raise ValueError(f"a trickle may last at most {MAX_TRICKLE_SECONDS}s")
        return self._add(path, _Trickle(total_bytes, interval_s, content_type))

    def add_lying_length(
        self,
        path: str,
        declared: int,
        actual_bytes: bytes | int,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Declare ``Content-Length: declared`` but send ``actual_bytes`` (bytes, or a count of zeros).

        More than declared models a server that lies to slip past a size check; fewer
        models a truncated transfer. The connection is closed after the body either way.
        """
        body = bytes(actual_bytes)  # an int gives that many zero bytes
        return self._add(path, _LyingLength(declared, body, content_type))


@contextmanager
def running_http_server() -> Iterator[HTTPTestServer]:
    """Run a test HTTP server for the ``with`` block."""
    server = HTTPTestServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_server() -> Iterator[HTTPTestServer]:
    """A fresh HTTP server per test on 127.0.0.1 and a free port, with no routes yet."""
    with running_http_server() as server:
        yield server
