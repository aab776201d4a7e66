"""The SSRF-safe fetch against real local HTTP servers.

Every refused address in these tests is refused before any connection: literals by the
URL check, names after their one DNS lookup. Nothing here sends traffic anywhere but
127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest

from jobs.images.addresses import AddressPolicy, is_public, parse_host_ports
from jobs.images.fetch import FetchPolicy, ImageFetcher
from middleware.errors import JobError
from tests.services.http import HTTPTestServer
from tests.support.images import close_delimited_server, jpeg

CAP = 64 * 1024
BODY = jpeg()


def _fetcher(
    server: HTTPTestServer | None = None,
    *,
    timeout_s: float = 5.0,
    max_redirects: int = 3,
    allow: str | None = None,
    ports: frozenset[int] = frozenset({80, 443}),
    resolver: object = None,
) -> ImageFetcher:
    hosts = allow if allow is not None else (f"127.0.0.1:{server.port}" if server else "")
    return ImageFetcher(
        FetchPolicy(
            addresses=AddressPolicy(ports=ports, allow_hosts=parse_host_ports(hosts), resolver=resolver),  # type: ignore[arg-type]
            max_bytes=CAP,
            timeout_s=timeout_s,
            max_redirects=max_redirects,
        )
    )


@pytest.fixture
def fetcher(http_server: HTTPTestServer) -> Iterator[ImageFetcher]:
    fetcher = _fetcher(http_server)
    yield fetcher
    fetcher.close()


def _refused(fetcher: ImageFetcher, url: str, code: str = "VAL_2001") -> JobError:
    with pytest.raises(JobError) as info:
        fetcher.fetch(url)
    assert info.value.code == code, info.value.message
    return info.value


def test_allowlisted_local_server_is_fetched(http_server: HTTPTestServer, fetcher: ImageFetcher) -> None:
    url = http_server.add_bytes("/a.jpg", BODY, "text/html")  # Content-Type is not trusted, nor needed
    assert fetcher.fetch(url) == BODY
    [request] = http_server.requests
    assert request.headers["host"] == f"127.0.0.1:{http_server.port}"
    assert request.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "http://127.8.9.10/x.jpg",
        "http://10.0.0.5/x.jpg",
        "http://172.16.0.1/x.jpg",
        "http://192.168.1.1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/x.jpg",  # carrier-grade NAT
        "http://0.0.0.0/x.jpg",
        "http://224.0.0.1/x.jpg",  # multicast
        "http://255.255.255.255/x.jpg",
        "http://[::1]/x.jpg",
        "http://[::]/x.jpg",
        "http://[fd00::1]/x.jpg",
        "http://[fe80::1]/x.jpg",
        "http://[ff02::1]/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",  # IPv4-mapped
        "http://[::ffff:a9fe:a9fe]/x.jpg",  # IPv4-mapped metadata address, hex
        "http://[64:ff9b::a9fe:a9fe]/x.jpg",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]/x.jpg",  # 6to4 of 127.0.0.1
        "https://[::ffff:10.0.0.1]/x.jpg",
    ],
)
def test_private_loopback_and_metadata_addresses_are_refused(fetcher: ImageFetcher, url: str) -> None:
    assert "not a public address" in _refused(fetcher, url).message


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "127.1", "017700000001", "0", "3232235777"],
)
def test_numeric_spellings_of_addresses_are_refused(
    http_server: HTTPTestServer, fetcher: ImageFetcher, host: str
) -> None:
    http_server.add_bytes("/a.jpg", BODY)
    for port in ("", f":{http_server.port}"):
        error = _refused(fetcher, f"http://{host}{port}/a.jpg")
        assert "non-canonical" in error.message or "Invalid IPv4" in error.message or "port" in error.message
    assert http_server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "http://user:secret@example.com/a.jpg",
        "http://example.com:8080/a.jpg",
        "https://example.com:22/a.jpg",
        "http://[fe80::1%25eth0]/a.jpg",
        "http:///a.jpg",
    ],
)
def test_url_forms_are_refused_before_any_lookup(fetcher: ImageFetcher, url: str) -> None:
    error = _refused(fetcher, url)
    assert "secret" not in error.message


def test_a_name_resolving_to_a_private_address_is_refused(http_server: HTTPTestServer) -> None:
    http_server.add_bytes("/a.jpg", BODY)
    # The port is allowed here, so only the resolved address can refuse it.
    fetcher = _fetcher(allow="", ports=frozenset({http_server.port}))
    error = _refused(fetcher, f"http://localhost:{http_server.port}/a.jpg")
    assert "localhost resolves to" in error.message and "not a public address" in error.message
    assert http_server.requests == []


def test_the_allowlist_is_by_host_as_written(http_server: HTTPTestServer, fetcher: ImageFetcher) -> None:
    http_server.add_bytes("/a.jpg", BODY)
    _refused(fetcher, f"http://localhost:{http_server.port}/a.jpg")
    assert http_server.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://127.0.0.1/admin",
        "http://localhost/admin",
        "http://[::1]/admin",
        "http://2130706433/admin",
        "http://10.1.2.3/admin",
    ],
)
def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(
    http_server: HTTPTestServer, fetcher: ImageFetcher, target: str
) -> None:
    url = http_server.add_redirect("/hop", target, 302)
    _refused(fetcher, url)
    assert [r.path for r in http_server.requests] == ["/hop"]


def test_redirects_within_the_rules_are_followed(http_server: HTTPTestServer, fetcher: ImageFetcher) -> None:
    http_server.add_bytes("/final.jpg", BODY)
    http_server.add_redirect("/two", "/final.jpg", 307)
    url = http_server.add_redirect("/one", http_server.url("/two"), 301)
    assert fetcher.fetch(url) == BODY
    assert [r.path for r in http_server.requests] == ["/one", "/two", "/final.jpg"]


def test_an_endless_redirect_stops_at_the_cap(http_server: HTTPTestServer, fetcher: ImageFetcher) -> None:
    url = http_server.add_redirect_loop("/loop")
    assert "more than 3 redirects" in _refused(fetcher, url).message
    assert len(http_server.requests_to("/loop")) == 4  # the first request and 3 redirects


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "FILE_4001"),
        (410, "FILE_4001"),
        (403, "SRV_6006"),
        (401, "SRV_6006"),
        (500, "SRV_6003"),
        (503, "SRV_6003"),
        (429, "SRV_6003"),
    ],
)
def test_http_status_codes(
    http_server: HTTPTestServer, fetcher: ImageFetcher, status: int, code: str
) -> None:
    url = http_server.add_status("/s", status)
    assert f"HTTP {status}" in _refused(fetcher, url, code).message


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    http_server: HTTPTestServer, fetcher: ImageFetcher
) -> None:
    url = http_server.add_bytes("/big.jpg", b"\xff\xd8\xff" + b"\0" * (CAP + 1))
    assert "IMAGE_MAX_BYTES" in _refused(fetcher, url, "FILE_4004").message


def test_a_lying_content_length_cannot_smuggle_a_larger_body(
    http_server: HTTPTestServer, fetcher: ImageFetcher
) -> None:
    # Declares 1000 bytes, sends four times the cap: only the declared bytes are read.
    url = http_server.add_lying_length("/lie.jpg", declared=1000, actual_bytes=4 * CAP)
    assert len(fetcher.fetch(url)) == 1000


def test_a_body_without_length_is_capped_while_streaming(fetcher: ImageFetcher) -> None:
    with close_delimited_server(body_bytes=16 * CAP) as url:
        special = _fetcher(allow=url.split("/")[2])
        started = time.monotonic()
        assert "IMAGE_MAX_BYTES" in _refused(special, url, "FILE_4004").message
        assert time.monotonic() - started < 2
        special.close()


def test_a_truncated_transfer_is_temporary(http_server: HTTPTestServer, fetcher: ImageFetcher) -> None:
    url = http_server.add_lying_length("/short.jpg", declared=5000, actual_bytes=100)
    _refused(fetcher, url, "SRV_6003")


def test_a_trickling_server_is_cut_at_the_deadline(http_server: HTTPTestServer) -> None:
    url = http_server.add_trickle("/slow.jpg", total_bytes=200, interval_s=0.05)  # 10 s in all
    fetcher = _fetcher(http_server, timeout_s=0.6)
    started = time.monotonic()
    error = _refused(fetcher, url, "SRV_6003")
    elapsed = time.monotonic() - started
    assert "IMAGE_FETCH_TIMEOUT_S" in error.message
    assert 0.5 < elapsed < 1.5
    fetcher.close()


def test_the_deadline_covers_every_redirect_hop(http_server: HTTPTestServer) -> None:
    http_server.add_trickle("/slow.jpg", total_bytes=40, interval_s=0.05)
    url = http_server.add_redirect("/hop", "/slow.jpg")
    fetcher = _fetcher(http_server, timeout_s=0.5)
    started = time.monotonic()
    _refused(fetcher, url, "SRV_6003")
    assert time.monotonic() - started < 1.2
    fetcher.close()


def test_a_refused_connection_is_temporary(http_server: HTTPTestServer) -> None:
    port = http_server.port
    http_server.stop()
    fetcher = _fetcher(allow=f"127.0.0.1:{port}")
    _refused(fetcher, f"http://127.0.0.1:{port}/a.jpg", "SRV_6003")


def test_proxy_environment_variables_are_ignored(
    http_server: HTTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "")
    url = http_server.add_bytes("/a.jpg", BODY)
    fetcher = _fetcher(http_server)
    assert fetcher.fetch(url) == BODY
    fetcher.close()


def test_the_checked_address_is_the_one_connected_to(http_server: HTTPTestServer) -> None:
    """DNS rebinding: one lookup per connection; a second answer could never be used."""
    lookups: list[str] = []
    lock = threading.Lock()

    def rebinding_resolver(host: str, port: int) -> list[str]:
        with lock:
            lookups.append(host)
            if len(lookups) > 1:
                raise AssertionError("a second lookup happened")
        return ["127.0.0.1"]

    url = http_server.add_bytes("/a.jpg", BODY).replace("127.0.0.1", "images.rebind.test")
    fetcher = _fetcher(allow=f"images.rebind.test:{http_server.port}", resolver=rebinding_resolver)
    assert fetcher.fetch(url) == BODY
    assert lookups == ["images.rebind.test"]
    assert http_server.requests[0].headers["host"] == f"images.rebind.test:{http_server.port}"
    fetcher.close()


def test_a_name_with_any_private_address_is_refused_whole() -> None:
    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    policy = AddressPolicy(resolver=mixed)
    with pytest.raises(JobError, match=r"10\.0\.0\.7"):
        policy.resolve("mixed.example", 443, 1.0)
    assert policy.resolve("1.1.1.1", 443, 1.0) == ["1.1.1.1"]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("100.63.255.255", True),
        ("100.64.0.0", False),
        ("100.127.255.255", False),
        ("169.254.169.254", False),
        ("192.0.0.8", False),
        ("198.18.0.1", False),
        ("239.255.255.250", False),
        ("::ffff:8.8.8.8", False),  # mapped forms are refused even for public addresses
        ("64:ff9b::808:808", False),
        ("2002:808:808::1", False),
        ("2001:0:4136:e378::1", False),  # Teredo
        ("fec0::1", False),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public
