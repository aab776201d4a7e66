"""The JSON API (read-only, same authentication and sanitization as the pages) and ``/metrics``."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ops.metrics import exposition

from . import params, views
from .app import Deps
from .pages import PER_PAGE
from .scheduler_panel import read_replicas


def routes(deps: Deps) -> list[BaseRoute]:
    ins = deps.ops.inspector

    def overview(request: Request) -> Response:
        queues = ins.overview()
        workers = ins.workers()
        replicas = read_replicas(ins.client, ins.ns)
        return JSONResponse(
            {
                "generated_at": int(time.time() * 1000),
                "queues": [views.queue_json(q) for q in queues],
                "throughput": [
                    {"minute": views.iso(minute), **{o: counts.get(o, 0) for o in views.CHART_OUTCOMES}}
                    for minute, counts in ins.throughput()
                ],
                "workers": {"alive": sum(w.alive for w in workers), "known": len(workers)},
                "scheduler": {"replicas_alive": sum(r.alive for r in replicas), "replicas": len(replicas)},
            }
        )

    def queue(request: Request) -> Response:
        name = params.queue(request, ins.queues)
        kind = params.kind(request)
        per_page = params.integer(request, "per_page", PER_PAGE, 1, 200)
        page = params.integer(request, "page", 0, 0, 1_000_000)
        rows, total = ins.messages(name, kind, page, per_page)
        return JSONResponse(
            {
                "queue": name,
                "kind": kind,
                "page": page,
                "per_page": per_page,
                "total": total,
                "messages": [views.message_json(r) for r in rows],
            }
        )

    def job(request: Request) -> Response:
        message_id = params.job_id(str(request.path_params["message_id"]))
        status = ins.job(message_id)
        if status is None:
            raise HTTPException(404, f"No job {message_id} (never sent, or its state expired).")
        return JSONResponse(views.job_json(status))

    def workers(request: Request) -> Response:
        return JSONResponse({"workers": [views.worker_json(w) for w in ins.workers()]})

    def scheduler(request: Request) -> Response:
        return JSONResponse({"replicas": [views.replica_json(r) for r in read_replicas(ins.client, ins.ns)]})

    def metrics(request: Request) -> Response:
        return Response(exposition(ins), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [
        Route("/api/overview", overview, name="api_overview"),
        Route("/api/queues/{queue}", queue, name="api_queue"),
        Route("/api/jobs/{message_id}", job, name="api_job"),
        Route("/api/workers", workers, name="api_workers"),
        Route("/api/scheduler", scheduler, name="api_scheduler"),
        Route("/metrics", metrics, name="metrics"),
    ]
