"""Enqueue-to-start latency at a steady rate: raw Dramatiq (default and 100 ms timeout), Celery, ours.

    python -m bench latency [--seconds 10] [--rates 100,500] [--shapes raw,raw-100ms,celery,ours]

Per shape: start the workers (2 processes x 5 threads), warm up with a few
probes, then send probes from one paced producer at each rate for the given
seconds. A probe carries its send time (``sent_at``, taken just before
``send()``); the job records its own start time first thing (one RPUSH of
"sent_at started_at"), so a latency is enqueue + wait in Redis + fetch +
middleware before the job body. Percentiles are nearest-rank over every
probe. The 500 jobs/s rate runs for raw Dramatiq and ours only (issue 12);
100 jobs/s for every shape (issue 14).
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
    percentile,
    publish,
    redis_where,
    stopped_on_exit,
)
from bench.throughput import Sender, Shape, sentry_sink, shape_env, shapes, start_workers

#: Shapes that also run at the high rate.
HIGH_RATE_SHAPES = ("raw", "ours")


def collect(client: redis.Redis, key: str, count: int, timeout: float = 30.0) -> list[float]:
    """Wait until ``count`` probes have recorded their start; their latencies in ms, in order of start."""
    deadline = time.monotonic() + timeout
    while client.llen(key) < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    entries = client.lrange(key, 0, -1)
    client.delete(key)
    if len(entries) < count:
        raise RuntimeError(f"only {len(entries)} of {count} probes started within {timeout:.0f}s")
    out = []
    for entry in entries:
        sent, started = (float(x) for x in entry.split())
        out.append((started - sent) * 1000)
    return out


def warm_up(client: redis.Redis, sender: Sender, count: int = 20) -> None:
    """A few probes first: connections, scripts and imports are ready before anything is timed."""
    for i in range(count):
        sender.probe(-1 - i)
    collect(client, sender.starts, count)


def paced(client: redis.Redis, sender: Sender, rate: float, seconds: float) -> tuple[list[float], float]:
    """Probes at ``rate`` per second for ``seconds`` on an absolute schedule; latencies (ms) and the rate
    achieved. A producer that falls behind sends at once, never skips."""
    count = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.01
    for i in range(count):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        sender.probe(i)
    achieved = count / (time.perf_counter() - start)
    return collect(client, sender.starts, count), achieved


@dataclass
class Run:
    shape: str
    rate: float
    achieved: float
    latencies_ms: list[float]
    load: float  # the machine's 1-minute load average when the run ended

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


def measure_shape(
    client: redis.Redis, url: str, shape: Shape, rates: list[float], seconds: float, prefix: str
) -> list[Run]:
    with namespace(client, f"{prefix}-{shape.name}") as ns:
        env = shape_env(shape, url, ns)
        sender = Sender(shape, env)
        group: ProcessGroup | None = None
        runs = []
        try:
            group = start_workers(shape, env)
            group.wait_ready()
            warm_up(client, sender)
            for rate in rates:
                time.sleep(0.5)
                latencies, achieved = paced(client, sender, rate, seconds)
                runs.append(Run(shape.name, rate, achieved, latencies, os.getloadavg()[0]))
                run = runs[-1]
                print(
                    f"{shape.name:>10} @ {rate:4.0f}/s (sent {achieved:5.0f}/s): p50 {run.pct(50):6.1f} "
                    f"p90 {run.pct(90):6.1f} p95 {run.pct(95):6.1f} p99 {run.pct(99):6.1f} "
                    f"max {max(latencies):6.1f} ms  (n={len(latencies)})",
                    flush=True,
                )
        finally:
            if group is not None:
                group.stop()
            sender.close()
        return runs


def measure(
    client: redis.Redis,
    url: str,
    names: list[str],
    rates: list[float],
    seconds: float,
    rounds: int,
    prefix: str,
) -> list[Run]:
    catalog = shapes(sentry_sink())
    runs: list[Run] = []
    high = max(rates)
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else list(reversed(names)):
            wanted = [r for r in rates if r != high or name in HIGH_RATE_SHAPES or len(rates) == 1]
            runs.extend(measure_shape(client, url, catalog[name], wanted, seconds, prefix))
    return runs


def _cell(runs: list[Run], p: float) -> str:
    values = [r.pct(p) for r in runs]
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.1f}"
    return f"{med:.1f} ({min(values):.1f}-{max(values):.1f})"


def report(runs: list[Run], args: argparse.Namespace, facts: str) -> str:
    catalog = shapes("http://x@127.0.0.1/1")
    rows = []
    keys = sorted({(r.rate, r.shape) for r in runs}, key=lambda k: (k[0], args.shapes.split(",").index(k[1])))
    for rate, name in keys:
        group = [r for r in runs if r.rate == rate and r.shape == name]
        achieved = statistics.median(r.achieved for r in group)
        worst = max(max(r.latencies_ms) for r in group)
        cells = " | ".join(_cell(group, p) for p in (50, 90, 95, 99))
        probes = sum(len(r.latencies_ms) for r in group)
        load = ", ".join(f"{r.load:.1f}" for r in group)
        asked = f"{rate:.0f} ({achieved:.0f})"
        rows.append(f"| {catalog[name].title} | {asked} | {cells} | {worst:.1f} | {probes} | {load} |")
    return f"""# Enqueue-to-start latency at a steady rate

{facts}
- command: `python -m bench latency --seconds {args.seconds:g} --rates {args.rates} --rounds {args.rounds}
  --shapes {args.shapes}`
- workers: 2 processes x 5 threads per shape, started fresh and warmed up with 20 probes; one
  paced producer thread (absolute schedule) sends probes carrying `sent_at`; each job records
  its start time first thing; latency = start - sent_at (same clock), nearest-rank percentiles
- the high rate runs for raw Dramatiq and ours only; `ours` is everything on (as in throughput)
- load: the machine's 1-minute load average as each run ended (2 cores: above ~1.5 other work competes)

| shape | jobs/s asked (sent) | p50 ms | p90 ms | p95 ms | p99 ms | max ms | probes | load |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def summary_data(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for run in runs:
        entry = out.setdefault(run.shape, {}).setdefault(f"{run.rate:g}", [])
        entry.append(
            {f"p{p}": run.pct(p) for p in (50, 90, 95, 99)} | {"max": max(run.latencies_ms), "load": run.load}
        )
    return {"latency": out}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench latency")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="100,500", help="jobs/s; the highest only for raw and ours")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--shapes", default="raw,raw-100ms,celery,ours")
    parser.add_argument("--redis-url", help="benchmark against this Redis instead of a private one")
    parser.add_argument("--prefix", default="bench", help="key namespace prefix")
    return parser


def run(args: argparse.Namespace, url: str, where: str) -> Path:
    rates = [float(r) for r in args.rates.split(",")]
    client = redis.Redis.from_url(url)
    try:
        load_before = load_average()
        runs = measure(client, url, args.shapes.split(","), rates, args.seconds, args.rounds, args.prefix)
        text = report(runs, args, facts(client, where, load_before))
    finally:
        client.close()
    path = publish("latency", text, summary_data(runs))
    return path


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    with stopped_on_exit(), bench_redis(args.redis_url) as url:
        run(args, url, redis_where(args.redis_url))
    return 0
