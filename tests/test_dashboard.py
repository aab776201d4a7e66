"""The dashboard over real Redis and real HTTP (uvicorn on loopback): pages, auth, CSRF, headers, mounting.

No worker process runs here, so messages stay where they were sent; the
modules ``test_dashboard_workers`` and ``test_dashboard_browser`` add workers.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
import redis
from starlette.routing import Route

from ops.dashboard import serve
from ops.dashboard.auth import is_loopback
from ops.dashboard.csrf import CsrfGuard, same_origin
from ops.dashboard.scheduler_panel import parse_heartbeat
from scheduler.gate import Cursor
from scheduler.health import Heartbeat, Identity, heartbeat_document
from scheduler.schedules import build_schedules
from tests.conftest import Stack
from tests.services.workers import WorkerGroup, clean_environ
from tests.support.browser import Dashboard, cell, csrf_token, serve_dashboard

USER, PASSWORD, TOKEN = "oncall", "correct-horse-battery", "tok-5f2b9c1e7a"
PROTECTED = {"DASHBOARD_USER": USER, "DASHBOARD_PASSWORD": PASSWORD, "DASHBOARD_TOKEN": TOKEN}
BASIC = (USER, PASSWORD)
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECRET = "pa55-Hunter2-never-shown"
GET_PATHS = (
    "/",
    "/queues/email",
    "/queues/email?kind=delayed",
    "/queues/email?kind=dead",
    "/queues/email/purge",
    "/fleet",
    "/static/dashboard.css",
    "/static/dashboard.js",
    "/api/overview",
    "/api/queues/email?kind=dead",
    "/api/workers",
    "/api/scheduler",
    "/metrics",
)

StartDashboard = Callable[..., Dashboard]


@pytest.fixture
def dashboard(
    real_env: dict[str, str], make_stack: Callable[[dict[str, str]], Stack]
) -> Iterator[StartDashboard]:
    """``dashboard(extra_env, mount=None)``: a live dashboard over a real-mode stack in this namespace."""
    with ExitStack() as running:

        def start(extra: dict[str, str] | None = None, mount: str | None = None) -> Dashboard:
            stack = make_stack({**real_env, **(extra or {})})
            return running.enter_context(serve_dashboard(stack, mount))

        yield start


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _post_paths(d: Dashboard) -> list[str]:
    params = {"queue": "email", "redis_id": "00000000-0000-4000-8000-000000000000", "message_id": "m-1"}
    paths = []
    for route in d.app.routes:
        if isinstance(route, Route) and route.methods and "POST" in route.methods:
            names = re.findall(r"{(\w+)}", route.path)
            paths.append(d.prefix + str(route.url_path_for(route.name, **{n: params[n] for n in names})))
    return paths


# --- pages and API ---------------------------------------------------------------------------
def test_overview_shows_each_queues_counts(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    for i in range(3):
        d.probes["email"].send(key=f"w{i}")
    for i in range(2):
        d.probes["analytics"].send_with_options(kwargs={"key": f"later{i}"}, delay=600_000)
    d.stack.api.pause("cleanup")
    d.probes["cleanup"].send(key="held")

    with d.client(BASIC) as client:
        page = client.get("/").text
        api = {q["name"]: q for q in client.get("/api/overview").json()["queues"]}

    assert (cell(page, "email", "waiting"), cell(page, "email", "delayed")) == ("3", "0")
    assert (cell(page, "analytics", "waiting"), cell(page, "analytics", "delayed")) == ("0", "2")
    assert cell(page, "cleanup", "waiting") == "1"
    assert cell(page, "cleanup", "state") == "Paused"
    assert cell(page, "email", "state") == "Active"
    assert cell(page, "email", "running") == "0 / 5"
    assert cell(page, "image-processing", "dead") == "0"
    assert "No worker process is alive" in page
    assert "Queue cleanup is paused" in page
    assert "No scheduler replica seen." in page
    assert (api["email"]["waiting"], api["analytics"]["delayed"], api["cleanup"]["paused"]) == (3, 2, True)
    assert api["email"]["cap"] == 5 and api["email"]["paused"] is False


def test_high_priority_messages_are_counted_listed_first_and_shown_on_job_pages(
    dashboard: StartDashboard,
) -> None:
    d = dashboard(PROTECTED)
    email = d.probes["email"]
    for i in range(3):
        email.send(key=f"normal{i}")
    urgent = [email.send(key=f"urgent{i}", priority="high").message_id for i in range(2)]
    email.send_with_options(kwargs={"key": "urgent-later", "priority": "high"}, delay=600_000)
    email.send_with_options(kwargs={"key": "later"}, delay=300_000)

    with d.client(BASIC) as client:
        overview = {q["name"]: q for q in client.get("/api/overview").json()["queues"]}
        waiting = client.get("/api/queues/email", params={"kind": "waiting"}).json()
        second = client.get("/api/queues/email", params={"kind": "waiting", "per_page": 4, "page": 1}).json()
        delayed = client.get("/api/queues/email", params={"kind": "delayed"}).json()
        page = client.get("/queues/email").text
        job_page = client.get(f"/jobs/{urgent[0]}").text

    assert (overview["email"]["waiting"], overview["email"]["delayed"]) == (5, 2)
    # The high lane runs first, so it is listed first; each lane newest first.
    assert waiting["total"] == 5
    assert [(m["args"]["key"], m["lane"]) for m in waiting["messages"]] == [
        ("urgent1", "high"),
        ("urgent0", "high"),
        ("normal2", "normal"),
        ("normal1", "normal"),
        ("normal0", "normal"),
    ]
    assert [m["args"]["key"] for m in second["messages"]] == ["normal0"]  # a window across the lanes
    assert delayed["total"] == 2
    assert [(m["args"]["key"], m["lane"]) for m in delayed["messages"]] == [
        ("urgent-later", "high"),
        ("later", "normal"),
    ]
    assert page.count('class="badge info"') == 2
    assert "urgent0" in job_page  # its arguments, read from the high lane's store


def test_queue_pages_list_newest_first_and_paginate(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    for i in range(30):
        d.probes["email"].send(key=f"m{i:02d}", password=SECRET)

    with d.client(BASIC) as client:
        first = client.get("/api/queues/email", params={"kind": "waiting"}).json()
        second = client.get("/api/queues/email", params={"kind": "waiting", "page": 1}).json()
        page = client.get("/queues/email").text
        older = re.search(r'href="([^"]+)">Older', page)
        assert older is not None
        last_page = client.get(older.group(1).replace("&amp;", "&")).text

    assert first["total"] == second["total"] == 30
    assert [m["args"]["key"] for m in first["messages"]] == [f"m{i:02d}" for i in range(29, 4, -1)]
    assert [m["args"]["key"] for m in second["messages"]] == [f"m{i:02d}" for i in range(4, -1, -1)]
    assert {m["args"]["password"] for m in first["messages"]} == {"[REDACTED]"}
    assert all(m["actor"] == "probe" and m["attempts"] == 1 for m in first["messages"])
    assert page.count("data-message=") == 25 and "Page 1 of 2" in page
    assert last_page.count("data-message=") == 5 and "Page 2 of 2" in last_page
    assert SECRET not in page + last_page + json.dumps([first, second])


def test_delayed_page_shows_due_time(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    d.probes["image-processing"].send_with_options(kwargs={"key": "soon"}, delay=120_000)
    d.probes["image-processing"].send_with_options(kwargs={"key": "late"}, delay=3_600_000)
    with d.client(BASIC) as client:
        rows = client.get("/api/queues/image-processing", params={"kind": "delayed"}).json()["messages"]
        page = client.get("/queues/image-processing", params={"kind": "delayed"}).text
    # newest first: the later due time first
    assert [r["args"]["key"] for r in rows] == ["late", "soon"]
    assert page.count("data-message=") == 2
    assert re.search(r">in (59m|1h 00m)", page) and re.search(r">in (1m 5\d|2m 00)s?", page)


def test_job_page_shows_state_history_and_sanitized_arguments(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    job = d.probes["email"].send(key="one", password=SECRET, value="also-sensitive-text").message_id
    with d.client(BASIC) as client:
        page = client.get(f"/jobs/{job}").text
        api = client.get(f"/api/jobs/{job}").json()
        found = client.get("/jobs", params={"id": job})
        missing_page = client.get("/jobs/no-such-job")
        missing_api = client.get("/api/jobs/no-such-job")

    assert 'data-state="queued"' in page and 'data-history="queued"' in page
    assert 'data-field="attempts">0<' in page
    assert SECRET not in page and "also-sensitive-text" not in page and "[REDACTED]" in page
    assert (api["state"], api["queue"], api["actor"], api["attempts"]) == ("queued", "email", "probe", 0)
    assert api["args"]["password"] == api["args"]["value"] == "[REDACTED]"
    assert [h["state"] for h in api["history"]] == ["queued"]
    assert found.status_code == 303 and found.headers["location"] == f"/jobs/{job}"
    assert missing_page.status_code == 404 and "No job no-such-job" in missing_page.text
    assert missing_api.status_code == 404 and missing_api.json()["error"].startswith("No job")


def test_unknown_queue_and_bad_parameters(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    with d.client(BASIC) as client:
        assert client.get("/queues/nope").status_code == 404
        assert client.get("/api/queues/nope").status_code == 404
        assert client.get("/queues/email", params={"kind": "everything"}).status_code == 400
        assert client.get("/queues/email", params={"page": "x"}).status_code == 400
        assert client.get("/jobs", params={"id": "../../etc"}).status_code == 404


# --- authentication ----------------------------------------------------------------------------
def test_every_route_requires_credentials_when_configured(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    with d.client() as anonymous, d.client(BASIC) as user:
        for path in GET_PATHS:
            refused = anonymous.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic realm="), path
            for header in (
                _basic(USER, "wrong-password"),
                _basic("someone", PASSWORD),
                _basic(USER, PASSWORD + "x"),
                "Bearer wrong-token",
                "Bearer " + PASSWORD,
                "Basic !!!not-base64",
            ):
                assert anonymous.get(path, headers={"Authorization": header}).status_code == 401, (
                    path,
                    header,
                )
            assert user.get(path).status_code == 200, path
            assert anonymous.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        for path in _post_paths(d):
            refused = anonymous.post(path, headers={"Origin": d.server.url}, data={"csrf_token": "x"})
            assert refused.status_code == 401, path
    assert d.stack.api.paused() == set()


def test_token_only_dashboard_challenges_for_a_bearer_token(dashboard: StartDashboard) -> None:
    d = dashboard({"DASHBOARD_TOKEN": TOKEN})
    with d.client() as client:
        refused = client.get("/api/overview")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/api/overview", headers={"Authorization": _basic(USER, TOKEN)}).status_code == 401
        assert client.get("/api/overview", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_open_dashboard_answers_only_loopback_clients_and_names(dashboard: StartDashboard) -> None:
    d = dashboard()
    with d.client() as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"Host": f"localhost:{d.server.port}"}).status_code == 200
        # A DNS-rebinding page reaches 127.0.0.1 under its own name: refused.
        rebound = client.get("/", headers={"Host": f"attacker.example:{d.server.port}"})
        assert rebound.status_code == 403 and "DASHBOARD_PASSWORD" in rebound.text

    async def from_the_network() -> int:
        transport = httpx.ASGITransport(app=d.app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as remote:
            return (await remote.get("/")).status_code

    # The app mounted in a web app that listens on every address: a remote client is refused.
    assert anyio.run(from_the_network) == 403


def test_serve_refuses_a_public_address_without_credentials(
    dashboard: StartDashboard, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dashboard()
    for host in ("0.0.0.0", "::", "192.168.1.20", "dashboard.internal"):
        assert serve(d.ops, host, 8080) == 78
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"refusing to listen on {host}" in err
        assert "DASHBOARD_PASSWORD" in err and "DASHBOARD_TOKEN" in err
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "localhost.example.com", ""))


# --- CSRF ----------------------------------------------------------------------------------------
def test_actions_refuse_posts_without_csrf_proof(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    origin = d.server.url
    with d.client(BASIC) as client, d.client(Authorization=f"Bearer {TOKEN}") as bearer:
        token = csrf_token(client.get("/").text)
        token_of_another_principal = csrf_token(bearer.get("/").text)
        other_app = CsrfGuard().issue(f"user:{USER}")
        refusals: list[tuple[dict[str, str], dict[str, str]]] = [
            ({"Origin": "http://attacker.example"}, {"csrf_token": token}),
            ({"Origin": "null"}, {"csrf_token": token}),
            ({"Referer": "http://attacker.example/page"}, {"csrf_token": token}),
            ({}, {"csrf_token": token}),  # neither Origin nor Referer
            ({"Origin": origin}, {}),
            ({"Origin": origin}, {"csrf_token": ""}),
            ({"Origin": origin}, {"csrf_token": token + "x"}),
            ({"Origin": origin}, {"csrf_token": token_of_another_principal}),
            ({"Origin": origin}, {"csrf_token": other_app}),
            ({"Origin": origin}, {"csrf_token": "1.abc"}),
        ]
        paths = _post_paths(d)
        assert len(paths) == 7
        for path in paths:
            for headers, form in refusals:
                response = client.post(path, headers=headers, data={**form, "confirm": "email"})
                assert response.status_code == 403, (path, headers, form)
            # GET never changes anything
            assert client.get(path).status_code == 405
        assert d.stack.api.paused() == set()

        # With both proofs the action runs and the browser goes back where it came from.
        done = client.post(
            "/queues/email/pause",
            headers={"Origin": origin},
            data={"csrf_token": token, "next": "/queues/email"},
        )
        assert done.status_code == 303 and done.headers["location"] == "/queues/email?notice=paused"
        assert d.stack.api.paused() == {"email"}
        # No Origin, but a Referer from our own page: accepted.
        resumed = client.post(
            "/queues/email/resume", headers={"Referer": f"{origin}/"}, data={"csrf_token": token}
        )
        assert resumed.status_code == 303 and resumed.headers["location"] == "/?notice=resumed"
        assert d.stack.api.paused() == set()
        # A form's "next" may only point inside the dashboard.
        for foreign in ("https://attacker.example/", "//attacker.example/x", "/\\attacker.example"):
            away = client.post(
                "/queues/email/pause", headers={"Origin": origin}, data={"csrf_token": token, "next": foreign}
            )
            assert away.headers["location"] == "/?notice=paused", foreign
        gone = client.post(
            "/queues/email/dead/00000000-0000-4000-8000-000000000000/retry",
            headers={"Origin": origin},
            data={"csrf_token": token},
        )
        assert gone.status_code == 303 and "notice=gone" in gone.headers["location"]
        unconfirmed = client.post(
            "/queues/email/dead/purge",
            headers={"Origin": origin},
            data={"csrf_token": token, "confirm": "cleanup"},
        )
        assert unconfirmed.status_code == 400


def test_every_process_of_one_dashboard_accepts_the_others_tokens(dashboard: StartDashboard) -> None:
    """Two dashboard processes with the same credentials (replicas behind a balancer, web
    server workers, a restart) share the CSRF secret; other credentials revoke it."""
    first, second = dashboard(PROTECTED), dashboard(PROTECTED)
    rotated = dashboard({**PROTECTED, "DASHBOARD_PASSWORD": PASSWORD + "-rotated"})
    with first.client(BASIC) as client:
        token = csrf_token(client.get("/").text)
    with second.client(BASIC) as client:
        paused = client.post(
            "/queues/email/pause", headers={"Origin": second.server.url}, data={"csrf_token": token}
        )
        assert paused.status_code == 303
    assert second.stack.api.paused() == {"email"}
    with rotated.client((USER, PASSWORD + "-rotated")) as client:
        refused = client.post(
            "/queues/email/resume", headers={"Origin": rotated.server.url}, data={"csrf_token": token}
        )
        assert refused.status_code == 403
    assert rotated.stack.api.paused() == {"email"}
    # Without credentials (loopback only) each process keeps a secret of its own.
    assert CsrfGuard.for_credentials(None, None)._secret != CsrfGuard.for_credentials(None, None)._secret
    assert CsrfGuard.for_credentials(b"ab", b"c")._secret != CsrfGuard.for_credentials(b"a", b"bc")._secret


def test_csrf_tokens_expire_and_belong_to_one_principal() -> None:
    guard = CsrfGuard(max_age_s=60)
    token = guard.issue("user:a", now=1_000_000)
    assert guard.valid(token, "user:a", now=1_000_000)
    assert guard.valid(token, "user:a", now=1_000_060)
    assert not guard.valid(token, "user:a", now=1_000_061)  # expired
    assert not guard.valid(token, "user:a", now=999_990)  # from the future
    assert not guard.valid(token, "user:b", now=1_000_000)
    assert not CsrfGuard().valid(token, "user:a", now=1_000_000)  # another app's secret
    issued, mac = token.split(".")
    assert not guard.valid(f"{int(issued) + 1}.{mac}", "user:a", now=1_000_000)
    assert "secret" not in repr(guard).lower() or "max_age" in repr(guard)

    def headers(**values: str) -> httpx.Headers:
        return httpx.Headers(values)

    assert same_origin(headers(host="127.0.0.1:8080", origin="http://127.0.0.1:8080"))
    assert same_origin(headers(host="ops.example", origin="https://ops.example"))
    assert same_origin(headers(host="ops.example", referer="https://ops.example/jobs/queues/email"))
    assert not same_origin(headers(host="ops.example", origin="https://ops.example.attacker.net"))
    assert not same_origin(headers(host="ops.example", origin="null", referer="https://ops.example/"))
    assert not same_origin(headers(host="ops.example"))
    assert not same_origin(headers(origin="https://ops.example"))


# --- headers, CSP, mounting ------------------------------------------------------------------
def test_security_headers_everywhere_and_no_inline_code(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    job = d.probes["email"].send(key="x").message_id
    with d.client(BASIC) as client, d.client() as anonymous:
        responses = {path: client.get(path) for path in (*GET_PATHS, f"/jobs/{job}", "/nope")}
        responses["401"] = anonymous.get("/")
    for path, response in responses.items():
        assert response.headers["content-security-policy"] == POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-frame-options"] == "DENY", path
        if not path.startswith("/static/"):
            assert response.headers["cache-control"] == "no-store", path
        if response.headers["content-type"].startswith("text/html"):
            text = response.text
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
            assert "<style" not in text and " style=" not in text, path
            assert not re.search(r"\son[a-z]+=", text), path
            assert not re.search(r'(?:src|href)="(?:https?:)?//', text), path  # nothing from elsewhere
    assert responses["/metrics"].headers["content-type"].startswith("text/plain; version=")


def test_mounted_under_a_prefix_keeps_links_assets_and_redirects_inside(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED, mount="/ops/jobs")
    job = d.probes["email"].send(key="mounted").message_id
    with d.client(BASIC) as client:
        assert client.get("/").text == "the host web app"
        page = client.get("/ops/jobs/").text
        targets = set(re.findall(r'(?:href|src|action)="(/[^"]*)"', page))
        assert targets and all(t.startswith("/ops/jobs/") for t in targets), targets
        for link in set(re.findall(r'(?:href|src)="(/[^"]*)"', page)):
            assert client.get(link.replace("&amp;", "&")).status_code == 200, link
        job_page = client.get(f"/ops/jobs/jobs/{job}").text
        assert all(
            x.startswith("/ops/jobs/") for x in re.findall(r'(?:href|src|action)="(/[^"]*)"', job_page)
        )
        assert client.get("/ops/jobs/jobs", params={"id": job}).headers["location"] == f"/ops/jobs/jobs/{job}"
        paused = client.post(
            "/ops/jobs/queues/email/pause",
            headers={"Origin": d.server.url},
            data={"csrf_token": csrf_token(page), "next": "/ops/jobs/queues/email"},
        )
        assert (
            paused.status_code == 303 and paused.headers["location"] == "/ops/jobs/queues/email?notice=paused"
        )
        # a "next" outside the mount point is not followed
        resumed = client.post(
            "/ops/jobs/queues/email/resume",
            headers={"Origin": d.server.url},
            data={"csrf_token": csrf_token(page), "next": "/"},
        )
        assert resumed.headers["location"] == "/ops/jobs/?notice=resumed"
        assert client.get("/ops/jobs/metrics").text.startswith("# HELP")
        assert client.get("/ops/jobs/static/dashboard.css").status_code == 200


# --- scheduler panel -------------------------------------------------------------------------
def test_scheduler_panel_shows_whatever_heartbeats_hold(
    dashboard: StartDashboard, redis_client: redis.Redis
) -> None:
    d = dashboard(PROTECTED)
    ns = d.stack.broker.namespace
    with d.client(BASIC) as client:
        assert "No scheduler replica seen." in client.get("/fleet").text
        assert client.get("/api/scheduler").json() == {"replicas": []}

    now = datetime.now(UTC).replace(microsecond=0)
    last, nxt = now - timedelta(minutes=5), now + timedelta(minutes=55)
    redis_client.set(
        f"{ns}:scheduler:heartbeat:replica-a",
        json.dumps(
            {
                "replica": "replica-a",
                "leader": True,
                "seen": int(now.timestamp() * 1000),
                "host": "sched-host-1",
                "redis": "redis://:hunter2hunter2@redis.internal:6379/0",
                "schedules": {
                    "analytics-hourly": {"last_fire": last.isoformat(), "next_fire": nxt.isoformat()},
                    "cleanup-daily": {
                        "last_fire": None,
                        "next_fire": int(nxt.timestamp()),
                        "cron": "0 3 * * *",
                    },
                },
            }
        ),
        ex=30,
    )
    redis_client.hset(
        f"{ns}:scheduler:heartbeat:replica-b",
        mapping={"replica_id": "replica-b", "is_leader": "0", "updated_at": str(now.timestamp())},
    )
    redis_client.expire(f"{ns}:scheduler:heartbeat:replica-b", 30)

    with d.client(BASIC) as client:
        fleet = client.get("/fleet").text
        overview = client.get("/").text
        api = {r["replica_id"]: r for r in client.get("/api/scheduler").json()["replicas"]}

    assert 'data-replica="replica-a"' in fleet and 'data-replica="replica-b"' in fleet
    assert 'data-schedule="analytics-hourly"' in fleet and 'data-schedule="cleanup-daily"' in fleet
    assert "sched-host-1" in fleet and "0 3 * * *" in fleet
    assert "hunter2hunter2" not in fleet + overview + json.dumps(api)
    assert "No scheduler replica seen." not in overview and "analytics-hourly" in overview
    a, b = api["replica-a"], api["replica-b"]
    assert (a["alive"], a["leader"], b["alive"], b["leader"]) == (True, True, True, False)
    schedules = {s["name"]: s for s in a["schedules"]}
    assert schedules["analytics-hourly"]["last"] == last.isoformat()
    assert schedules["analytics-hourly"]["next"] == nxt.isoformat()
    assert (
        schedules["cleanup-daily"]["next"] == nxt.isoformat() and schedules["cleanup-daily"]["last"] is None
    )
    assert 0 < a["ttl_s"] <= 30


def test_scheduler_panel_reads_what_the_scheduler_writes(dashboard: StartDashboard) -> None:
    d = dashboard(PROTECTED)
    now = datetime.now(UTC).replace(microsecond=0)
    schedules = build_schedules(d.stack.settings)
    fired = now - timedelta(minutes=20)
    for replica, state, error in (
        ("sched-a:101", "running", None),
        ("sched-b:202", "degraded", "send refused: redis://:hunter2hunter2@redis.internal:6379/0 down"),
        ("sched-c:303", "stopped", None),
    ):
        document = heartbeat_document(
            Identity(replica, replica.split(":")[0], int(replica.split(":")[1]), started_at=now),
            now=now,
            state=state,
            schedules=schedules,
            cursors={schedules[0].name: Cursor(fire=fired, window="2026-01-01T00:00Z")},
            error=error,
        )
        Heartbeat(d.stack.broker.client, d.stack.broker.namespace, replica, interval_s=10).write(document)

    with d.client(BASIC) as client:
        fleet = client.get("/fleet").text
        overview = client.get("/").text
        api = {r["replica_id"]: r for r in client.get("/api/scheduler").json()["replicas"]}

    assert {r: (api[r]["alive"], api[r]["state"]) for r in api} == {
        "sched-a:101": (True, "running"),
        "sched-b:202": (True, "degraded"),
        "sched-c:303": (False, "stopped"),
    }
    first = {s["name"]: s for s in api["sched-a:101"]["schedules"]}
    assert set(first) == {s.name for s in schedules}
    assert first[schedules[0].name]["last"] == fired.isoformat()
    assert all(datetime.fromisoformat(s["next"]) > now for s in first.values())
    assert all(f'data-schedule="{s.name}"' in fleet for s in schedules)
    assert "hunter2hunter2" not in fleet + overview + json.dumps(api)
    assert ">degraded<" in fleet and ">stopped<" in fleet
    tile = re.search(r'data-tile="scheduler".*?class="value">(\d+)<', overview, re.S)
    assert tile is not None and tile.group(1) == "2"


def test_heartbeat_shapes_are_read_defensively() -> None:
    now = time.time()
    stale = parse_heartbeat(
        "r1", {"at": now - 600, "schedules": [{"name": "a", "next": "garbage"}]}, None, now
    )
    assert stale.replica_id == "r1" and stale.alive is False
    assert [(s.name, s.next) for s in stale.schedules] == [("a", None)]
    bare = parse_heartbeat("r2", {"schedules": json.dumps({"b": "2030-01-01T00:00:00Z"})}, 12.0, now)
    assert bare.alive is True and bare.seen is None
    assert bare.schedules[0].next == datetime(2030, 1, 1, tzinfo=UTC)
    odd = parse_heartbeat("r3", {"schedules": 7, "role": "leader", "extra": {"x": 1}}, None, now)
    assert odd.schedules == [] and odd.leader is True and odd.details == {"extra": '{"x": 1}'}


@pytest.mark.slow
def test_job_page_shows_progress_log_lines_and_runs_a_delayed_job_now(
    dashboard: StartDashboard, real_env: dict[str, str], worker_group: type[WorkerGroup]
) -> None:
    d = dashboard(PROTECTED)
    group = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=1, threads=2
    )
    group.wait_ready()
    ran = d.probes["email"].send(key="busy", progress_steps=2, log_lines=2, password=SECRET).message_id
    d.stack.api.result(ran, timeout=20)
    later = d.probes["email"].send_with_options(kwargs={"key": "later"}, delay=3_600_000).message_id
    with d.client(BASIC) as client:
        page = client.get(f"/jobs/{ran}").text
        delayed_page = client.get(f"/jobs/{later}").text
        token = csrf_token(delayed_page)
        promoted = client.post(
            f"/jobs/{later}/promote", headers={"Origin": d.server.url}, data={"csrf_token": token}
        )
    assert '<progress max="100" value="100.0">' in page and "step 2 of 2" in page
    assert 'data-field="logs"' in page and "probe busy line 2 of 2" in page
    assert SECRET not in page
    assert "Run now" in delayed_page and "Run now" not in page
    assert promoted.status_code == 303 and "notice=promoted" in promoted.headers["location"]
    assert d.stack.api.result(later, timeout=20)["success"] is True
