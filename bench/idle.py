"""An idle fleet: Redis commands it costs, and how fast it starts a job sent to it.

    python -m bench idle [--window 10] [--probes 15] [--gap 1.5] [--shapes raw,raw-100ms,celery,ours]

Per shape: start the workers (2 processes x 5 threads), warm up, leave them
alone for a moment, then count the Redis commands and requests they make over
``--window`` seconds of idleness (INFO deltas; the runner sends nothing else
meanwhile), per worker process and second. Then the idle wake: ``--probes``
probes, one at a time, each sent ``--gap`` seconds after the previous one
started (1.5 s lets raw Dramatiq's poll back-off reach its 1 s ceiling, as
after any real pause), timed from just before ``send()`` to the job's first
line. The runner waits for each probe with BLPOP, so it polls nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    ProcessGroup,
    bench_redis,
    facts,
    load_average,
    namespace,
    publish,
    redis_where,
    stopped_on_exit,
)
from bench.latency import warm_up
from bench.measure import RedisDelta, per, redis_delta, redis_snapshot
from bench.throughput import Sender, Shape, sentry_sink, shape_env, shapes, start_workers

PROCESSES = 2


@dataclass
class Idle:
    shape: str
    window_s: float
    delta: RedisDelta
    wakes_ms: list[float]
    load: float  # the machine's 1-minute load average when the probes ended

    @property
    def commands_per_process_s(self) -> float:
        return self.delta.commands / PROCESSES / self.window_s

    @property
    def requests_per_process_s(self) -> float:
        return self.delta.reads / PROCESSES / self.window_s


def wake_probes(client: redis.Redis, sender: Sender, probes: int, gap: float) -> list[float]:
    """Latencies (ms) of probes sent one at a time to an idle fleet."""
    out = []
    for i in range(probes):
        time.sleep(gap)
        sender.probe(i)
        popped = client.blpop([sender.starts], timeout=10)
        if popped is None:
            raise RuntimeError(f"probe {i} did not start within 10 s")
        sent, started = (float(x) for x in popped[1].split())
        out.append((started - sent) * 1000)
    return out


def measure_shape(
    client: redis.Redis, url: str, shape: Shape, window: float, probes: int, gap: float, prefix: str
) -> Idle:
    with namespace(client, f"{prefix}-{shape.name}") as ns:
        env = shape_env(shape, url, ns)
        sender = Sender(shape, env)
        group: ProcessGroup | None = None
        try:
            group = start_workers(shape, env, processes=PROCESSES)
            group.wait_ready()
            warm_up(client, sender)
            time.sleep(min(2.0, window / 2))  # past any back-off ramp and the first keeper ticks
            before = redis_snapshot(client)
            time.sleep(window)
            delta = redis_delta(before, redis_snapshot(client))
            wakes = wake_probes(client, sender, probes, gap)
        finally:
            if group is not None:
                group.stop()
            sender.close()
    idle = Idle(shape.name, window, delta, wakes, os.getloadavg()[0])
    print(
        f"{shape.name:>10}: idle {idle.commands_per_process_s:5.1f} cmds/s/process "
        f"({idle.requests_per_process_s:4.1f} requests/s/process); wake median "
        f"{statistics.median(wakes):6.1f} ms, max {max(wakes):6.1f} ms",
        flush=True,
    )
    return idle


def report(results: list[Idle], args: argparse.Namespace, facts: str) -> str:
    catalog = shapes("http://x@127.0.0.1/1")
    rows, detail = [], []
    for idle in results:
        wakes = idle.wakes_ms
        rows.append(
            f"| {catalog[idle.shape].title} | {statistics.median(wakes):.1f} | {max(wakes):.1f} "
            f"| {min(wakes):.1f} | {len(wakes)} | {idle.commands_per_process_s:.1f} "
            f"| {idle.requests_per_process_s:.1f} | {idle.load:.1f} |"
        )
        detail.append(f"- {idle.shape}: {per(idle.delta.calls, idle.window_s * PROCESSES)}")
    return f"""# Idle fleet: Redis load and wake-up latency

{facts}
- command: `python -m bench idle --window {args.window:g} --probes {args.probes} --gap {args.gap:g}
  --shapes {args.shapes}`
- workers: {PROCESSES} processes x 5 threads per shape, started fresh, warmed up with 20 probes,
  then {min(2.0, args.window / 2):g} s idle
- idle load: INFO deltas over {args.window:g} s in which the runner sends nothing; commands include
  Lua-internal calls; requests (req) are read events (round trips); both per worker process and second
- wake: probes sent one at a time, {args.gap:g} s after the previous one started; latency from just
  before `send()` to the job's first line

| shape | wake median ms | wake max ms | wake min ms | probes | idle cmds/s/proc | idle req/s/proc | load |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Idle commands per process and second, by command:
{chr(10).join(detail)}
"""


def summary_data(results: list[Idle]) -> dict[str, Any]:
    return {
        "idle": {
            idle.shape: {
                "wake_median": statistics.median(idle.wakes_ms),
                "wake_max": max(idle.wakes_ms),
                "wakes": idle.wakes_ms,
                "cmds_per_process_s": idle.commands_per_process_s,
                "requests_per_process_s": idle.requests_per_process_s,
                "load": idle.load,
            }
            for idle in results
        }
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench idle")
    parser.add_argument("--window", type=float, default=10.0, help="idle seconds counted")
    parser.add_argument("--probes", type=int, default=15)
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between probes")
    parser.add_argument("--shapes", default="raw,raw-100ms,celery,ours")
    parser.add_argument("--redis-url", help="benchmark against this Redis instead of a private one")
    parser.add_argument("--prefix", default="bench", help="key namespace prefix")
    return parser


def run(args: argparse.Namespace, url: str, where: str) -> Path:
    catalog = shapes(sentry_sink())
    client = redis.Redis.from_url(url)
    try:
        load_before = load_average()
        results = [
            measure_shape(client, url, catalog[name], args.window, args.probes, args.gap, args.prefix)
            for name in args.shapes.split(",")
        ]
        text = report(results, args, facts(client, where, load_before))
    finally:
        client.close()
    path = publish("idle", text, summary_data(results))
    return path


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    with stopped_on_exit(), bench_redis(args.redis_url) as url:
        run(args, url, redis_where(args.redis_url))
    return 0
