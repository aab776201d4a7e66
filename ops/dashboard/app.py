"""The dashboard as an ASGI app: standalone (``serve``) or mounted in a web app.

``create_app(ops)`` returns a Starlette app whose links, assets and redirects
are relative to wherever it is mounted (``Mount("/jobs", app=create_app())``
serves it under ``/jobs``). Middleware, outermost first: security headers,
authentication; then the routes of :mod:`pages`, :mod:`actions` and
:mod:`api`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Router
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from middleware.sanitize import redact_text
from ops.context import Ops, default_ops

from . import views
from .auth import Credentials, RequireAuth
from .csrf import CsrfGuard
from .headers import SecurityHeaders

HERE = Path(__file__).parent
ROOT_KEY = "dashboard_root"


class Deps:
    """What every route of one dashboard app works with."""

    def __init__(self, ops: Ops, router: Router, csrf: CsrfGuard) -> None:
        self.ops = ops
        self.router = router
        self.csrf = csrf
        self.templates = self._templates()

    def root(self, request: Request) -> str:
        """The path the dashboard is mounted at ("" when standalone)."""
        return str(request.scope.get("state", {}).get(ROOT_KEY, ""))

    def link(self, request: Request, name: str, query: Mapping[str, Any] | None = None, **params: Any) -> str:
        """A root-relative link to one of our routes, wherever the app is mounted."""
        path = self.root(request) + str(self.router.url_path_for(name, **params))
        clean = {k: v for k, v in (query or {}).items() if v is not None}
        return path + ("?" + urlencode(clean) if clean else "")

    def principal(self, request: Request) -> str:
        return str(request.scope.get("state", {}).get("principal", ""))

    def render(
        self, request: Request, template: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        defaults = {"refresh": 0, "notice": None, "now": datetime.now(UTC)}
        return self.templates.TemplateResponse(
            request, template, {**defaults, **context}, status_code=status_code
        )

    def _templates(self) -> Jinja2Templates:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            span=views.span,
            utc=views.utc,
            compact_json=views.compact_json,
            pretty_json=views.pretty_json,
        )
        return Jinja2Templates(env=env, context_processors=[self._context])

    def _context(self, request: Request) -> dict[str, Any]:
        now = time.time()

        def link(name: str, query: Mapping[str, Any] | None = None, **params: Any) -> str:
            return self.link(request, name, query, **params)

        def asset(path: str) -> str:
            return self.link(request, "static", path=path)

        return {
            "link": link,
            "asset": asset,
            "csrf_token": self.csrf.issue(self.principal(request), now),
            "principal": self.principal(request),
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "now_ms": int(now * 1000),
            "relative": views.relative,
            "error_meaning": views.error_meaning,
        }


class DashboardApp(Starlette):
    """Starlette, remembering the path it is mounted at before any inner mount changes it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[ROOT_KEY] = scope.get("root_path", "")
        await super().__call__(scope, receive, send)


def create_app(ops: Ops | None = None) -> Starlette:
    """The dashboard for ``ops`` (default: this process's own broker, as ``import jobs`` wires it)."""
    from . import actions, api, pages

    ops = ops or default_ops()
    credentials = Credentials.from_settings(ops.settings)
    app = DashboardApp(
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(RequireAuth, credentials=credentials),
        ],
    )
    # From the credentials: every process serving this dashboard accepts the others' tokens.
    deps = Deps(ops, app.router, CsrfGuard.for_credentials(credentials.password, credentials.token))
    app.router.routes.extend(
        [
            *pages.routes(deps),
            *actions.routes(deps),
            *api.routes(deps),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
    )
    app.add_exception_handler(HTTPException, _http_error(deps))
    app.add_exception_handler(redis.RedisError, _redis_error(deps))
    return app


def _wants_json(deps: Deps, request: Request) -> bool:
    path = request.url.path[len(deps.root(request)) :]
    return path.startswith(("/api/", "/metrics"))


def _http_error(deps: Deps) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if _wants_json(deps, request):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        context = {"status": exc.status_code, "detail": exc.detail}
        return deps.render(request, "error.html", context, status_code=exc.status_code)

    return handler


def _redis_error(deps: Deps) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        # Redis error texts name hosts, never passwords; sanitized all the same.
        detail = f"Redis is not answering ({type(exc).__name__}: {redact_text(str(exc))})."
        if _wants_json(deps, request):
            return JSONResponse({"error": detail}, status_code=503)
        return deps.render(request, "error.html", {"status": 503, "detail": detail}, status_code=503)

    return handler
