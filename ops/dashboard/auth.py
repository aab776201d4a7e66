"""Who may use the dashboard: HTTP Basic, a bearer token, or loopback only.

Every request — pages, assets, the JSON API and ``/metrics`` — passes
through :class:`RequireAuth` before any route sees it. With
``DASHBOARD_USER``/``DASHBOARD_PASSWORD`` or ``DASHBOARD_TOKEN`` configured a
request must prove one of them (compared in constant time); without, only
loopback clients addressing a loopback host name are served, which holds
even when the app is mounted inside a web app listening on every address,
and keeps a DNS-rebinding page from reaching an open dashboard on 127.0.0.1.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs.settings import Settings

ANONYMOUS = "anonymous"
TOKEN_PRINCIPAL = "token"  # noqa: S105 - a principal name, not a secret
REALM = "taatom-jobs dashboard"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``), brackets allowed."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8080`` -> ``::1``, ``example.com:80`` -> ``example.com``."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class Credentials:
    """The configured credentials; the secrets never appear in ``repr``."""

    user: bytes | None = None
    password: bytes | None = field(default=None, repr=False)
    token: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        return cls(
            user=settings.dashboard_user.encode() if settings.dashboard_user is not None else None,
            password=(
                settings.dashboard_password.get_secret_value().encode()
                if settings.dashboard_password is not None
                else None
            ),
            token=(
                settings.dashboard_token.get_secret_value().encode()
                if settings.dashboard_token is not None
                else None
            ),
        )

    @property
    def required(self) -> bool:
        return self.password is not None or self.token is not None

    @property
    def challenge(self) -> str:
        # Browsers only prompt for Basic; token-only setups are for API clients.
        if self.password is not None:
            return f'Basic realm="{REALM}", charset="UTF-8"'
        return f'Bearer realm="{REALM}"'

    def principal(self, authorization: str | None) -> str | None:
        """Who an ``Authorization`` header proves to be, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic" and self.password is not None and self.user is not None:
            try:
                user, sep, password = base64.b64decode(value, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return None
            # Both comparisons always run: timing tells nothing about which part was wrong.
            user_ok = hmac.compare_digest(user, self.user)
            password_ok = hmac.compare_digest(password, self.password)
            if sep and user_ok & password_ok:
                return "user:" + user.decode("utf-8", "replace")
        if (
            scheme.lower() == "bearer"
            and self.token is not None
            and hmac.compare_digest(value.encode(), self.token)
        ):
            return TOKEN_PRINCIPAL
        return None


class RequireAuth:
    """ASGI middleware: authenticate every HTTP request, record the principal in ``request.state``."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.credentials.required:
            principal = self.credentials.principal(headers.get("authorization"))
            if principal is None:
                refusal = PlainTextResponse(
                    "Authentication required.\n",
                    status_code=401,
                    headers={"WWW-Authenticate": self.credentials.challenge},
                )
                await refusal(scope, receive, send)
                return
        else:
            client = scope.get("client") or ("", 0)
            if not (is_loopback(client[0]) and is_loopback(host_name(headers.get("host", "")))):
                refusal = PlainTextResponse(
                    "No dashboard credentials are configured, so only loopback clients are served.\n"
                    "Set DASHBOARD_USER and DASHBOARD_PASSWORD, or DASHBOARD_TOKEN.\n",
                    status_code=403,
                )
                await refusal(scope, receive, send)
                return
            principal = ANONYMOUS
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
