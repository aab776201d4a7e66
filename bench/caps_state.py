"""Cost of fleet-wide caps and job-state tracking: drain rate with and without, alternating.

    python -m bench caps_state [--jobs 3000] [--rounds 3]

Each round enqueues N no-op jobs on `email` (cap 5 in `full`, so the email cap
is raised to the worker threads here to measure overhead, not the cap itself),
starts `dramatiq bench.stack_worker --processes 2 --threads 5`, and times the
drain from the first to the last job done.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import redis

from bench.harness import REDIS_URL, Workers, machine, namespace, publish, summary, today


def run_once(client: redis.Redis, variant: str, jobs: int) -> tuple[float, float]:
    with namespace(client, f"bench-{variant}") as ns:
        env = {
            "ENABLE_BACKGROUND_JOBS": "true",
            "REDIS_URL": REDIS_URL,
            "REDIS_NAMESPACE": ns,
            "EMAIL_CONCURRENCY": "10",
            "LOG_LEVEL": "WARNING",
            "BENCH_VARIANT": variant,
        }
        os.environ.update(env)
        for name in [m for m in sys.modules if m.startswith(("bench.stack_worker", "jobs"))]:
            del sys.modules[name]
        sender = importlib.import_module("bench.stack_worker")
        started = time.perf_counter()
        for i in range(jobs):
            sender.noop_actor.send(n=i)
        enqueue_rate = jobs / (time.perf_counter() - started)
        workers = Workers("bench.stack_worker", env)
        try:
            counter = sender.COUNTER
            while int(client.get(counter) or 0) == 0:
                time.sleep(0.005)
            first = time.perf_counter()
            while int(client.get(counter) or 0) < jobs:
                time.sleep(0.005)
            drain_rate = jobs / (time.perf_counter() - first)
        finally:
            workers.stop()
            sender.broker.close()
        return enqueue_rate, drain_rate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench caps_state")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(REDIS_URL)
    results: dict[str, dict[str, list[float]]] = {v: {"enqueue": [], "drain": []} for v in ("full", "bare")}
    for round_no in range(args.rounds):
        for variant in ("full", "bare") if round_no % 2 == 0 else ("bare", "full"):
            enqueue, drain = run_once(client, variant, args.jobs)
            results[variant]["enqueue"].append(enqueue)
            results[variant]["drain"].append(drain)
            print(
                f"round {round_no + 1} {variant:>4}: enqueue {enqueue:7.0f}/s  drain {drain:7.0f}/s",
                flush=True,
            )
    full, bare = results["full"], results["bare"]
    drain_ratio = statistics.median(full["drain"]) / statistics.median(bare["drain"])
    enqueue_ratio = statistics.median(full["enqueue"]) / statistics.median(bare["enqueue"])
    text = f"""# Cost of caps and job state

- date: {today()}; machine: {machine()}; Redis: {client.info()["redis_version"]} on loopback
- command: `python -m bench caps_state --jobs {args.jobs} --rounds {args.rounds}`
- workers: `dramatiq bench.stack_worker --processes 2 --threads 5`; no-op jobs on `email`; A/B alternating
- `full`: fleet broker (caps, leases, keeper), job state, unique keys and every policy middleware
- `bare`: the same policy middleware without job state and unique keys, on Dramatiq's plain consumer (no caps)

| variant | enqueue jobs/s (median, spread) | drain jobs/s (median, spread) |
|---|---|---|
| full | {summary(full["enqueue"])} | {summary(full["drain"])} |
| bare | {summary(bare["enqueue"])} | {summary(bare["drain"])} |

Ratios full/bare: drain **{drain_ratio:.2f}**, enqueue **{enqueue_ratio:.2f}**.
"""
    publish("caps_state", text)
    return 0
