"""Worker groups started the way production starts them, under a restart-always supervisor.

Each group is `deploy/docker/entrypoint.sh worker MODULES...` (which execs
`python -m dramatiq jobs ... --processes P --threads T --worker-shutdown-timeout MS`).
:class:`Supervisor` plays the part of systemd's ``Restart=always`` or a
container restart policy: when the group exits for any reason but
:meth:`Supervisor.stop`, it starts it again after ``restart_delay_s``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from tests.services.workers import READY_LINE

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
SCHEDULER_READY = "Scheduler replica"


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (the worker processes of a `dramatiq` main process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # state Z: exited, not yet reaped by its parent
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


class EntrypointGroup:
    """One `entrypoint.sh ROLE ARGS...` process group; its output is collected line by line.

    ``role`` is ``worker`` (ready once every worker process said so) or ``scheduler``.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        args: tuple[str, ...],
        processes: int = 1,
        threads: int = 1,
        *,
        role: str = "worker",
    ) -> None:
        self.processes = processes
        self.ready_text, self.ready_count = (
            (READY_LINE, processes) if role == "worker" else (SCHEDULER_READY, 1)
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        full_env = {
            **env,
            # The venv's python first, as a container image puts its venv on PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)]),
            "TAATOM_WORKER_PROCESSES": str(processes),
            "TAATOM_WORKER_THREADS": str(threads),
        }
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), role, *args],
            cwd=REPO,
            env=full_env,
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

    @property
    def ready(self) -> bool:
        return self.proc.poll() is None and self.output.count(self.ready_text) >= self.ready_count

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for_line(self.ready_text, count=self.ready_count, timeout=timeout)

    def wait_for_line(self, text: str, *, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.count(text) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} x{count} not seen within {timeout}s; output:\n{self.output[-4000:]}")

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def terminate(self) -> None:
        """One SIGTERM to the main process, which forwards it once to each worker process."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.proc.returncode

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Supervisor:
    """Keeps one worker group running: restarts it whenever it exits (``Restart=always``)."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        *,
        modules: tuple[str, ...] = ("tests.reliability.ledger_worker",),
        processes: int = 2,
        threads: int = 5,
        restart_delay_s: float = 0.5,
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.modules = modules
        self.processes = processes
        self.threads = threads
        self.restart_delay_s = restart_delay_s
        self.groups: list[EntrypointGroup] = []
        self.exit_codes: list[int] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._start_group()
        self._watcher = threading.Thread(target=self._watch, name=f"supervisor-{name}", daemon=True)
        self._watcher.start()

    def _start_group(self) -> None:
        group = EntrypointGroup(self.env, self.modules, self.processes, self.threads)
        with self._lock:
            self.groups.append(group)

    @property
    def current(self) -> EntrypointGroup:
        with self._lock:
            return self.groups[-1]

    @property
    def restarts(self) -> int:
        with self._lock:
            return len(self.groups) - 1

    def _watch(self) -> None:
        while not self._stopping.is_set():
            group = self.current
            while group.proc.poll() is None and not self._stopping.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    group.proc.wait(timeout=0.1)
            if self._stopping.is_set():
                return
            self.exit_codes.append(group.proc.returncode)
            if self._stopping.wait(self.restart_delay_s):
                return
            self._start_group()

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.current.wait_ready(timeout)

    @property
    def output(self) -> str:
        with self._lock:
            groups = list(self.groups)
        return "\n".join(g.output for g in groups)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._watcher.join(timeout=5)
        with self._lock:
            groups = list(self.groups)
        for group in groups:
            if group.proc.poll() is None:
                group.stop(timeout)
