"""Measurements shared by benchmarks: Redis command counts, CPU time of process groups and of Redis."""

from __future__ import annotations

import os
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


def _children(pid: int) -> list[int]:
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
        stack.extend(_children(current))
    return total
