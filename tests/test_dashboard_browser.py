"""An operator's session in Debian's chromium (Playwright) against the dashboard, real Redis and real workers.

Saves a screenshot of the overview to ``test-artifacts/dashboard-overview.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from scheduler.gate import Cursor
from scheduler.health import Heartbeat, Identity, heartbeat_document
from scheduler.schedules import build_schedules
from tests.conftest import Stack
from tests.services.workers import REPO, WorkerGroup, clean_environ
from tests.support.browser import Dashboard, chromium, serve_dashboard
from tests.support.redis_inspect import wait_until

pytestmark = pytest.mark.slow

USER, PASSWORD = "oncall", "correct-horse-battery"
SCREENSHOT = REPO / "test-artifacts" / "dashboard-overview.png"
TIMEOUT_MS = 10_000


def _cell(page: Page, queue: str, column: str) -> Any:
    return page.locator(f'tr[data-queue="{queue}"] [data-col="{column}"]')


def _state(d: Dashboard, job: str) -> str | None:
    status = d.stack.api.status(job)
    return None if status is None else status["state"]


def _scheduler_heartbeat(d: Dashboard) -> None:
    """A scheduler replica's heartbeat, written by the scheduler's own code."""
    now = datetime.now(UTC).replace(microsecond=0)
    schedules = build_schedules(d.stack.settings)
    document = heartbeat_document(
        Identity("sched-1:4242", "sched-1", 4242, started_at=now - timedelta(hours=3)),
        now=now,
        state="running",
        schedules=schedules,
        cursors={s.name: Cursor(fire=now - timedelta(minutes=30), window="previous") for s in schedules[:2]},
    )
    Heartbeat(d.stack.broker.client, d.stack.broker.namespace, "sched-1:4242", interval_s=20).write(document)


def _visit(page: Page, url: str) -> tuple[list[int], int]:
    """Statuses of the responses a navigation got, and how many queue rows the page then shows."""
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url == url else None)
    try:
        page.goto(url)
    except PlaywrightError as exc:  # chromium gives up on a challenge it cannot answer
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    page.wait_for_load_state()
    return statuses, page.locator("tr[data-queue]").count()


def test_operator_session_in_chromium(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    tmp_path: Path,
) -> None:
    group = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=2, threads=2
    )
    stack = make_stack({**real_env, "DASHBOARD_USER": USER, "DASHBOARD_PASSWORD": PASSWORD})
    with serve_dashboard(stack) as d:
        group.wait_ready()
        p, api = d.probes, d.stack.api
        # Real messages in every state.
        running = p["image-processing"].send(key="slow", sleep_ms=8000).message_id
        api.pause("cleanup")
        for i in range(3):
            p["cleanup"].send(key=f"held{i}")  # waiting: the queue is paused
        for i in range(2):
            p["analytics"].send_with_options(kwargs={"key": f"later{i}"}, delay=600_000)  # delayed
        done = [p["email"].send(key=f"ok{i}").message_id for i in range(5)]
        busy = p["email"].send(key="busy", progress_steps=4, log_lines=3).message_id  # progress + log lines
        done.append(busy)
        done.append(p["email"].send(key="flaky", fail_times=1).message_id)  # retried once, then succeeds
        dead = p["email"].send(key="dead", fail_times=1, error_code="VAL_2001").message_id  # ok when retried
        broken = p["image-processing"].send(key="broken", fail_times=9, error_code="FILE_4004").message_id
        for job in done:
            assert api.result(job, timeout=20)["success"] is True
        assert wait_until(lambda: _state(d, dead) == _state(d, broken) == "dead", timeout=20)
        assert wait_until(lambda: _state(d, running) == "running", timeout=20)
        assert wait_until(lambda: sum(w.alive for w in d.ops.inspector.workers()) == 2, timeout=10)
        _scheduler_heartbeat(d)

        # Login is required: without credentials, or with wrong ones, the browser gets no page.
        for name, credentials in (("anonymous", None), ("wrong", {"username": USER, "password": "guess"})):
            with chromium(tmp_path / name, http_credentials=credentials) as context:
                statuses, rows = _visit(context.new_page(), d.url + "/")
            assert statuses and set(statuses) == {401}, (name, statuses)
            assert rows == 0, name

        with chromium(
            tmp_path / "operator",
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1440, "height": 900},
        ) as context:
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            response = page.goto(d.url + "/?refresh=1")
            assert response is not None and response.status == 200

            # The overview shows the right counts.
            expected = {
                ("cleanup", "waiting"): "3",
                ("cleanup", "state"): "Paused",
                ("analytics", "delayed"): "2",
                ("email", "succeeded_1h"): "7",
                ("email", "failed_1h"): "1",
                ("email", "dead"): "1",
                ("email", "state"): "Active",
                ("image-processing", "running"): "1 / 3",
                ("image-processing", "failed_1h"): "1",
                ("image-processing", "dead"): "1",
            }
            for (queue, column), text in expected.items():
                expect(_cell(page, queue, column)).to_have_text(text, timeout=TIMEOUT_MS)
            expect(page.locator('[data-tile="workers"] .value')).to_have_text("2")
            expect(page.locator('[data-tile="dead"] .value')).to_have_text("2")
            expect(page.locator('[data-tile="scheduler"] .value')).to_have_text("1")
            # Auto-refresh: a new message shows up without a reload.
            p["cleanup"].send(key="held-more")
            expect(_cell(page, "cleanup", "waiting")).to_have_text("4", timeout=TIMEOUT_MS)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # A dead letter is retried from its queue page, and then runs.
            _cell(page, "email", "dead").locator("a").click()
            expect(page.locator("[data-tab=dead]")).to_have_attribute("aria-current", "page")
            page.locator(f'tr[data-message="{dead}"]').get_by_role("button", name="Retry").click()
            expect(page.locator(".notice")).to_contain_text("Dead letter put back on its queue")
            assert api.result(dead, timeout=20)["runs"] == 2
            page.goto(f"{d.url}/jobs/{dead}")
            expect(page.locator("[data-state]")).to_have_attribute("data-state", "succeeded")
            expect(page.locator("[data-history]")).to_have_count(
                7
            )  # queued running failed dead queued running ok

            # Delete asks first: cancelling keeps the dead letter, confirming removes it.
            page.goto(f"{d.url}/queues/image-processing?kind=dead")
            delete = page.locator(f'tr[data-message="{broken}"]').get_by_role("button", name="Delete")
            page.once("dialog", lambda dialog: dialog.dismiss())
            delete.click()
            expect(page.locator(f'tr[data-message="{broken}"]')).to_have_count(1)
            page.once("dialog", lambda dialog: dialog.accept())
            delete.click()
            expect(page.locator(".notice")).to_contain_text("Dead letter deleted")
            expect(page.locator(f'tr[data-message="{broken}"]')).to_have_count(0)

            # A queue is paused from the page: its jobs wait, other queues' jobs run...
            page.goto(d.url + "/")
            page.locator('tr[data-queue="email"]').get_by_role("button", name="Pause").click()
            expect(page.locator(".notice")).to_contain_text("Queue paused")
            expect(_cell(page, "email", "state")).to_have_text("Paused")
            assert api.paused() == {"cleanup", "email"}
            held = p["email"].send(key="while-paused").message_id
            assert api.result(p["analytics"].send(key="meanwhile").message_id, timeout=20)["success"] is True
            assert _state(d, held) == "queued"
            # ... and resumed: the held job runs.
            page.locator('tr[data-queue="email"]').get_by_role("button", name="Resume").click()
            expect(page.locator(".notice")).to_contain_text("Queue resumed")
            expect(_cell(page, "email", "state")).to_have_text("Active")
            assert api.result(held, timeout=20)["success"] is True
            assert api.paused() == {"cleanup"}

            # A job's page shows its progress and the log lines it emitted.
            page.goto(f"{d.url}/jobs/{busy}")
            expect(page.locator('[data-field="progress"] progress')).to_have_attribute("value", "100.0")
            expect(page.locator('[data-field="progress"]')).to_contain_text("step 4 of 4")
            expect(page.locator('[data-field="logs"]')).to_contain_text("probe busy line 3 of 3")

            assert problems == [], problems
    assert SCREENSHOT.stat().st_size > 10_000
