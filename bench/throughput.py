"""Throughput and overhead: raw Dramatiq, our full stack and Celery, alternating in one run.

    python -m bench throughput [--jobs 4000] [--rounds 3] [--shapes raw,ours,ours-unique,celery]

Per round and worker shape: enqueue N no-op jobs from one producer (enqueue
rate), start the workers (2 processes x 5 threads), and time the drain from
the first job done to the last (drain rate, over the jobs done in that
window). Over the same windows: Redis commands and requests (round trips) per
job from INFO deltas, Lua-internal commands included, the runner's own
commands subtracted; CPU per job of the worker processes and of Redis.

Shapes (the worker side is `dramatiq MODULE --processes 2 --threads 5`, or two
Celery thread-pool workers of 5):
  raw          raw Dramatiq 2.2, default middleware (bench.raw_worker)
  ours         every policy on (error codes, attempts, sanitizing log filter, caps with leases,
               job state, unique keys, dead letters), JSON logs at INFO, Sentry with a DSN to a
               local endpoint (bench.stack_worker, BENCH_VARIANT=full)
  ours-unique  ours, every message sent with its own ``unique_key``
  celery       Celery 5 thread pool, late acks, results off (bench.celery_app)
  raw-100ms    raw with ``dramatiq_worker_timeout=100`` (latency and idle benchmarks)

By default the runner starts a private redis-server (see harness.bench_redis):
INFO counters are server-wide, and on the shared Redis other people's tests
would be counted as ours.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from bench.measure import RedisDelta, cpu_seconds, descendants, per, redis_delta, redis_snapshot

# --- A sink for Sentry events ----------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def sentry_sink() -> str:
    """A DSN pointing at a local HTTP endpoint that accepts and drops every event."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://public@127.0.0.1:{server.server_address[1]}/1"


# --- Worker shapes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    title: str
    module: str  # dramatiq broker module, or the Celery app module
    env: Mapping[str, str] = field(default_factory=dict)
    celery: bool = False
    unique_keys: bool = False


#: What `python -m bench throughput` and `all` compare; the other shapes are diagnostics.
DEFAULT_SHAPES = "raw,ours,ours-unique,celery,ours-quiet"


def shapes(dsn: str) -> dict[str, Shape]:
    everything_on = {
        "BENCH_VARIANT": "full",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "SENTRY_DSN": dsn,
        # the probe actor of the latency benchmarks (bench.throughput, imported by the workers)
        "BENCH_STACK_PROBE": "1",
    }
    return {
        s.name: s
        for s in (
            Shape("raw", "(a) raw Dramatiq", "bench.raw_worker"),
            Shape(
                "raw-100ms",
                "raw Dramatiq, worker_timeout=100",
                "bench.raw_worker",
                {"dramatiq_worker_timeout": "100"},
            ),
            Shape("ours", "(b) ours, everything on", "bench.stack_worker", everything_on),
            Shape(
                "ours-unique",
                "(b') ours + unique_key on every message",
                "bench.stack_worker",
                everything_on,
                unique_keys=True,
            ),
            Shape("celery", "(c) Celery, threads", "bench.celery_app", celery=True),
            # Diagnostics (not in the default runs): one part of "everything on" changed at a time.
            Shape(
                "ours-cap-high",
                "ours, email cap 1000 (never binding)",
                "bench.stack_worker",
                {**everything_on, "EMAIL_CONCURRENCY": "1000"},
            ),
            Shape(
                "ours-quiet",
                "ours, LOG_LEVEL=WARNING (no line per job)",
                "bench.stack_worker",
                {**everything_on, "LOG_LEVEL": "WARNING"},
            ),
            Shape(
                "ours-nosentry",
                "ours, no SENTRY_DSN",
                "bench.stack_worker",
                {k: v for k, v in everything_on.items() if k != "SENTRY_DSN"},
            ),
            Shape(
                "celery-info",
                "Celery, --loglevel INFO (two lines per task)",
                "bench.celery_app",
                {"BENCH_CELERY_LOGLEVEL": "INFO"},
                celery=True,
            ),
            Shape(
                "ours-nostate",
                "ours without job state (no status/result, no job log lines, no counters)",
                "bench.stack_worker",
                {**everything_on, "BENCH_VARIANT": "no-state"},
            ),
            Shape(
                "ours-bare",
                "ours bare: policy middleware, no state/unique, Dramatiq's consumer",
                "bench.stack_worker",
                {**everything_on, "BENCH_VARIANT": "bare"},
            ),
        )
    }


def shape_env(shape: Shape, url: str, ns: str) -> dict[str, str]:
    return {
        "ENABLE_BACKGROUND_JOBS": "true",
        "REDIS_URL": url,
        "REDIS_NAMESPACE": ns,
        # The email cap at the fleet's worker threads (2 x 5): caps are enforced and never hold a
        # thread idle. (A fetched message holds a slot, so this cap also bounds prefetch.)
        "EMAIL_CONCURRENCY": "10",
        **shape.env,
    }


def start_workers(shape: Shape, env: Mapping[str, str], processes: int = 2, threads: int = 5) -> ProcessGroup:
    if shape.celery:
        from bench.celery_app import READY, worker_commands

        commands = worker_commands(processes, threads, env.get("BENCH_CELERY_LOGLEVEL", "WARNING"))
        return ProcessGroup(commands, env, ready_marker=READY, ready_count=processes)
    module = shape.module
    if "BENCH_STACK_PROBE" in env:
        module = f"{module} bench.throughput"
    command = [sys.executable, "-m", "dramatiq", *module.split(), "--processes", str(processes)]
    return ProcessGroup([[*command, "--threads", str(threads)]], env, ready_count=processes)


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


_SENDER_MODULES = ("bench.stack_worker", "bench.raw_worker", "bench.celery_app", "jobs")


class Sender:
    """The producer side of a shape, in this process: ``send`` a no-op job, ``probe`` a latency probe.

    The producer is configured like the workers, except that it does not
    initialise Sentry (in the app that is the app's choice; and the SDK's
    Dramatiq integration, once initialised, would patch every later broker of
    this process, raw Dramatiq's included).
    """

    def __init__(self, shape: Shape, env: Mapping[str, str]) -> None:
        self.shape = shape
        for name in [m for m in sys.modules if m.startswith(_SENDER_MODULES)]:
            del sys.modules[name]
        with _environ({k: v for k, v in env.items() if k != "SENTRY_DSN"}):
            self.module = importlib.import_module(shape.module)
        self.counter: str = self.module.COUNTER
        ns = env["REDIS_NAMESPACE"]
        self.starts = f"{ns}:bench:latency"
        self._probe_actor: Any = None
        if shape.module == "bench.stack_worker":
            self._probe_actor = declare_stack_probe(self.module)
        self._unique_prefix = uuid.uuid4().hex[:8]

    def send(self, n: int) -> None:
        if self.shape.celery:
            self.module.noop.apply_async((n,))
        elif self.shape.module == "bench.raw_worker":
            self.module.noop.send(n=n)
        elif self.shape.unique_keys:
            self.module.noop_actor.send_with_options(kwargs={"n": n}, unique_key=f"{self._unique_prefix}-{n}")
        else:
            self.module.noop_actor.send(n=n)

    def probe(self, n: int) -> float:
        """Send a job that records when it started; returns the send time (epoch seconds)."""
        sent_at = time.time()
        if self.shape.celery:
            self.module.noop.apply_async((n, sent_at))
        elif self._probe_actor is not None:
            self._probe_actor.send(n=n, sent_at=sent_at)
        else:
            self.module.noop.send(n=n, sent_at=sent_at)
        return sent_at

    def close(self) -> None:
        if self.shape.celery:
            self.module.app.close()
            self.module.client.close()
        else:
            self.module.broker.close()


def declare_stack_probe(stack_worker: Any) -> Any:
    """The latency probe on our stack: bench.stack_worker's no-op, with a ``sent_at`` and a start stamp.

    bench.stack_worker's payload has no ``sent_at``; this actor runs through the
    same broker and middleware on the same queue, and records
    "sent_at started_at" like bench.raw_worker's probe does.
    """
    from jobs.actor import JobActor
    from jobs.payloads import Payload

    class ProbePayload(Payload):
        n: int
        sent_at: float

    starts = stack_worker.COUNTER.removesuffix(":done") + ":latency"

    def probe(payload: ProbePayload) -> dict[str, int]:
        stack_worker.broker.client.rpush(starts, f"{payload.sent_at!r} {time.time()!r}")
        return {"n": payload.n}

    return JobActor(
        probe,
        broker=stack_worker.broker,
        actor_name="probe",
        queue_name="email",
        payload=ProbePayload,
        label="probe",
    )


if os.environ.get("BENCH_STACK_PROBE") == "1" and "bench.stack_worker" in sys.modules:
    # Imported by `dramatiq bench.stack_worker bench.throughput`: the worker side of the probe.
    declare_stack_probe(sys.modules["bench.stack_worker"])


# --- Throughput ----------------------------------------------------------------------------------


@dataclass
class Sample:
    enqueue_rate: float
    drain_rate: float
    enqueue: RedisDelta  # producer side, whole enqueue
    drain: RedisDelta  # worker side, first job done to last
    enqueued: int
    drained: int  # jobs done in the drain window
    worker_cpu_s: float
    load: float  # the machine's 1-minute load average when the drain ended

    @property
    def worker_cpu_ms_per_job(self) -> float:
        return self.worker_cpu_s * 1000 / self.drained

    @property
    def redis_cpu_ms_per_job(self) -> float:
        return (self.enqueue.cpu_s / self.enqueued + self.drain.cpu_s / self.drained) * 1000

    @property
    def commands_per_job(self) -> float:
        # the job body's own command (INCR) is the benchmark's, not the system's
        return self.enqueue.commands / self.enqueued + (self.drain.commands - self.drained) / self.drained

    @property
    def requests_per_job(self) -> float:
        return self.enqueue.reads / self.enqueued + (self.drain.reads - self.drained) / self.drained


def worker_pids(group: ProcessGroup) -> list[int]:
    return [pid for leader in group.pids for pid in descendants(leader)]


def run_once(client: redis.Redis, url: str, shape: Shape, jobs: int, prefix: str) -> Sample:
    with namespace(client, f"{prefix}-{shape.name}") as ns:
        env = shape_env(shape, url, ns)
        sender = Sender(shape, env)
        group: ProcessGroup | None = None
        try:
            before = redis_snapshot(client)
            started = time.perf_counter()
            for i in range(jobs):
                sender.send(i)
            enqueue_rate = jobs / (time.perf_counter() - started)
            enqueue = redis_delta(before, redis_snapshot(client))
            group = start_workers(shape, env)
            group.wait_ready(also=lambda: int(client.get(sender.counter) or 0) > 0)
            pids = worker_pids(group)  # listed once: reading their CPU is then quick
            while int(client.get(sender.counter) or 0) == 0:
                time.sleep(0.002)
            # The window opens at a snapshot and the count read right after it.
            first_cpu = cpu_seconds(pids)
            first_snapshot = redis_snapshot(client)
            first_done, first = int(client.get(sender.counter) or 0), time.perf_counter()
            polls = 1
            while int(client.get(sender.counter) or 0) < jobs:
                polls += 1
                time.sleep(0.002)
            elapsed = time.perf_counter() - first
            drain = redis_delta(first_snapshot, redis_snapshot(client), {"get": polls}, polls)
            worker_cpu = cpu_seconds(pids) - first_cpu
        finally:
            if group is not None:
                group.stop()
            sender.close()
        drained = jobs - first_done
        return Sample(
            enqueue_rate=enqueue_rate,
            drain_rate=drained / elapsed,
            enqueue=enqueue,
            drain=drain,
            enqueued=jobs,
            drained=drained,
            worker_cpu_s=worker_cpu,
            load=os.getloadavg()[0],
        )


def spread(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def _median(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(s, attr) for s in samples))


def _ratio(results: dict[str, list[Sample]], top: str, bottom: str) -> str:
    if not results.get(top) or not results.get(bottom):
        return "n/a"
    return f"{_median(results[top], 'drain_rate') / _median(results[bottom], 'drain_rate'):.2f}"


def report(
    results: dict[str, list[Sample]], catalog: dict[str, Shape], args: argparse.Namespace, facts: str
) -> str:
    rows, rounds, commands = [], [], []
    for name, samples in results.items():
        title = catalog[name].title
        enqueue, drain = spread([s.enqueue_rate for s in samples]), spread([s.drain_rate for s in samples])
        rows.append(
            f"| {title} | {enqueue} | {drain} "
            f"| {_median(samples, 'commands_per_job'):.2f} | {_median(samples, 'requests_per_job'):.2f} "
            f"| {spread([s.worker_cpu_ms_per_job for s in samples], 3)} "
            f"| {spread([s.redis_cpu_ms_per_job for s in samples], 3)} |"
        )
        rounds.append(f"- {name}: " + ", ".join(f"{s.drain_rate:,.0f} ({s.load:.1f})" for s in samples))
        last = samples[-1]
        drain_calls = dict(last.drain.calls)
        drain_calls["incrby"] = drain_calls.get("incrby", 0) - last.drained  # the job's own INCR
        commands.append(
            f"- **{name}** producer ({last.enqueue.reads / last.enqueued:.2f} requests/job): "
            f"{per(last.enqueue.calls, last.enqueued)}\n"
            f"  workers ({(last.drain.reads - last.drained) / last.drained:.2f} requests/job): "
            f"{per({k: v for k, v in drain_calls.items() if v > 0}, last.drained)}"
        )
    return f"""# Throughput: raw Dramatiq, our stack, Celery

{facts}
- command: `python -m bench throughput --jobs {args.jobs} --rounds {args.rounds} --shapes {args.shapes}`;
  shapes alternate order every round; medians (min-max) over rounds
- workers: 2 processes x 5 threads (`dramatiq MODULE --processes 2 --threads 5`; Celery: two
  `celery worker --pool threads --concurrency 5`); no-op jobs (one Redis command each) on `email`;
  enqueue from one producer thread, then the drain is timed from the first job done to the last
- commands: INFO commandstats deltas, Lua-internal calls included; requests: INFO
  `total_reads_processed` (one per request or pipeline received: round trips); both per job,
  producer plus workers, without the job's own command and the runner's polling

| shape | enqueue jobs/s | drain jobs/s | cmds/job | requests/job | worker CPU ms/job | Redis CPU ms/job |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Drain ratios: **b/a = {_ratio(results, "ours", "raw")}**, **b/c = {_ratio(results, "ours", "celery")}**,
b'/a = {_ratio(results, "ours-unique", "raw")}, c/a = {_ratio(results, "celery", "raw")}.

Drain jobs/s of every round (the machine's 1-minute load average as the drain ended):
{chr(10).join(rounds)}

Commands per job in the last round (Lua-internal calls included):
{chr(10).join(commands)}
"""


def measure(
    client: redis.Redis, url: str, names: list[str], jobs: int, rounds: int, prefix: str
) -> dict[str, list[Sample]]:
    catalog = shapes(sentry_sink())
    results: dict[str, list[Sample]] = {name: [] for name in names}
    for round_no in range(rounds):
        order = names if round_no % 2 == 0 else list(reversed(names))
        for name in order:
            sample = run_once(client, url, catalog[name], jobs, prefix)
            results[name].append(sample)
            print(
                f"round {round_no + 1} {name:>11}: enqueue {sample.enqueue_rate:6.0f}/s "
                f"drain {sample.drain_rate:6.0f}/s  cmds/job {sample.commands_per_job:5.2f}  "
                f"req/job {sample.requests_per_job:4.2f}  "
                f"worker cpu {sample.worker_cpu_ms_per_job:.3f} ms/job  "
                f"redis cpu {sample.redis_cpu_ms_per_job:.3f} ms/job",
                flush=True,
            )
    return results


def summary_data(results: dict[str, list[Sample]], catalog: dict[str, Shape]) -> dict[str, Any]:
    shapes_data = {
        name: {
            "title": catalog[name].title,
            "drain": [s.drain_rate for s in samples],
            "enqueue": [s.enqueue_rate for s in samples],
            "cmds_per_job": _median(samples, "commands_per_job"),
            "requests_per_job": _median(samples, "requests_per_job"),
            "worker_cpu_ms": _median(samples, "worker_cpu_ms_per_job"),
            "redis_cpu_ms": _median(samples, "redis_cpu_ms_per_job"),
            "load": [s.load for s in samples],
        }
        for name, samples in results.items()
    }
    return {"shapes": shapes_data}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"any of: {', '.join(shapes('x'))}")
    parser.add_argument("--redis-url", help="benchmark against this Redis instead of a private one")
    parser.add_argument("--prefix", default="bench", help="key namespace prefix")
    return parser


def run(args: argparse.Namespace, url: str, where: str) -> Path:
    client = redis.Redis.from_url(url)
    try:
        load_before = load_average()
        results = measure(client, url, args.shapes.split(","), args.jobs, args.rounds, args.prefix)
        catalog = shapes("http://x@127.0.0.1/1")
        text = report(results, catalog, args, facts(client, where, load_before))
    finally:
        client.close()
    path = publish("throughput", text, summary_data(results, catalog))
    return path


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    with stopped_on_exit(), bench_redis(args.redis_url) as url:
        run(args, url, redis_where(args.redis_url))
    return 0
