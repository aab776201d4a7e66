"""Shared benchmark plumbing: worker groups, Redis namespaces, machine facts, result files."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def publish(name: str, text: str, data: Any = None) -> Path:
    """Write a benchmark's result (with its numbers attached, if given), print it and where it went."""
    path = write_result(name, text if data is None else with_data(text, data))
    print(text)
    print(f"written to {path}")
    return path


# --- Comparison runner plumbing (bench.all, throughput, latency, idle) -------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM this child if the runner dies, even by SIGKILL (no orphans left)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ProcessGroup:
    """One or more commands, each in its own session, stopped together (also on Ctrl-C: see stop_all).

    Output goes to a temporary file, not to a pipe this process reads: a
    worker logging a line per job would otherwise make the benchmark spend
    CPU on every line. ``ready_marker`` is a line fragment each ready process
    prints once; the group is ready when ``ready_count`` lines carry it.
    Start groups from the main thread: the children die with the thread that
    forked them.
    """

    live: set[ProcessGroup] = set()

    def __init__(
        self,
        commands: list[list[str]],
        env: Mapping[str, str],
        *,
        ready_marker: str = "ready for action",
        ready_count: int = 1,
    ) -> None:
        self.ready_marker = ready_marker
        self.ready_count = ready_count
        self.procs: list[subprocess.Popen[bytes]] = []
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.tail = ""  # the last lines printed, kept when the group stops
        ProcessGroup.live.add(self)
        full_env = {**os.environ, **env}
        for command in commands:
            proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - started from the main thread only
            )
            self.procs.append(proc)

    @classmethod
    def dramatiq(
        cls, module: str, env: Mapping[str, str], processes: int = 2, threads: int = 5
    ) -> ProcessGroup:
        command = [sys.executable, "-m", "dramatiq", module, "--processes", str(processes)]
        return cls([[*command, "--threads", str(threads)]], env, ready_count=processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def lines(self) -> list[str]:
        """Everything the group has printed so far."""
        if self._log.closed:
            return []
        # pread: the children write through the same file offset, which must not move
        fd = self._log.fileno()
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        return data.decode(errors="replace").splitlines(keepends=True)

    def wait_ready(self, timeout: float = 60, also: Callable[[], bool] | None = None) -> None:
        """Wait for the ready lines, or for ``also()`` to say the group is working (a job done:
        a worker that logs only warnings never prints its ready line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(self.ready_marker in line for line in list(self.lines)) >= self.ready_count:
                return
            if also is not None and also():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.05)
        raise RuntimeError("workers did not start:\n" + "".join(self.lines[-40:]))

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM each leader (graceful), then SIGKILL whatever is left of each session."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # children of a leader that died first are still in its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        ProcessGroup.live.discard(self)
        self.tail = "".join(self.lines[-40:])
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for group in list(cls.live):
            group.stop(timeout=10)


@contextmanager
def stopped_on_exit() -> Iterator[None]:
    """Stop every ProcessGroup when the block ends, however it ends (SIGTERM is turned into SystemExit)."""

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        ProcessGroup.stop_all()
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@contextmanager
def bench_redis(url: str | None = None) -> Iterator[str]:
    """The Redis to benchmark against: ``url`` if given, else a private ``redis-server`` on a free port.

    A private server is the default because INFO commandstats and Redis CPU
    are server-wide: on a Redis the test suites share, other people's commands
    would be counted as ours. It is the same binary as the shared one, with
    default settings except persistence (off), and it is stopped afterwards.
    """
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield REDIS_URL
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        group = ProcessGroup(
            [[binary, "--bind", "127.0.0.1", "--port", str(port), *_NO_PERSISTENCE, "--dir", tmp]],
            {},
            ready_marker="Ready to accept connections",
        )
        try:
            group.wait_ready(timeout=10)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            group.stop(timeout=10)


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def versions(client: redis.Redis) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"Python": platform.python_version()}
    for name in ("dramatiq", "redis", "celery", "sentry-sdk"):
        try:
            out["redis-py" if name == "redis" else name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["Redis server"] = str(client.info("server")["redis_version"])
    return out


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank: a value that was actually observed."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def git_state() -> str:
    """The commit measured, and whether the system's code differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "middleware", "jobs"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} (with uncommitted changes in middleware/ or jobs/)" if dirty else commit


def redis_where(url: str | None) -> str:
    return "a private redis-server started by the runner" if url is None else "the Redis at --redis-url"


def facts(client: redis.Redis, where: str, load_before: str) -> str:
    """The lines every comparison result starts with: date, machine, versions, code, load."""
    v = ", ".join(f"{k} {x}" for k, x in versions(client).items())
    return (
        f"- date: {today()}; machine: {machine()}\n"
        f"- versions: {v}; Redis is {where}, on loopback\n"
        f"- code: commit {git_state()}\n"
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_average()}"
    )


_DATA = "<!-- bench-data "


def with_data(text: str, data: Any) -> str:
    """A result text with its numbers attached, machine-readable, for BENCHMARKS.md to be built from."""
    import json

    return f"{text.rstrip()}\n\n{_DATA}{json.dumps(data, sort_keys=True)} -->\n"


def read_data(path: Path) -> Any:
    """The numbers attached to a result file by with_data (None if there are none)."""
    import json

    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(_DATA) and line.endswith(" -->"):
            return json.loads(line[len(_DATA) : -len(" -->")])
    return None
