"""The dashboard beside real `dramatiq jobs` workers: dead-letter actions, secrets, /metrics, serve()."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from middleware.errors import JobError
from tests.conftest import Stack
from tests.services.workers import REPO, WorkerGroup, clean_environ
from tests.support.browser import Dashboard, csrf_token, serve_dashboard
from tests.support.probe import spans_key
from tests.support.redis_inspect import wait_until

pytestmark = pytest.mark.slow

USER, PASSWORD = "oncall", "correct-horse-battery"
PROTECTED = {"DASHBOARD_USER": USER, "DASHBOARD_PASSWORD": PASSWORD}
BASIC = (USER, PASSWORD)


@pytest.fixture
def dashboard(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
) -> Iterator[Dashboard]:
    """Two worker processes (probe actors on every queue) and a protected dashboard over the same Redis."""
    group = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=2, threads=3
    )
    with ExitStack() as running:
        d = running.enter_context(serve_dashboard(make_stack({**real_env, **PROTECTED})))
        group.wait_ready()
        yield d


def _state(d: Dashboard, job: str) -> str | None:
    status = d.stack.api.status(job)
    return None if status is None else status["state"]


def _wait_dead(d: Dashboard, jobs: list[str]) -> None:
    assert wait_until(lambda: all(_state(d, j) == "dead" for j in jobs), timeout=20), [
        _state(d, j) for j in jobs
    ]


def _row_action(page: str, message_id: str, action: str) -> str:
    row = re.search(rf'<tr data-message="{message_id}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {message_id}"
    found = re.search(rf'action="([^"]+/{action})"', row.group(1))
    assert found, f"no {action} form in the row of {message_id}"
    return found.group(1)


def _form_field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, name
    return found.group(1)


def test_dead_letters_are_retried_deleted_and_purged_from_the_pages(dashboard: Dashboard) -> None:
    d = dashboard
    probe = d.probes["email"]
    # Fails permanently on its first run only: a retried dead letter succeeds.
    dead = [probe.send(key=f"d{i}", fail_times=1, error_code="VAL_2001").message_id for i in range(4)]
    _wait_dead(d, dead)
    post = {"headers": {"Origin": d.server.url}}

    with d.client(BASIC) as client:
        page = client.get("/queues/email", params={"kind": "dead"}).text
        token = csrf_token(page)
        assert page.count("data-message=") == 4
        assert page.count(">VAL_2001<") == 4 and "probe failing on purpose" in page
        listed = client.get("/api/queues/email", params={"kind": "dead"}).json()["messages"]
        assert sorted(m["message_id"] for m in listed) == sorted(dead)
        failed_at = [m["at"] for m in listed]
        assert failed_at == sorted(failed_at, reverse=True)  # newest failure first
        assert re.findall(r'<tr data-message="([^"]+)"', page) == [m["message_id"] for m in listed]

        # Retry one: it runs again (and succeeds), keeping its id; its job page shows the whole story.
        retried = client.post(_row_action(page, dead[0], "retry"), data={"csrf_token": token}, **post)
        assert retried.status_code == 303 and "notice=retried" in retried.headers["location"]
        assert d.stack.api.result(dead[0], timeout=20)["runs"] == 2
        job_page = client.get(f"/jobs/{dead[0]}").text
        history = re.findall(r'data-history="(\w+)"', job_page)
        assert history[-5:] == ["failed", "dead", "queued", "running", "succeeded"]
        assert '"runs": 2' in html.unescape(job_page)
        # The same dead letter again: someone else got there first.
        again = client.post(_row_action(page, dead[0], "retry"), data={"csrf_token": token}, **post)
        assert "notice=gone" in again.headers["location"]

        # Delete one: gone from the queue page, never runs again.
        deleted = client.post(_row_action(page, dead[1], "delete"), data={"csrf_token": token}, **post)
        assert "notice=deleted" in deleted.headers["location"]
        page = client.get("/queues/email", params={"kind": "dead"}).text
        assert sorted(re.findall(r'<tr data-message="([^"]+)"', page)) == sorted(dead[2:])

        # Retry all: only dead letters that existed when the page was shown.
        before = _form_field(page, "before")
        late = probe.send(key="late", fail_times=1, error_code="VAL_2001").message_id
        _wait_dead(d, [late])
        action = re.search(r'action="([^"]+/dead/retry-all)"', page)
        assert action is not None
        all_retried = client.post(action.group(1), data={"csrf_token": token, "before": before}, **post)
        assert "notice=retried_all&n=2" in all_retried.headers["location"]
        for job in dead[2:]:
            assert d.stack.api.result(job, timeout=20)["runs"] == 2
        assert _state(d, late) == "dead"

        # Purge: a confirmation page, and the queue's name typed in it.
        more = [probe.send(key=f"p{i}", fail_times=9, error_code="FILE_4004").message_id for i in range(2)]
        _wait_dead(d, more)
        confirm = client.get("/queues/email/purge").text
        assert "Purge 3 dead letters" in confirm
        form = {"csrf_token": csrf_token(confirm), "before": _form_field(confirm, "before")}
        assert client.post("/queues/email/dead/purge", data=form, **post).status_code == 400
        wrong = client.post("/queues/email/dead/purge", data={**form, "confirm": "cleanup"}, **post)
        assert wrong.status_code == 400
        purged = client.post("/queues/email/dead/purge", data={**form, "confirm": "email"}, **post)
        assert "notice=purged&n=3" in purged.headers["location"]
        after = client.get(urlsplit(purged.headers["location"]).path + "?kind=dead").text
        assert "No dead letters." in after
        assert client.get("/api/overview").json()["queues"][0]["dead"] == 0


SECRETS = ("Hunter2-pa55word-QX", "sensitive-value-ZK", "echoed-token-MV")


def test_no_secret_reaches_any_page_or_api_response(dashboard: Dashboard) -> None:
    d = dashboard
    password, value, echo = SECRETS
    secret_args = {"password": password, "value": value, "echo": echo}
    jobs = [
        # dead at once, its error echoing two secrets
        d.probes["email"].send(
            key="dead",
            fail_times=1,
            error_code="VAL_2001",
            error_message="login {password} failed: {echo}",
            **secret_args,
        ),
        # an exception no rule knows (SRV_6001), retried until dead
        d.probes["image-processing"].send(
            key="raw",
            fail_times=9,
            error_code="RAW",
            error_message="boom with {password} and {echo}",
            **secret_args,
        ),
        d.probes["email"].send(key="ok", **secret_args),
        d.probes["analytics"].send_with_options(kwargs={"key": "later", **secret_args}, delay=600_000),
    ]
    d.stack.api.pause("cleanup")
    jobs.append(d.probes["cleanup"].send(key="held", **secret_args))
    ids = [m.message_id for m in jobs]
    assert d.stack.api.result(ids[2], timeout=20)["success"] is True
    _wait_dead(d, ids[:2])

    bodies: dict[str, str] = {}
    with d.client(BASIC) as client:
        # Every page reachable from the overview, every queue and kind, every job, and the API.
        todo = ["/", "/metrics"] + [f"/jobs/{i}" for i in ids] + [f"/api/jobs/{i}" for i in ids]
        for queue in ("email", "image-processing", "analytics", "cleanup"):
            for kind in ("waiting", "delayed", "dead"):
                todo += [f"/queues/{queue}?kind={kind}", f"/api/queues/{queue}?kind={kind}"]
        todo += ["/api/overview", "/api/workers", "/api/scheduler"]
        while todo and len(bodies) < 300:
            path = todo.pop()
            if path in bodies:
                continue
            response = client.get(path)
            assert response.status_code == 200, path
            bodies[path] = response.text
            if response.headers["content-type"].startswith("text/html"):
                todo += [
                    link.replace("&amp;", "&")
                    for link in re.findall(r'href="(/[^"]*)"', response.text)
                    if not link.startswith("/static/")
                ]
    everything = "\n".join(bodies.values())
    leaks = {secret for secret in SECRETS if secret in everything}
    assert not leaks, {
        p: [s for s in SECRETS if s in b] for p, b in bodies.items() if any(s in b for s in SECRETS)
    }
    assert len(bodies) > 40
    # ... while the jobs and their errors are shown, redacted.
    assert "login [REDACTED] failed: [REDACTED]" in bodies[f"/jobs/{ids[0]}"]
    assert json.loads(bodies[f"/api/jobs/{ids[1]}"])["error_code"] == "SRV_6001"
    for path in (
        "/queues/email?kind=dead",
        "/queues/cleanup?kind=waiting",
        "/queues/analytics?kind=delayed",
    ):
        assert bodies[path].count("[REDACTED]") >= 3, path


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_count_what_two_worker_processes_did(dashboard: Dashboard, redis_client: redis.Redis) -> None:
    d = dashboard
    p = d.probes
    ok = [p["email"].send(key=f"ok{i}", sleep_ms=150) for i in range(6)]
    ok += [p["image-processing"].send(key=f"img{i}", sleep_ms=150) for i in range(4)]
    flaky = [p["email"].send(key=f"flaky{i}", fail_times=1) for i in range(2)]  # SRV_6003, retried once
    bad = [p["analytics"].send(key=f"bad{i}", fail_times=9, error_code="VAL_2001") for i in range(3)]
    for message in ok + flaky:
        assert d.stack.api.result(message.message_id, timeout=30)["success"] is True
    for message in bad:
        with pytest.raises(JobError):
            d.stack.api.result(message.message_id, timeout=30)
    _wait_dead(d, [m.message_id for m in bad])
    # A worker process describes itself on its keeper's first tick (up to 2 s after it starts).
    assert wait_until(lambda: sum(w.alive for w in d.ops.inspector.workers()) == 2, timeout=10)

    with d.client(BASIC) as client:
        response = client.get("/metrics")
    assert httpx.get(f"{d.url}/metrics").status_code == 401
    assert response.status_code == 200
    samples = _samples(response.text)

    jobs = {
        (s["actor"], s["queue"], s["outcome"], s["error_code"]): v
        for s, v in samples["taatom_jobs_jobs_total"]
    }
    assert jobs == {
        ("probe", "email", "succeeded", ""): 8,
        ("probe", "email", "retried", "SRV_6003"): 2,
        ("probe_image", "image-processing", "succeeded", ""): 4,
        ("probe_analytics", "analytics", "failed", "VAL_2001"): 3,
        ("probe_analytics", "analytics", "dead", "VAL_2001"): 3,
    }
    # What the workers really did, as the probes recorded it: one span per execution.
    spans = [json.loads(s) for s in redis_client.lrange(spans_key(d.stack.broker.namespace), 0, -1)]
    executions = Counter(span["queue"] for span in spans)
    assert executions == {"email": 8 + 2, "image-processing": 4, "analytics": 3}
    assert len({span["pid"] for span in spans}) == 2, "both worker processes took jobs"

    counts = {s["actor"]: v for s, v in samples["taatom_jobs_duration_seconds_count"]}
    assert counts == {"probe": 8, "probe_image": 4, "probe_analytics": 3}
    infinite = {s["actor"]: v for s, v in samples["taatom_jobs_duration_seconds_bucket"] if s["le"] == "+Inf"}
    assert infinite == counts
    # Jobs sleeping 150 ms are all in buckets above 0.1 s and none at or below it.
    fast = {s["actor"]: v for s, v in samples["taatom_jobs_duration_seconds_bucket"] if s["le"] == "0.1"}
    assert fast.get("probe_image", 0) == 0
    sums = {s["actor"]: v for s, v in samples["taatom_jobs_duration_seconds_sum"]}
    assert sums["probe_image"] >= 4 * 0.15

    def gauge(name: str) -> dict[str, float]:
        return {labels["queue"]: v for labels, v in samples[name]}

    assert gauge("taatom_jobs_queue_dead") == {
        "email": 0,
        "image-processing": 0,
        "analytics": 3,
        "cleanup": 0,
    }
    assert set(gauge("taatom_jobs_queue_waiting").values()) == {0}
    assert samples["taatom_jobs_workers_alive"] == [({}, 2)]


def test_serve_runs_standalone_and_stops_on_sigterm(real_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import sys; from ops.context import default_ops; from ops.dashboard import serve; "
        f"sys.exit(serve(default_ops(), '127.0.0.1', {port}))"
    )
    env = clean_environ({**real_env, **PROTECTED})
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answers() -> bool:
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{port}/api/overview", auth=BASIC, timeout=1).status_code
                    == 200
                )
            except httpx.TransportError:
                return proc.poll() is not None

        assert wait_until(answers, timeout=20) and proc.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 401
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        output = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in output and PASSWORD not in output
