"""Measurements shared by benchmarks: Redis command counts, CPU time of process groups and of Redis."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import redis

_TICKS = os.sysconf("SC_CLK_TCK")


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (read from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                kids.append(int(entry.name))
    return kids


def group_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a process and its live descendants."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += _proc_cpu(current)
        stack.extend(children(current))
    return total


@dataclass(frozen=True)
class RedisSnapshot:
    """What a Redis server has done so far, taken with one INFO call (which itself counts once)."""

    calls: dict[str, int]  # per command, Lua-internal calls included
    reads: int  # read events: about one per request the server received (a pipeline is one)
    cpu_s: float


def redis_snapshot(client: redis.Redis) -> RedisSnapshot:
    info = client.info("all")
    calls = {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in info.items()
        if name.startswith("cmdstat_") and isinstance(v, dict)
    }
    return RedisSnapshot(
        calls=calls,
        reads=int(info.get("total_reads_processed", 0)),
        cpu_s=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
    )


@dataclass
class RedisDelta:
    """The server's work between two snapshots, minus the runner's own commands."""

    calls: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    cpu_s: float = 0.0

    @property
    def commands(self) -> int:
        return sum(self.calls.values())


def redis_delta(
    before: RedisSnapshot, after: RedisSnapshot, own: dict[str, int] | None = None, own_reads: int = 0
) -> RedisDelta:
    """``after - before``, less the INFO calls of the snapshots and the runner's own commands ``own``."""
    own = {"info": 1, **(own or {})}
    calls = {}
    for name, count in after.calls.items():
        delta = count - before.calls.get(name, 0) - own.get(name, 0)
        if delta > 0:
            calls[name] = delta
    return RedisDelta(
        calls=calls,
        reads=max(0, after.reads - before.reads - 1 - own_reads),
        cpu_s=after.cpu_s - before.cpu_s,
    )


def per(counts: dict[str, int], n: float) -> str:
    """``name x.xx`` per unit, largest first; counts that round to 0.00 are left out."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v / n:.2f}" for k, v in ordered if v / n >= 0.005)


def descendants(pid: int) -> list[int]:
    """A process and its live descendants (list once, then read their CPU cheaply with cpu_seconds)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children(current))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes; 0 for any that is gone."""
    return sum(_proc_cpu(pid) for pid in pids)
