"""Real `dramatiq jobs` worker groups as subprocesses, with bounded start and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

__all__ = ["WorkerGroup", "clean_environ", "worker_group"]

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "Worker process is ready for action."


def clean_environ(values: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment minus our settings variables, plus ``values``."""
    from jobs.settings import Settings

    ours = Settings.env_names() | {"ENV_FILE"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    # An env file in the working tree must not leak into tests.
    env["ENV_FILE"] = os.devnull
    env.update(values)
    return env


class WorkerGroup:
    """One `dramatiq jobs ...` process group; its output is collected line by line."""

    def __init__(
        self, env: Mapping[str, str], *, modules: tuple[str, ...] = (), processes: int = 2, threads: int = 5
    ) -> None:
        cmd = [
            sys.executable,
            "-m",
            "dramatiq",
            "jobs",
            *modules,
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ]
        self.processes = processes
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, text: str, *, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.count(text) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} x{count} not seen within {timeout}s; output:\n{self.output[-4000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(READY_LINE, count=self.processes, timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            # Only the main process: it forwards SIGTERM to its children, and a
            # child that gets a second SIGTERM exits at once as "killed".
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.proc.returncode


@pytest.fixture
def worker_group() -> Iterator[type[WorkerGroup]]:
    """Start worker groups with ``worker_group(env, ...)``; all are stopped at teardown."""
    started: list[WorkerGroup] = []

    class _Tracked(WorkerGroup):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield _Tracked
    for group in started:
        group.stop()
