"""Which URLs and addresses the image fetcher may reach (the SSRF policy, pure but for DNS).

Rules: http/https only; no credentials in the URL; ports from ``IMAGE_FETCH_PORTS``
(80 and 443); IP literals only in canonical form (``2130706433``, ``0x7f.1`` or
``127.1`` are refused rather than guessed at); every address a host resolves to must
be globally routable, or the whole host is refused. ``IMAGE_FETCH_ALLOW_HOSTS`` lists
``host:port`` pairs (as written in the URL) exempt from the port and address rules:
the tests' local server, never production.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from middleware.errors import FILE_4001, SRV_6003, VAL_2001, JobError

if TYPE_CHECKING:  # the settings validator imports this module: keep it light
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Not globally routable, or a form that embeds an IPv4 address we would have to trust.
# `is_global` covers most of these already; listing them keeps the rule independent of
# the Python version's tables (3.11 counts multicast, 6to4 and NAT64 as global).
_BLOCKED: Final = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relays
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback, IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo
        "2001:db8::/32",
        "2002::/16",  # 6to4
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# What inet_aton would read as an IPv4 address: decimal, octal or hex parts, 1 to 4 of them.
_NUMERIC_HOST: Final = re.compile(r"^((0x[0-9a-f]*|[0-9]+)\.){0,3}(0x[0-9a-f]*|[0-9]+)\.?$", re.IGNORECASE)
_DNS_POOL: Final = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-dns")


class BlockedURL(JobError):
    """A URL or address the policy refuses: ``VAL_2001``, never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(VAL_2001, f"image_url not allowed: {reason}")


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable and embeds no other address."""
    return address.is_global and not any(
        address.version == net.version and address in net for net in _BLOCKED
    )


def parse_host_ports(text: str) -> frozenset[tuple[str, int]]:
    """``"host:port,[::1]:8080"`` -> {("host", port), ("::1", 8080)}; ValueError on a bad entry."""
    pairs = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r} is not host:port")
        pairs.add((host.lower(), int(port)))
    return frozenset(pairs)


def parse_ports(text: str) -> frozenset[int]:
    """``"80,443"`` -> {80, 443}; ValueError unless every entry is a port number."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in items):
        raise ValueError("must be comma-separated port numbers (1-65535)")
    return frozenset(int(p) for p in items)


@dataclass(frozen=True)
class AddressPolicy:
    """The SSRF rules for one worker; ``resolver`` is ``getaddrinfo`` unless a test passes one."""

    ports: frozenset[int] = frozenset({80, 443})
    allow_hosts: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver | None = None

    def check_url(self, url: httpx.URL) -> None:
        """Refuse a URL by its form alone, before any DNS lookup or connection."""
        if url.scheme not in ("http", "https"):
            raise BlockedURL("only http and https URLs are fetched")
        if url.userinfo:
            raise BlockedURL("credentials in the URL are not allowed")
        host = url.host
        if not host:
            raise BlockedURL("the URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        if self.allowed_as_listed(host, port):
            return
        if port not in self.ports:
            raise BlockedURL(f"port {port} is not allowed (IMAGE_FETCH_PORTS)")
        literal = _ip_literal(host)
        if literal is not None and not is_public(literal):
            raise BlockedURL(f"{literal} is not a public address")

    def allowed_as_listed(self, host: str, port: int) -> bool:
        return (host.lower().rstrip("."), port) in self.allow_hosts

    def resolve(self, host: str, port: int, timeout_s: float) -> list[str]:
        """The addresses to connect to for ``host``: all public, or the host is refused.

        The caller connects to these addresses themselves, so a second lookup (DNS
        rebinding) never happens between the check and the connection.
        """
        literal = _ip_literal(host)
        addresses = [str(literal)] if literal is not None else self._lookup(host, port, timeout_s)
        if self.allowed_as_listed(host, port):
            return addresses
        refused = [a for a in addresses if not is_public(ipaddress.ip_address(a))]
        if refused:
            raise BlockedURL(f"{host} resolves to {refused[0]}, which is not a public address")
        return addresses

    def _lookup(self, host: str, port: int, timeout_s: float) -> list[str]:
        resolver = self.resolver or _getaddrinfo
        future = _DNS_POOL.submit(resolver, host, port)
        try:
            addresses = future.result(timeout=max(0.001, timeout_s))
        except FutureTimeout:
            raise JobError(SRV_6003, f"DNS lookup of {host} timed out") from None
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise JobError(FILE_4001, f"image host {host} does not exist") from None
            raise JobError(SRV_6003, f"DNS lookup of {host} failed: {exc.strerror}") from None
        if not addresses:
            raise JobError(FILE_4001, f"image host {host} has no address")
        return _unique(addresses)


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally; refuses non-canonical IPv4 spellings and zone ids."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if "%" in host:
        raise BlockedURL("IPv6 zone identifiers are not allowed")
    if _NUMERIC_HOST.match(host):
        raise BlockedURL(f"{host!r} is an IP address in a non-canonical spelling")
    return None


def _unique(addresses: Iterable[str]) -> list[str]:
    # IPv6 scope ids (fe80::1%eth0) are stripped so the address parses; such a link-local
    # address is refused anyway.
    return list(dict.fromkeys(a.split("%", 1)[0] for a in addresses))
