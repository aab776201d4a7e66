"""Job state and results: transitions, result(), timeouts, time limits (embedded mode, same middleware)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC

import pytest

from middleware.errors import JobError
from middleware.job_state import JobNotFound, ResultTimeout
from tests.conftest import FAST_POLICY, Stack
from tests.support.probe import declare_probe
from tests.support.redis_inspect import wait_until


@pytest.fixture
def stack(make_stack: Callable[[dict[str, str]], Stack], tmp_path: object) -> Stack:
    return make_stack({"EMBEDDED_DATA_DIR": str(tmp_path), **FAST_POLICY, "JOBS_BACKOFF_MIN_MS": "300"})


def _states(stack: Stack, job: str) -> list[str]:
    status = stack.api.status(job)
    assert status is not None
    return [h["state"] for h in status["history"]]


def test_succeeding_job(stack: Stack) -> None:
    job = declare_probe(stack.broker).send(key="ok", result_size=3).message_id
    assert stack.api.result(job, timeout=10) == {"success": True, "runs": 1, "payload": "xxx"}
    status = stack.api.status(job)
    assert status is not None
    assert (status["state"], status["queue"], status["actor"], status["attempts"]) == (
        "succeeded",
        "email",
        "probe",
        1,
    )
    assert status["error_code"] is None
    assert status["enqueued_at"] <= status["started_at"] <= status["finished_at"]
    assert status["finished_at"].tzinfo is UTC
    assert _states(stack, job) == ["queued", "running", "succeeded"]


def test_retrying_job_shows_next_attempt_then_succeeds(stack: Stack) -> None:
    job = declare_probe(stack.broker).send(key="flaky", fail_times=1).message_id
    assert wait_until(lambda: (stack.api.status(job) or {}).get("state") == "retrying", timeout=10)
    retrying = stack.api.status(job)
    assert retrying is not None
    assert retrying["error_code"] == "SRV_6003" and retrying["attempts"] == 1
    assert retrying["retry_at"] > retrying["started_at"]
    assert stack.api.result(job, timeout=10)["runs"] == 2
    assert _states(stack, job) == ["queued", "running", "retrying", "queued", "running", "succeeded"]
    assert stack.api.status(job)["attempts"] == 2  # type: ignore[index]


def test_dead_job_result_raises_its_code(stack: Stack) -> None:
    job = declare_probe(stack.broker).send(key="bad", fail_times=9, error_code="FILE_4004").message_id
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=10)
    assert info.value.code == "FILE_4004"
    assert wait_until(lambda: (stack.api.status(job) or {}).get("state") == "dead")
    status = stack.api.status(job)
    assert status is not None
    assert (status["error_code"], status["attempts"]) == ("FILE_4004", 1)
    assert _states(stack, job) == ["queued", "running", "failed", "dead"]


def test_exhausted_job_records_every_attempt(stack: Stack) -> None:
    job = declare_probe(stack.broker).send(key="doomed", fail_times=9).message_id
    with pytest.raises(JobError, match="SRV_6003"):
        stack.api.result(job, timeout=15)
    assert _states(stack, job).count("running") == 3
    assert stack.api.status(job)["attempts"] == 3  # type: ignore[index]


def test_result_timeout_is_reported_as_such(stack: Stack) -> None:
    job = declare_probe(stack.broker).send(key="slow", sleep_ms=2000).message_id
    with pytest.raises(ResultTimeout) as info:
        stack.api.result(job, timeout=0.3)
    assert info.value.state in ("queued", "running")
    assert isinstance(info.value, TimeoutError)
    assert stack.api.result(job, timeout=10)["success"] is True


def test_unknown_job(stack: Stack) -> None:
    assert stack.api.status("no-such-id") is None
    with pytest.raises(JobNotFound):
        stack.api.result("no-such-id", timeout=1)


def test_secrets_never_reach_the_state(stack: Stack) -> None:
    secret = "state-canary-51515"
    job = (
        declare_probe(stack.broker)
        .send(key="s", password=secret, fail_times=9, error_code="VAL_2001", error_message="bad {password}")
        .message_id
    )
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=10)
    assert secret not in str(info.value)
    assert secret not in repr(stack.api.status(job))


def test_time_limit_is_armed_in_embedded_mode(
    make_stack: Callable[[dict[str, str]], Stack], tmp_path: object
) -> None:
    stack = make_stack({"EMBEDDED_DATA_DIR": str(tmp_path), **FAST_POLICY, "EMAIL_TIME_LIMIT_S": "0.5"})
    job = declare_probe(stack.broker).send(key="limit", sleep_ms=5000, sleep_first_run_only=True).message_id
    assert stack.api.result(job, timeout=20)["runs"] == 2
    status = stack.api.status(job)
    assert status is not None and status["attempts"] == 2
    assert "retrying" in _states(stack, job)


def _args(state: str, seq: int, counter: str = "", at: int = 1, **fields: str) -> list[object]:
    entries = [1, f'{{"state": "{state}", "at": {at}}}'] if seq >= 0 else [0]
    pairs = [x for kv in fields.items() for x in kv]
    return [60, at, state, seq, 0, counter, "", "", "probe", "0.0", *entries, *pairs]


def test_coalesce_merges_a_jobs_transitions_without_losing_history_or_counts() -> None:
    from middleware.job_state import coalesce

    job_a, job_b = ["a", "ha"], ["b", "hb"]
    merged = coalesce(
        [
            (job_a, _args("running", 11, at=1, started_at="1")),
            (job_a, _args("succeeded", 12, counter="probe|email|succeeded|", at=2, finished_at="2")),
            (job_b, _args("running", 11, at=3)),
            (job_b, _args("retrying", -1, counter="probe|email|retried|SRV_6003", at=4)),
            (job_b, _args("failed", 12, counter="probe|email|failed|SRV_6003", at=5)),
        ]
    )
    assert [k[0] for k, _ in merged] == ["a", "b", "b"]
    a = merged[0][1]
    assert (a[2], a[3], a[5], a[10]) == ("succeeded", 12, "probe|email|succeeded|", 2)
    assert [json.loads(e)["state"] for e in a[11:13]] == ["running", "succeeded"]
    assert dict(zip(a[13::2], a[14::2], strict=True)) == {"started_at": "1", "finished_at": "2"}
    # a count-only call merges into the previous transition without changing its state...
    b = merged[1][1]
    assert (b[2], b[5], b[10]) == ("running", "probe|email|retried|SRV_6003", 1)
    # ...and two counted calls are never merged, so no count is lost
    assert merged[2][1][5] == "probe|email|failed|SRV_6003"


def test_progress_and_job_log_lines_are_kept_with_the_job(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # as LOG_LEVEL=INFO does in a deployment
    secret = "log-canary-31337"
    job = (
        declare_probe(stack.broker)
        .send(key="p", progress_steps=4, log_lines=3, password=secret, sleep_ms=400)
        .message_id
    )
    # progress is visible while the job runs...
    assert wait_until(lambda: ((stack.api.status(job) or {}).get("progress") or 0) >= 50, timeout=10)
    running = stack.api.status(job)
    assert (
        running is not None and running["state"] == "running" and running["progress_note"].startswith("step")
    )
    stack.api.result(job, timeout=10)
    status = stack.api.status(job)
    assert status is not None
    assert (status["progress"], status["progress_note"]) == (100.0, "step 4 of 4")
    # progress reports add no history entries
    assert [h["state"] for h in status["history"]] == ["queued", "running", "succeeded"]
    lines = status["logs"]
    assert [line.split("] ", 1)[1].split(" password=")[0] for line in lines[:3]] == [
        "jobs.probe: probe p line 1 of 3",
        "jobs.probe: probe p line 2 of 3",
        "jobs.probe: probe p line 3 of 3",
    ]
    assert "Probe job" in lines[-1] and "succeeded" in lines[-1]  # its outcome line is part of its log
    assert secret not in json.dumps(status, default=str)


def test_job_log_lines_are_capped(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    from middleware.job_logs import MAX_LINES

    caplog.set_level(logging.INFO)
    job = declare_probe(stack.broker).send(key="chatty", log_lines=MAX_LINES + 50).message_id
    stack.api.result(job, timeout=10)
    lines = stack.api.status(job)["logs"]  # type: ignore[index]
    assert len(lines) == MAX_LINES and "not kept" in lines[-1]


def test_a_silent_jobs_success_line_is_not_stored_with_it(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job = declare_probe(stack.broker).send(key="quiet").message_id
    stack.api.result(job, timeout=10)
    # The line was logged, but the job's own log keeps only lines beside its own.
    assert any(job in r.getMessage() and "succeeded" in r.getMessage() for r in caplog.records)
    assert stack.api.status(job)["logs"] == []  # type: ignore[index]


def test_report_progress_outside_a_job_does_nothing() -> None:
    from middleware.job_state import report_progress

    report_progress(50, "nobody is listening")
