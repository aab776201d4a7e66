"""The benchmark runner's quick mode: it writes its results and leaves no process or key behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the runner starts its own redis-server"),
]

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/14"


def processes_tagged(tag: str) -> list[int]:
    """Live processes whose environment carries the run's tag (the runner gives it to all it starts)."""
    needle = f"BENCH_RUN_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def run_quick(tmp_path: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench", "all", "--quick", "--skip-jobs", "--tag", tag]
    return subprocess.run(
        [*command, "--out", str(tmp_path), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


@pytest.mark.timeout(120)
def test_quick_run_on_shared_redis_writes_results_and_cleans_up(tmp_path: Path) -> None:
    # On the shared Redis (its own DB 14 and namespace) the key clean-up is what is tested;
    # the figures themselves mean nothing here.
    tag = "smoke" + uuid.uuid4().hex[:8]
    result = run_quick(tmp_path, tag, "--redis-url", REDIS_URL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for name in ("throughput", "latency", "idle"):
        text = (tmp_path / f"{name}.md").read_text()
        assert "<!-- bench-data " in text, name
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- begin:summary -->" in report
    assert "drain (b)/(a)" in report
    assert "(c) Celery, threads" in report

    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=f"bench-{tag}*", count=1000)) == []
    finally:
        client.close()
    assert processes_tagged(tag) == []


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_interrupted_run_stops_its_workers_and_its_redis() -> None:
    import os
    import signal
    import time

    tag = "sigint" + uuid.uuid4().hex[:8]
    runner = subprocess.Popen(
        [sys.executable, "-m", "bench", "idle", "--window", "30", "--probes", "1", "--shapes", "ours"],
        cwd=REPO,
        env={**os.environ, "BENCH_RUN_TAG": tag},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        # the runner, dramatiq's main process and its two worker processes (redis-server
        # rewrites its environment for its process title: it is found as the runner's child)
        while len(processes_tagged(tag)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(processes_tagged(tag)) >= 4
        started = children_of(runner.pid)
        assert len(started) == 2  # redis-server and dramatiq
        runner.send_signal(signal.SIGINT)  # Ctrl-C
        assert runner.wait(timeout=30) != 0
    finally:
        if runner.poll() is None:
            runner.kill()
    assert [pid for pid in started if alive(pid)] == []
    assert processes_tagged(tag) == []
