"""Soak: 200,000 mixed jobs through one worker group; memory must not grow, throughput must hold.

    python -m bench soak [--jobs 200000] [--backlog 10000] [--window 10]

Workers: `dramatiq jobs tests.reliability.ledger_worker --processes 2 --threads 5`
with the production policy (caps 5/3/2/1, job state, unique keys, JSON logs at
WARNING). Jobs: the ledger actors of the reliability tier on all four queues,
in proportion to their caps, a mix of no-op, short-sleep and short-CPU jobs,
1 % delayed and 1 % sent twice with the same ``unique_key``. A producer keeps at
most ``--backlog`` messages waiting. Every ``--window`` seconds: jobs done,
jobs/s in the window, RSS of each worker process. The verdict compares each
worker process's RSS after 10 % of the jobs (20,000 by default) with after all
of them: within 10 %. Results: bench/results/soak.md.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import REDIS_URL, REPO, machine, namespace, publish, today
from bench.measure import children

# queue -> share of the jobs (proportional to the fleet-wide caps 5/3/2/1)
MIX = {"email": 5, "image-processing": 3, "analytics": 2, "cleanup": 1}
MEMORY_TOLERANCE = 0.10


@dataclass
class Sample:
    elapsed_s: float
    done: int
    rate: float
    rss_mib: list[float]


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    rss_at: dict[str, list[float]] = field(default_factory=dict)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def produce(ns: str, jobs: int, backlog: int, client: redis.Redis, stop: threading.Event) -> None:
    """Send ``jobs`` mixed jobs, keeping at most ``backlog`` waiting in the queues."""
    import jobs as app  # reads the environment main() set
    from tests.reliability.ledger import Ledger, declare_ledger_actors

    actors = declare_ledger_actors(app.broker, Ledger(client, ns))
    rng = random.Random(200_000)
    queues = [q for q, share in MIX.items() for _ in range(share)]
    for i in range(jobs):
        while not stop.is_set() and i % 500 == 0 and sum(client.llen(f"{ns}:{q}") for q in MIX) > backlog:
            stop.wait(0.05)
        if stop.is_set():
            return
        actor = actors[rng.choice(queues)]
        kind = rng.random()
        work = {"sleep_ms": 2} if kind < 0.3 else {"cpu_ms": 1} if kind < 0.5 else {}
        kwargs = {"key": f"j{i}", **work}
        if kind > 0.99:
            actor.send_with_options(kwargs=kwargs, delay=rng.randrange(100, 2000))
        elif kind > 0.98:
            for _ in range(2):  # the second is skipped: same unique key
                actor.send_with_options(kwargs=kwargs, unique_key=f"u{i}")
        else:
            actor.send(**kwargs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(REDIS_URL)
    with namespace(client, "soak") as ns:
        env = {
            "ENABLE_BACKGROUND_JOBS": "true",
            "REDIS_URL": REDIS_URL,
            "REDIS_NAMESPACE": ns,
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            # Job state expires during the run instead of filling the bench Redis.
            "JOB_STATE_TTL_S": "120",
            "UNIQUE_TTL_S": "600",
        }
        os.environ.update(env)
        run = soak(client, ns, env, args.jobs, args.backlog, args.window)
    verdict, text = render(run, args)
    publish("soak", text)
    return 0 if verdict else 1


def soak(client: redis.Redis, ns: str, env: dict[str, str], jobs: int, backlog: int, window: float) -> Run:
    log = (REPO / "bench" / "results" / "soak-workers.log.tmp").open("w")
    workers = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "jobs",
            "tests.reliability.ledger_worker",
            "--processes",
            "2",
            "--threads",
            "5",
        ],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    producer = threading.Thread(target=produce, args=(ns, jobs, backlog, client, stop), daemon=True)
    run = Run()
    checkpoint = max(1, jobs // 10)
    ends_key = f"{ns}:ledger:ends"
    try:
        started = time.monotonic()
        producer.start()
        last_done, last_t = 0, started
        deadline = started + max(600.0, jobs / 50)
        while time.monotonic() < deadline:
            stop.wait(0.5)
            done = int(client.hlen(ends_key))
            now = time.monotonic()
            pids = sorted(children(workers.pid))
            if "first" not in run.rss_at and done >= checkpoint:
                run.rss_at["first"] = [rss_mib(p) for p in pids]
                run.rss_at["first_done"] = [float(done)]
            if now - last_t >= window or done >= jobs:
                run.samples.append(
                    Sample(
                        now - started, done, (done - last_done) / (now - last_t), [rss_mib(p) for p in pids]
                    )
                )
                last_done, last_t = done, now
            if done >= jobs:
                run.rss_at["last"] = [rss_mib(p) for p in pids]
                break
            if workers.poll() is not None:
                raise RuntimeError(f"workers exited with {workers.returncode}; see {log.name}")
    finally:
        stop.set()
        producer.join(timeout=10)
        workers.terminate()
        try:
            workers.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(workers.pid, 9)
            workers.wait()
        log.close()
    return run


def render(run: Run, args: argparse.Namespace) -> tuple[bool, str]:
    first, last = run.rss_at.get("first", []), run.rss_at.get("last", [])
    growth = [(b - a) / a for a, b in zip(first, last, strict=False) if a]
    verdict = bool(growth) and len(first) == len(last) and all(g <= MEMORY_TOLERANCE for g in growth)
    total_s = run.samples[-1].elapsed_s if run.samples else 0.0
    done = run.samples[-1].done if run.samples else 0
    lines = [
        "# Soak: 200,000 mixed jobs" if args.jobs == 200_000 else f"# Soak: {args.jobs:,} mixed jobs",
        "",
        f"- date: {today()}; machine: {machine()}; Redis on loopback ({REDIS_URL.rsplit('/', 1)[0]})",
        f"- command: `python -m bench soak --jobs {args.jobs} --backlog {args.backlog} "
        f"--window {args.window:g}`",
        "- workers: `dramatiq jobs tests.reliability.ledger_worker --processes 2 --threads 5`, "
        "production policy (caps 5/3/2/1, job state, unique keys), JSON logs at WARNING",
        "- jobs: ledger actors on the four queues in proportion to their caps; 50 % no-op, 30 % 2 ms sleep, "
        "20 % 1 ms CPU; 1 % delayed, 1 % sent twice with one unique key",
        "",
        f"Done: {done:,} jobs in {total_s:.0f} s ({done / total_s if total_s else 0:.0f} jobs/s on average).",
        "",
        "| elapsed s | jobs done | jobs/s (window) | worker RSS MiB |",
        "|---|---|---|---|",
        *(
            f"| {s.elapsed_s:.0f} | {s.done:,} | {s.rate:.0f} | {' / '.join(f'{m:.0f}' for m in s.rss_mib)} |"
            for s in run.samples
        ),
        "",
        f"Worker RSS after {int(run.rss_at.get('first_done', [0])[0]):,} jobs: "
        f"{' / '.join(f'{m:.1f}' for m in first)} MiB; "
        f"after {done:,}: {' / '.join(f'{m:.1f}' for m in last)} MiB; "
        f"growth {' / '.join(f'{g:+.1%}' for g in growth)} (limit +{MEMORY_TOLERANCE:.0%}): "
        f"**{'within' if verdict else 'NOT within'}**.",
        "",
    ]
    return verdict, "\n".join(lines)
