"""The operator CLI through the real `taatom-jobs` console script (subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack
from tests.services.workers import REPO, WorkerGroup, clean_environ
from tests.support.probe import declare_all_probes
from tests.support.redis_inspect import dead_letters, wait_until

pytestmark = pytest.mark.slow

SCRIPT = shutil.which("taatom-jobs") or str(Path(sys.executable).with_name("taatom-jobs"))


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args],
        cwd=REPO,
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        input=stdin,
    )


def test_status_pause_resume_and_enqueue(
    real_env: dict[str, str], make_stack: Callable[[dict[str, str]], Stack]
) -> None:
    stack = make_stack(real_env)
    assert cli(real_env, "pause", "email").stdout.strip() == "email: paused"
    assert stack.api.paused() == {"email"}
    sent = cli(
        real_env,
        "enqueue",
        "send_email",
        "--json",
        json.dumps({"to": "ana@example.com", "subject": "Hi", "text": "x"}),
    )
    assert sent.returncode == 0, sent.stderr
    job = sent.stdout.strip()
    assert stack.api.status(job)["state"] == "queued"  # type: ignore[index]

    status = cli(real_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert set(rows) == {"email", "image-processing", "analytics", "cleanup"}
    assert (rows["email"]["waiting"], rows["email"]["paused"], rows["email"]["cap"]) == (1, True, 5)
    assert rows["cleanup"]["cap"] == 1

    table = cli(real_env, "status")
    assert "email" in table.stdout and "paused" in table.stdout and "0/5" in table.stdout

    shown = cli(real_env, "job", job)
    assert shown.returncode == 0 and "queued" in shown.stdout and "send_email" in shown.stdout
    assert cli(real_env, "resume", "email").returncode == 0
    assert stack.api.paused() == set()

    later = cli(
        real_env,
        "enqueue",
        "cleanup",
        "--delay",
        "1h",
        "--json",
        '{"cleanup_type": "all", "older_than_days": 30}',
    )
    assert later.returncode == 0, later.stderr
    delayed = later.stdout.strip()
    assert stack.api.status(delayed)["state"] == "delayed"  # type: ignore[index]
    promoted = cli(real_env, "promote", delayed)
    assert promoted.returncode == 0 and "promoted" in promoted.stdout
    again = cli(real_env, "promote", job)  # a queued job: nothing to promote
    assert again.returncode == 2 and "not waiting" in again.stderr

    high = cli(
        real_env,
        "enqueue",
        "send_email",
        "--priority",
        "high",
        "--json",
        json.dumps({"to": "ana@example.com", "subject": "Code", "text": "x"}),
    )
    assert high.returncode == 0, high.stderr
    assert stack.api.status(high.stdout.strip())["lane"] == "high"  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("enqueue", "cleanup", "--json", '{"cleanup_type": "all", "older_than_days": 3}'), 1, "VAL_2001"),
        (("enqueue", "send_email", "--json", '{"subject": "x", "text": "y"}'), 1, "FILE_4001"),
        (("enqueue", "no_such_actor", "--json", "{}"), 2, "unknown actor"),
        (("enqueue", "cleanup", "--json", "[1, 2"), 2, "not valid JSON"),
        (("pause", "nope"), 2, "unknown queue"),
        (("dead", "purge", "--queue", "email"), 2, "--yes"),
        (("job", "no-such-job"), 2, "no job"),
    ],
)
def test_errors_are_one_line_with_documented_exit_codes(
    real_env: dict[str, str], args: tuple[str, ...], code: int, text: str
) -> None:
    out = cli(real_env, *args)
    assert out.returncode == code, out.stderr
    assert text in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_embedded_mode_and_unreachable_redis(real_env: dict[str, str]) -> None:
    embedded = cli({"ENABLE_BACKGROUND_JOBS": "false"}, "status")
    assert embedded.returncode == 78 and "ENABLE_BACKGROUND_JOBS=true" in embedded.stderr
    down = cli({**real_env, "REDIS_URL": "redis://127.0.0.1:1/0"}, "status")
    assert down.returncode == 69 and "Redis is unreachable" in down.stderr
    bad = cli({**real_env, "REDIS_PORT": "abc", "REDIS_URL": ""}, "status")
    assert bad.returncode == 78 and "REDIS_PORT" in bad.stderr


def test_bulk_retry_of_1000_dead_letters(
    real_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    worker_group: type[WorkerGroup],
    redis_client: redis.Redis,
) -> None:
    group = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=2, threads=5
    )
    group.wait_ready()
    stack = make_stack(real_env)
    probe = declare_all_probes(stack.broker)["email"]
    sent = [probe.send(key=f"d{i}", fail_times=9, error_code="VAL_2001").message_id for i in range(1000)]
    ns = stack.broker.namespace
    assert wait_until(lambda: redis_client.zcard(f"{ns}:email.XQ") == 1000, timeout=90)
    group.stop()

    listed = cli(real_env, "dead", "list", "--queue", "email", "--limit", "5")
    assert listed.returncode == 0 and listed.stdout.count("VAL_2001") == 5

    retried = cli(real_env, "dead", "retry", "--queue", "email")
    assert retried.returncode == 0, retried.stderr
    assert "retry: 1000 dead letters" in retried.stdout
    assert "1000/1000" in retried.stdout + retried.stderr  # the progress bar reached the end
    assert dead_letters(redis_client, ns, "email") == []
    assert redis_client.llen(f"{ns}:email") == 1000
    for job in sent[:20]:
        status = stack.api.status(job)
        assert status is not None and status["state"] == "queued" and status["history"][-2]["state"] == "dead"

    # ...and purge, confirmed
    stack.api.pause("email")
    group2 = worker_group(
        clean_environ(real_env), modules=("tests.support.worker_probe",), processes=1, threads=2
    )
    group2.wait_ready()
    stack.api.resume("email")
    assert wait_until(lambda: redis_client.zcard(f"{ns}:email.XQ") == 1000, timeout=90)
    purged = cli(real_env, "dead", "purge", "--queue", "email", "--yes")
    assert purged.returncode == 0 and "purge: 1000 dead letters" in purged.stdout
    assert redis_client.zcard(f"{ns}:email.XQ") == 0
