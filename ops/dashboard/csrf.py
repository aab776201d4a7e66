"""CSRF protection for the dashboard's actions (every state change is a POST).

Two independent checks, both required:

* the request comes from our own pages: its ``Origin`` (or, lacking one, its
  ``Referer``) names the host the request was sent to;
* it carries a token only our pages hand out: ``<issued>.<mac>``, where the
  mac is an HMAC of the authenticated principal and the issue time under the
  dashboard's secret. It expires, and a token issued to one principal is
  worthless to another.

The secret is derived from the dashboard's credentials (scrypt, so a leaked
token is no cheap oracle for guessing a password): every process serving the
same dashboard (replicas behind a balancer, a web server's workers, the
process after a restart) accepts the others' tokens, and changing a
credential revokes every token issued under the old one. An open dashboard
(loopback only, no credentials) uses a random secret per process.

Basic credentials are sent by the browser automatically, so without these
checks any page the operator visits could retry or purge dead letters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.datastructures import Headers

# scrypt cost: ~40 ms once per process on this machine kind, per password guess for anyone else.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_LABEL = b"taatom-jobs dashboard csrf v1"

FIELD = "csrf_token"
HEADER = "x-csrf-token"
MAX_AGE_S = 12 * 3600


class CsrfGuard:
    def __init__(self, secret: bytes | None = None, max_age_s: int = MAX_AGE_S) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.max_age_s = max_age_s

    @classmethod
    def for_credentials(cls, *credentials: bytes | None, max_age_s: int = MAX_AGE_S) -> CsrfGuard:
        """A guard whose secret follows ``credentials`` (the password, the token; None if unset)."""
        if not any(credentials):
            return cls(max_age_s=max_age_s)
        # Length-prefixed, so that no two different credential sets give the same input.
        material = b"".join(len(c or b"").to_bytes(4, "big") + (c or b"") for c in credentials)
        return cls(hashlib.scrypt(material, salt=_LABEL, dklen=32, **_SCRYPT), max_age_s=max_age_s)

    def __repr__(self) -> str:
        return f"CsrfGuard(max_age_s={self.max_age_s})"

    def _mac(self, principal: str, issued: int) -> str:
        digest = hmac.new(self._secret, f"{principal}\x00{issued}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, principal: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(principal, issued)}"

    def valid(self, token: str, principal: str, now: float | None = None) -> bool:
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or not mac:
            return False
        issued = int(issued_text)
        age = int(time.time() if now is None else now) - issued
        if not 0 <= age <= self.max_age_s:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(principal, issued).encode())


def same_origin(headers: Headers) -> bool:
    """Whether the browser says the request came from a page of the host it is sent to."""
    host = headers.get("host", "").strip().lower()
    if not host:
        return False
    source = headers.get("origin")
    if source is None or source == "null":
        # No Origin (an old browser, or a privacy setting): fall back on the Referer.
        source = None if source == "null" else headers.get("referer")
    if not source:
        return False
    return urlsplit(source).netloc.lower() == host
