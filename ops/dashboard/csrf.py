"""CSRF protection for the dashboard's actions (every state change is a POST).

Two independent checks, both required:

* the request comes from our own pages: its ``Origin`` (or, lacking one, its
  ``Referer``) names the host the request was sent to;
* it carries a token only our pages hand out: ``<issued>.<mac>``, where the
  mac is an HMAC of the authenticated principal and the issue time under a
  random per-app secret. It expires, and a token issued to one principal is
  worthless to another.

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

FIELD = "csrf_token"
HEADER = "x-csrf-token"
MAX_AGE_S = 12 * 3600


class CsrfGuard:
    def __init__(self, secret: bytes | None = None, max_age_s: int = MAX_AGE_S) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.max_age_s = max_age_s

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
