"""Fetching ``image_url`` without becoming a proxy into our own network (SSRF).

httpx does the HTTP; its transport is ours: an httpcore connection pool whose network
backend resolves the host itself, refuses it unless every address is public (see
``addresses``), and connects to the checked address, so no second DNS lookup can swap
in another one; TLS still verifies the certificate for the URL's host name. Redirects
are followed by hand, each hop checked again, at most ``IMAGE_MAX_REDIRECTS``. Proxy
environment variables are ignored. The body is capped by ``Content-Length`` and while
streaming (``IMAGE_MAX_BYTES``), is never decompressed, and the whole fetch, redirects
included, has one deadline (``IMAGE_FETCH_TIMEOUT_S``).

Outcomes: a refused URL is ``VAL_2001``; 404/410 or an unknown host ``FILE_4001``;
other 4xx ``SRV_6006``; too large ``FILE_4004`` (all permanent); 5xx, 408, 429,
timeouts, resets and DNS trouble ``SRV_6003`` (retried).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpcore
import httpx

from middleware.errors import FILE_4001, FILE_4004, SRV_6003, SRV_6006, JobError

from .addresses import AddressPolicy, BlockedURL, parse_host_ports, parse_ports

if TYPE_CHECKING:
    from ..settings import Settings

CONNECT_TIMEOUT_S: Final = 10.0
USER_AGENT: Final = "taatom-jobs image fetcher"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_TEMPORARY: Final = frozenset({408, 425, 429})
_TRANSIENT: Final = (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError)
_TIMEOUTS: Final = (httpx.TimeoutException, httpcore.TimeoutException)


@dataclass(frozen=True)
class FetchPolicy:
    addresses: AddressPolicy
    max_bytes: int
    timeout_s: float
    max_redirects: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            addresses=AddressPolicy(
                ports=parse_ports(settings.image_fetch_ports),
                allow_hosts=parse_host_ports(settings.image_fetch_allow_hosts),
            ),
            max_bytes=settings.image_max_bytes,
            timeout_s=settings.image_fetch_timeout_s,
            max_redirects=settings.image_max_redirects,
        )


class ImageFetcher:
    """Downloads source images under a :class:`FetchPolicy`; one per worker process, thread-safe."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._client = httpx.Client(
            transport=PinnedTransport(policy.addresses),
            trust_env=False,  # no HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, SSL_CERT_FILE, .netrc
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` after at most ``max_redirects`` checked redirects."""
        deadline = time.monotonic() + self.policy.timeout_s
        try:
            current = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise BlockedURL(f"not a valid URL ({exc})") from None
        for _hop in range(self.policy.max_redirects + 1):
            self.policy.addresses.check_url(current)
            body, location = self._get(current, deadline)
            if body is not None:
                return body
            assert location is not None
            current = location
        raise BlockedURL(f"more than {self.policy.max_redirects} redirects (IMAGE_MAX_REDIRECTS)")

    def _get(self, url: httpx.URL, deadline: float) -> tuple[bytes | None, httpx.URL | None]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _too_slow(self.policy.timeout_s)
        timeout = httpx.Timeout(remaining, connect=min(remaining, CONNECT_TIMEOUT_S))
        try:
            with self._client.stream("GET", url, timeout=timeout) as response:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    return None, _redirect_target(url, response.headers["location"])
                _check_status(response.status_code)
                return self._read(response, deadline), None
        except _TIMEOUTS:
            raise _too_slow(self.policy.timeout_s) from None
        except _TRANSIENT as exc:
            raise JobError(SRV_6003, f"image source connection failed ({type(exc).__name__})") from None

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        cap = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_large(cap)
        body = bytearray()
        # Raw bytes: a Content-Encoding is never undone (no gzip bombs); it fails sniffing.
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > cap:
                raise _too_large(cap)
            if time.monotonic() > deadline:
                raise _too_slow(self.policy.timeout_s)
        return bytes(body)


def _check_status(status: int) -> None:
    if status == 200:
        return
    if status in (404, 410):
        raise JobError(FILE_4001, f"no image at image_url (HTTP {status})")
    if status in _TEMPORARY or status >= 500:
        raise JobError(SRV_6003, f"image source unavailable (HTTP {status})")
    raise JobError(SRV_6006, f"image source refused the request (HTTP {status})")


def _redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        return url.join(location)
    except httpx.InvalidURL:
        raise BlockedURL("redirected to an invalid URL") from None


def _too_large(cap: int) -> JobError:
    return JobError(FILE_4004, f"image is larger than {cap} bytes (IMAGE_MAX_BYTES)")


def _too_slow(timeout_s: float) -> JobError:
    return JobError(SRV_6003, f"image download took longer than {timeout_s:g}s (IMAGE_FETCH_TIMEOUT_S)")


# --- the pinned transport ---------------------------------------------------------------


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool whose connections go only to checked addresses."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(policy),
            max_connections=16,
            max_keepalive_connections=4,
            keepalive_expiry=30.0,
            retries=0,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, Iterable)
        response = self._pool.handle_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves once, refuses non-public addresses, connects to the address it checked."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        budget = CONNECT_TIMEOUT_S if timeout is None else timeout
        started = time.monotonic()
        addresses = self._policy.resolve(host, port, budget)
        failure: Exception | None = None
        for address in addresses[:3]:
            left = budget - (time.monotonic() - started)
            if left <= 0:
                break
            try:
                return self._tcp.connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        if failure is not None:
            raise failure
        raise httpcore.ConnectTimeout(f"could not connect to {host} in time")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise BlockedURL("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._tcp.sleep(seconds)
