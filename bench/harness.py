"""Shared benchmark plumbing: worker groups, Redis namespaces, machine facts, result files."""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.machine()}, Python {platform.python_version()}"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@contextmanager
def namespace(client: redis.Redis, prefix: str = "bench") -> Iterator[str]:
    """A fresh key namespace, deleted afterwards (never anything else)."""
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield ns
    finally:
        keys = list(client.scan_iter(match=f"{ns}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


class Workers:
    """`dramatiq MODULE --processes P --threads T` with bounded start and stop."""

    def __init__(self, module: str, env: Mapping[str, str], processes: int = 2, threads: int = 5) -> None:
        self.processes = processes
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                module,
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum("ready for action" in line for line in self.lines) >= self.processes:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("workers did not start:\n" + "".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def summary(values: list[float]) -> str:
    """Median and spread of repeated measurements."""
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{statistics.median(values):.0f} (min {min(values):.0f}, max {max(values):.0f})"


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    return path
