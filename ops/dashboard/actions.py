"""What operators do from the pages: retry, delete and purge dead letters; pause and resume queues.

Every action is a POST through :func:`guarded`, which refuses (403) a request
that is not from our own pages (see :mod:`csrf`) before anything changes;
then the action runs and the browser is sent back (303) to the page it came
from with a notice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import csrf, params
from .app import Deps

MAX_FORM_BYTES = 8 * 1024
Form = dict[str, str]
Action = Callable[[Request, Form], Awaitable[Response]]


async def read_form(request: Request) -> Form:
    """The url-encoded body (all our forms send), bounded; no multipart parser needed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(415, "Actions take an application/x-www-form-urlencoded form.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "Form too large.")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20))


def guarded(deps: Deps, action: Action) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if not csrf.same_origin(request.headers):
            raise HTTPException(403, "Refused: the request did not come from a dashboard page (Origin).")
        form = await read_form(request)
        token = form.get(csrf.FIELD) or request.headers.get(csrf.HEADER, "")
        if not deps.csrf.valid(token, deps.principal(request)):
            raise HTTPException(403, "Refused: missing or expired form token. Reload the page and retry.")
        return await action(request, form)

    return endpoint


def back(
    deps: Deps, request: Request, form: Form, fallback: str, notice: str, n: int | None = None
) -> Response:
    """Redirect to the form's ``next`` page when it is one of ours, else to ``fallback``; add the notice."""
    target = form.get("next", "")
    root = deps.root(request)
    parts = urlsplit(target)
    ours = (
        target.startswith(root + "/")
        and not target.startswith("//")
        and not parts.scheme
        and not parts.netloc
        and "\\" not in target
        and len(target) < 2000
    )
    path, query = (parts.path, parse_qsl(parts.query)) if ours else (fallback, [])
    kept = [(k, v) for k, v in query if k not in ("notice", "n")]
    kept.append(("notice", notice))
    if n is not None:
        kept.append(("n", str(n)))
    return RedirectResponse(f"{path}?{urlencode(kept)}", status_code=303)


def _before(form: Form) -> int | None:
    """The time the confirming page was shown: bulk actions leave later dead letters alone."""
    raw = form.get("before", "")
    return int(raw) if raw.isdigit() else None


def routes(deps: Deps) -> list[BaseRoute]:
    operator, queues = deps.ops.operator, deps.ops.inspector.queues

    def queue_page(request: Request, queue: str, kind: str = "dead") -> str:
        return deps.link(request, "queue", {"kind": kind}, queue=queue)

    async def pause(request: Request, form: Form) -> Response:
        queue = params.queue(request, queues)
        await run_in_threadpool(operator.pause, queue)
        return back(deps, request, form, deps.link(request, "overview"), "paused")

    async def resume(request: Request, form: Form) -> Response:
        queue = params.queue(request, queues)
        await run_in_threadpool(operator.resume, queue)
        return back(deps, request, form, deps.link(request, "overview"), "resumed")

    async def retry(request: Request, form: Form) -> Response:
        queue, redis_id = params.queue(request, queues), params.redis_id(request)
        message_id = await run_in_threadpool(operator.retry_dead, queue, redis_id)
        return back(deps, request, form, queue_page(request, queue), "retried" if message_id else "gone")

    async def delete(request: Request, form: Form) -> Response:
        queue, redis_id = params.queue(request, queues), params.redis_id(request)
        deleted = await run_in_threadpool(operator.delete_dead, queue, redis_id)
        return back(deps, request, form, queue_page(request, queue), "deleted" if deleted else "gone")

    async def retry_all(request: Request, form: Form) -> Response:
        queue, before = params.queue(request, queues), _before(form)
        done = await run_in_threadpool(
            lambda: operator.retry_all_dead(queue, older_than_ms=None if before is None else 0, now_ms=before)
        )
        return back(deps, request, form, queue_page(request, queue), "retried_all", done)

    async def purge(request: Request, form: Form) -> Response:
        queue, before = params.queue(request, queues), _before(form)
        if form.get("confirm") != queue:
            raise HTTPException(400, "Purge needs the queue's name typed in the confirmation form.")
        done = await run_in_threadpool(
            lambda: operator.purge_dead(
                queue, older_than_ms=0, now_ms=before if before is not None else int(time.time() * 1000)
            )
        )
        return back(deps, request, form, queue_page(request, queue), "purged", done)

    async def promote(request: Request, form: Form) -> Response:
        message_id = params.job_id(str(request.path_params["message_id"]))
        promoted = await run_in_threadpool(operator.promote, message_id)
        target = deps.link(request, "job", message_id=message_id)
        return back(deps, request, form, target, "promoted" if promoted else "not_promotable")

    actions: list[tuple[str, str, Action]] = [
        ("/jobs/{message_id}/promote", "promote", promote),
        ("/queues/{queue}/pause", "pause", pause),
        ("/queues/{queue}/resume", "resume", resume),
        ("/queues/{queue}/dead/{redis_id}/retry", "retry_dead", retry),
        ("/queues/{queue}/dead/{redis_id}/delete", "delete_dead", delete),
        ("/queues/{queue}/dead/retry-all", "retry_all_dead", retry_all),
        ("/queues/{queue}/dead/purge", "purge_dead", purge),
    ]
    return [Route(path, guarded(deps, fn), methods=["POST"], name=name) for path, name, fn in actions]
