"""Redis servers of the reliability tier: a redis-server with AOF, and a Sentinel trio.

Every server runs on 127.0.0.1 on a port picked here, with its files in a
directory of the test's own; nothing here ever talks to 127.0.0.1:6379.
Starts and stops are bounded: a server that does not answer in time is
killed and the test fails with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
SHARED_REDIS_PORT = 6379


def free_port() -> int:
    """A port nobody listens on now (another process may still take it: callers retry)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != SHARED_REDIS_PORT:
            return port


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _bounded_poll(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait a little, returning at once if the process exits meanwhile (never a bare sleep)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


class RedisServer:
    """One ``redis-server`` process that a test can kill, freeze and bring back on the same port.

    AOF is on by default with ``appendfsync everysec`` and RDB snapshots off,
    so what survives a restart is what the AOF kept; with ``config``, the
    persistence settings are that file's.
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = True,
        replica_of: int | None = None,
        extra: Sequence[str] = (),
        config: Path | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.appendonly = appendonly
        self.replica_of = replica_of
        self.extra = list(extra)
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, db: int = 0) -> str:
        assert self.port is not None, "not started"
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, **options: float) -> redis.Redis:
        """A new client with short timeouts (the caller closes it)."""
        assert self.port is not None, "not started"
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=options.get("socket_timeout", 5.0),
            socket_connect_timeout=options.get("socket_connect_timeout", 2.0),
        )

    def _command(self, port: int) -> list[str]:
        command = [
            shutil.which("redis-server") or "redis-server",
            *([str(self.config)] if self.config is not None else []),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.config is None:  # persistence as the tests want it, else as the file says
            command += [
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
            ]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return command + self.extra

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start (again, on the same port and files once a port was chosen) and wait for PING."""
        if self.running:
            raise RuntimeError("already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        tries = 1 if self.port is not None else 3
        for attempt in range(1, tries + 1):
            port = self.port if self.port is not None else free_port()
            self.proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ping(port, timeout_s):
                self.port = port
                return
            self.stop(signal.SIGKILL)
            if attempt == tries:
                break
        raise AssertionError(f"redis-server did not answer on port {port}:\n{_tail(self.log)}")

    def _wait_ping(self, port: int, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    # LOADING while the AOF is read back: not ready yet.
                    if probe.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                _bounded_poll(self.proc, 0.05)
            return False
        finally:
            probe.close()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop with ``sig`` (SIGKILL: a crash); escalates to SIGKILL after ``timeout_s``."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        return proc.returncode

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def info(self, section: str) -> dict[str, object]:
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()


def sentinel_binary() -> list[str]:
    """Debian's ``redis-sentinel`` when installed, else ``redis-server --sentinel`` (the same program)."""
    found = shutil.which("redis-sentinel")
    if found:
        return [found]
    return [shutil.which("redis-server") or "redis-server", "--sentinel"]


class Sentinel:
    """One Sentinel process with its own (rewritable) configuration file."""

    def __init__(self, directory: Path, master_name: str, master_port: int, quorum: int) -> None:
        self.directory = directory
        self.master_name = master_name
        self.master_port = master_port
        self.quorum = quorum
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "sentinel.log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        name = self.master_name
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"logfile {self.log}",
                    f"sentinel monitor {name} 127.0.0.1 {self.master_port} {self.quorum}",
                    # Fast, for a test: production keeps its defaults or a few seconds.
                    f"sentinel down-after-milliseconds {name} 1000",
                    f"sentinel failover-timeout {name} 6000",
                    f"sentinel parallel-syncs {name} 1",
                    "",
                ]
            )
        )
        command = [*sentinel_binary(), str(config)]
        if command[-2] == "--sentinel":  # redis-server wants the file first
            command = [command[0], str(config), "--sentinel"]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)


class SentinelCluster:
    """One master, one replica and three Sentinels (quorum 2), all on loopback."""

    def __init__(self, directory: Path, master_name: str = "taatom-test") -> None:
        self.directory = directory
        self.master_name = master_name
        self.master = RedisServer(directory / "master")
        self.replica: RedisServer | None = None
        self.sentinels: list[Sentinel] = []

    @property
    def addresses(self) -> str:
        """The ``REDIS_SENTINELS`` value for this cluster."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master] + ([self.replica] if self.replica is not None else [])

    def start(self, timeout_s: float = 30.0) -> None:
        self.master.start()
        assert self.master.port is not None
        self.replica = RedisServer(self.directory / "replica", replica_of=self.master.port)
        self.replica.start()
        self.sentinels = [
            Sentinel(self.directory / f"sentinel-{i}", self.master_name, self.master.port, quorum=2)
            for i in range(3)
        ]
        for sentinel in self.sentinels:
            sentinel.start()
        deadline = time.monotonic() + timeout_s
        while not self._settled():
            if time.monotonic() > deadline:
                raise AssertionError("Sentinel cluster did not settle:\n" + self.logs())
            for proc in [s.proc for s in self.sentinels] + [self.master.proc, self.replica.proc]:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"a cluster process exited ({proc.args!r}):\n" + self.logs())
            time.sleep(0.1)

    def _settled(self) -> bool:
        """Replica in sync, and every Sentinel knows the replica and the two other Sentinels."""
        try:
            if self.replica is None or self.replica.info("replication").get("master_link_status") != "up":
                return False
            for sentinel in self.sentinels:
                client = sentinel.client()
                try:
                    others = client.execute_command("SENTINEL", "SENTINELS", self.master_name)  # type: ignore[no-untyped-call]
                    replicas = client.execute_command("SENTINEL", "REPLICAS", self.master_name)  # type: ignore[no-untyped-call]
                finally:
                    client.close()
                if len(others) < 2 or len(replicas) < 1:
                    return False
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                answer = client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                if answer:
                    return int(answer[1])
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
        return None

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def logs(self) -> str:
        parts = [
            f"--- {p}\n{_tail(p, 1500)}"
            for p in [s.log for s in self.sentinels] + [s.log for s in self.servers]
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop(signal.SIGKILL)
