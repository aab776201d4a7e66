"""The server-rendered pages: overview, queue, job, fleet, and the purge confirmation.

Handlers are plain functions (Starlette runs them on its thread pool), since
the read model talks to Redis synchronously.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import params, views
from .app import Deps
from .scheduler_panel import read_replicas

DEFAULT_REFRESH_S = 5
PER_PAGE = 25

NOTICES = {
    "paused": "Queue paused: nothing new starts until it is resumed. Running jobs finish.",
    "resumed": "Queue resumed.",
    "retried": "Dead letter put back on its queue; it starts again at attempt 1.",
    "promoted": "Asked the fleet to run this job now.",
    "not_promotable": "This job is not waiting for a delay or a retry, so there is nothing to promote.",
    "retried_all": "{n} dead letter(s) put back on the queue.",
    "deleted": "Dead letter deleted.",
    "purged": "{n} dead letter(s) deleted.",
    "gone": "That dead letter was already gone (retried or deleted by someone else).",
}


def notice(request: Request) -> str | None:
    text = NOTICES.get(request.query_params.get("notice", ""))
    if text is None:
        return None
    n = request.query_params.get("n", "0")
    return text.format(n=int(n) if n.isdigit() else 0)


def routes(deps: Deps) -> list[BaseRoute]:
    ins = deps.ops.inspector

    def overview(request: Request) -> Response:
        queues = ins.overview()
        workers = ins.workers()
        replicas = read_replicas(ins.client, ins.ns)
        now = datetime.now(UTC)
        upcoming = sorted(
            (s for r in replicas if r.alive for s in r.schedules if s.next is not None),
            key=lambda s: s.next or now,
        )
        return deps.render(
            request,
            "overview.html",
            {
                "queues": queues,
                "totals": views.totals(queues),
                "chart": views.chart(ins.throughput()),
                "workers_alive": sum(w.alive for w in workers),
                "hosts": views.hosts(workers),
                "replicas": replicas,
                "replicas_alive": sum(r.alive for r in replicas),
                "upcoming": upcoming[:3],
                "alerts": views.alerts(queues, workers),
                "refresh": params.integer(request, "refresh", DEFAULT_REFRESH_S, 0, 300),
                "notice": notice(request),
                "now": now,
            },
        )

    def queue(request: Request) -> Response:
        name = params.queue(request, ins.queues)
        kind = params.kind(request)
        per_page = params.integer(request, "per_page", PER_PAGE, 5, 200)
        page = params.integer(request, "page", 0, 0, 1_000_000)
        rows, total = ins.messages(name, kind, page, per_page)
        summary = next(q for q in ins.overview() if q.name == name)
        pages = max(1, math.ceil(total / per_page))
        return deps.render(
            request,
            "queue.html",
            {
                "q": summary,
                "kind": kind,
                "rows": [{**views.message_json(r), "at_dt": r.at} for r in rows],
                "total": total,
                "page": page,
                "pages": pages,
                "per_page": per_page,
                "unlisted": total > 0 and not rows and page == 0,
                "refresh": params.integer(request, "refresh", 0, 0, 300),
                "notice": notice(request),
                "now": datetime.now(UTC),
            },
        )

    def job(request: Request) -> Response:
        message_id = params.job_id(str(request.path_params["message_id"]))
        status = ins.job(message_id)
        if status is None:
            raise HTTPException(404, f"No job {message_id} (never sent, or its state expired).")
        data = views.job_json(status)
        history = status.get("history") or []
        steps = [
            {
                "state": h["state"],
                "at": h["at"],
                "after": (h["at"] - history[i - 1]["at"]).total_seconds() if i else None,
            }
            for i, h in enumerate(history)
        ]
        return deps.render(
            request,
            "job.html",
            {
                "job": data,
                "status": status,
                "steps": steps,
                "notice": notice(request),
                "refresh": params.integer(request, "refresh", 0, 0, 300),
                "now": datetime.now(UTC),
            },
        )

    def find_job(request: Request) -> Response:
        message_id = params.job_id(request.query_params.get("id", ""))
        return RedirectResponse(deps.link(request, "job", message_id=message_id), status_code=303)

    def fleet(request: Request) -> Response:
        workers = ins.workers()
        return deps.render(
            request,
            "fleet.html",
            {
                "workers": workers,
                "hosts": views.hosts(workers),
                "replicas": read_replicas(ins.client, ins.ns),
                "refresh": params.integer(request, "refresh", DEFAULT_REFRESH_S, 0, 300),
                "notice": None,
                "now": datetime.now(UTC),
            },
        )

    def purge_confirm(request: Request) -> Response:
        name = params.queue(request, ins.queues)
        summary = next(q for q in ins.overview() if q.name == name)
        return deps.render(
            request,
            "purge.html",
            {"q": summary, "refresh": 0, "notice": None, "now": datetime.now(UTC)},
        )

    return [
        Route("/", overview, name="overview"),
        Route("/queues/{queue}", queue, name="queue"),
        Route("/queues/{queue}/purge", purge_confirm, name="purge_confirm"),
        Route("/jobs", find_job, name="find_job"),
        Route("/jobs/{message_id}", job, name="job"),
        Route("/fleet", fleet, name="fleet"),
    ]
