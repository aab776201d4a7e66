"""Prometheus exposition of fleet-wide figures, read from Redis at scrape time.

Counts come from the shared counters the workers write (middleware.metrics),
so one scrape of the dashboard's ``/metrics`` is the whole fleet, counted once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from middleware import metrics

from .inspect import Inspector


class FleetCollector(Collector):
    def __init__(self, inspector: Inspector) -> None:
        self.inspector = inspector

    def collect(self) -> Iterator[Any]:
        ns, client = self.inspector.ns, self.inspector.client
        gauges = {
            name: GaugeMetricFamily(f"taatom_jobs_queue_{name}", help_text, labels=["queue"])
            for name, help_text in (
                ("waiting", "Messages waiting in the queue."),
                ("delayed", "Messages delayed (scheduled or waiting for a retry)."),
                ("running", "Messages holding a concurrency slot right now."),
                ("dead", "Messages in the dead-letter queue."),
                ("paused", "1 when the queue is paused."),
            )
        }
        for row in self.inspector.overview():
            gauges["waiting"].add_metric([row.name], row.waiting)
            gauges["delayed"].add_metric([row.name], row.delayed)
            gauges["running"].add_metric([row.name], row.running)
            gauges["dead"].add_metric([row.name], row.dead)
            gauges["paused"].add_metric([row.name], int(row.paused))
        yield from gauges.values()

        jobs = CounterMetricFamily(
            "taatom_jobs_jobs",
            "Job outcomes across the fleet.",
            labels=["actor", "queue", "outcome", "error_code"],
        )
        for actor, queue, outcome, code, count in metrics.parse_jobs(client.hgetall(metrics.jobs_key(ns))):  # type: ignore[arg-type]
            jobs.add_metric([actor, queue, outcome, code], count)
        yield jobs

        raw: dict[bytes, bytes] = client.hgetall(metrics.duration_key(ns))  # type: ignore[assignment]
        per_actor: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            actor, _, part = field.decode().rpartition("|")
            per_actor.setdefault(actor, {})[part] = float(value)
        histogram = HistogramMetricFamily(
            "taatom_jobs_duration_seconds", "Job run time (successes and final failures).", labels=["actor"]
        )
        for actor, parts in sorted(per_actor.items()):
            # Workers count each run in one bucket; Prometheus buckets are cumulative.
            buckets, running = [], 0.0
            for bound in [*(str(b) for b in metrics.DURATION_BUCKETS), "+Inf"]:
                running += parts.get(bound, 0.0)
                buckets.append((bound, running))
            histogram.add_metric([actor], buckets, sum_value=parts.get("sum", 0.0))
        yield histogram

        workers = GaugeMetricFamily("taatom_jobs_workers_alive", "Worker processes with a fresh heartbeat.")
        workers.add_metric([], sum(1 for w in self.inspector.workers() if w.alive))
        yield workers


def exposition(inspector: Inspector) -> bytes:
    """The text exposition format of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(inspector))
    return generate_latest(registry)
