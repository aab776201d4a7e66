"""Throughput and overhead: raw Dramatiq against our full stack, alternating A/B in one run.

    python -m bench throughput [--jobs 4000] [--rounds 3]

Per round and variant: enqueue N no-op jobs from one producer (enqueue rate),
start `dramatiq MODULE --processes 2 --threads 5`, and time the drain from the
first job done to the last (drain rate). Also: Redis commands per job (INFO
commandstats deltas over enqueue + drain) and CPU per job of the worker
processes and of Redis. `ours` runs every policy (error codes, attempts,
sanitizing log filter, caps with leases, job state, unique keys, dead letters,
encryption off) with JSON logs at INFO and Sentry initialised with a DSN
pointing at a local endpoint.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from bench.harness import REDIS_URL, Workers, machine, namespace, today, write_result
from bench.measure import calls_delta, group_cpu_seconds, redis_calls, redis_cpu_seconds


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def sentry_sink() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://public@127.0.0.1:{server.server_address[1]}/1"


@dataclass
class Variant:
    name: str
    module: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    enqueue_rate: float
    drain_rate: float
    commands_per_job: float
    worker_cpu_ms_per_job: float
    redis_cpu_ms_per_job: float
    commands: dict[str, int]


def _sender(variant: Variant, env: dict[str, str]) -> tuple[Any, Callable[[int], None], str]:
    os.environ.update(env)
    for name in [m for m in sys.modules if m.startswith(("bench.stack_worker", "bench.raw_worker", "jobs"))]:
        del sys.modules[name]
    module = importlib.import_module(variant.module)
    actor = module.noop_actor if hasattr(module, "noop_actor") else module.noop
    return module, (lambda n: actor.send(n=n)), module.COUNTER


def run_once(client: redis.Redis, variant: Variant, jobs: int) -> Sample:
    with namespace(client, f"bench-{variant.name}") as ns:
        env = {
            "ENABLE_BACKGROUND_JOBS": "true",
            "REDIS_URL": REDIS_URL,
            "REDIS_NAMESPACE": ns,
            # a cap at the worker threads: the caps machinery runs without limiting
            "EMAIL_CONCURRENCY": "10",
            **variant.env,
        }
        module, send, counter = _sender(variant, env)
        calls_before, redis_cpu_before = redis_calls(client), redis_cpu_seconds(client)
        started = time.perf_counter()
        for i in range(jobs):
            send(i)
        enqueue_rate = jobs / (time.perf_counter() - started)
        workers = Workers(variant.module, env)
        try:
            workers.wait_ready()
            cpu_before = group_cpu_seconds(workers.proc.pid)
            while int(client.get(counter) or 0) == 0:
                time.sleep(0.002)
            first = time.perf_counter()
            while int(client.get(counter) or 0) < jobs:
                time.sleep(0.002)
            drain_rate = jobs / (time.perf_counter() - first)
            worker_cpu = group_cpu_seconds(workers.proc.pid) - cpu_before
        finally:
            workers.stop()
            module.broker.close()
        delta = calls_delta(calls_before, redis_calls(client))
        # our own polling of the counter is not the system's work
        delta["get"] = max(0, delta.get("get", 0) - int(2 * (time.perf_counter() - started) / 0.002))
        redis_cpu = redis_cpu_seconds(client) - redis_cpu_before
        return Sample(
            enqueue_rate=enqueue_rate,
            drain_rate=drain_rate,
            commands_per_job=sum(v for k, v in delta.items() if k not in ("get", "info", "scan")) / jobs,
            worker_cpu_ms_per_job=worker_cpu * 1000 / jobs,
            redis_cpu_ms_per_job=redis_cpu * 1000 / jobs,
            commands={k: v for k, v in delta.items() if k not in ("get", "info", "scan")},
        )


def median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def spread(samples: list[Sample], attr: str) -> str:
    values = [getattr(s, attr) for s in samples]
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(REDIS_URL)
    dsn = sentry_sink()
    variants = [
        Variant("raw", "bench.raw_worker"),
        Variant("ours", "bench.stack_worker", {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "SENTRY_DSN": dsn}),
    ]
    results: dict[str, list[Sample]] = {v.name: [] for v in variants}
    for round_no in range(args.rounds):
        for variant in variants if round_no % 2 == 0 else list(reversed(variants)):
            sample = run_once(client, variant, args.jobs)
            results[variant.name].append(sample)
            print(
                f"round {round_no + 1} {variant.name:>4}: enqueue {sample.enqueue_rate:6.0f}/s "
                f"drain {sample.drain_rate:6.0f}/s  cmds/job {sample.commands_per_job:5.2f}  "
                f"worker cpu {sample.worker_cpu_ms_per_job:.2f} ms/job  redis cpu {sample.redis_cpu_ms_per_job:.3f} ms/job",
                flush=True,
            )
    raw, ours = results["raw"], results["ours"]
    ratio = median(ours, "drain_rate") / median(raw, "drain_rate")
    last = ours[-1].commands
    per_job = ", ".join(f"{k} {v / args.jobs:.2f}" for k, v in sorted(last.items(), key=lambda kv: -kv[1]))
    raw_per_job = ", ".join(
        f"{k} {v / args.jobs:.2f}" for k, v in sorted(raw[-1].commands.items(), key=lambda kv: -kv[1])
    )
    text = f"""# Throughput: raw Dramatiq vs our full stack

- date: {today()}; machine: {machine()}; Redis {client.info()["redis_version"]} on loopback
- command: `python -m bench throughput --jobs {args.jobs} --rounds {args.rounds}`; A/B alternating
- workers: `dramatiq MODULE --processes 2 --threads 5`; no-op jobs (one INCR each) on `email`
- `ours`: every policy middleware, fleet broker (caps, leases, wake-ups), job state, JSON logs at INFO,
  Sentry initialised (DSN -> local endpoint)

| variant | enqueue jobs/s | drain jobs/s | Redis cmds/job | worker CPU ms/job | Redis CPU ms/job |
|---|---|---|---|---|---|
| raw Dramatiq | {spread(raw, "enqueue_rate")} | {spread(raw, "drain_rate")} | {median(raw, "commands_per_job"):.2f} | {median(raw, "worker_cpu_ms_per_job"):.2f} | {median(raw, "redis_cpu_ms_per_job"):.3f} |
| ours | {spread(ours, "enqueue_rate")} | {spread(ours, "drain_rate")} | {median(ours, "commands_per_job"):.2f} | {median(ours, "worker_cpu_ms_per_job"):.2f} | {median(ours, "redis_cpu_ms_per_job"):.3f} |

Drain ratio ours/raw: **{ratio:.2f}**.

Redis commands per job, last round (counts include the benchmark's one INCR per job):
- raw: {raw_per_job}
- ours: {per_job}
"""
    path = write_result("throughput", text)
    print(text)
    print(f"written to {path}")
    return 0
