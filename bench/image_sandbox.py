"""The image sandbox's cost: the same small thumbnail job in the worker thread and through the pool.

    python -m bench image_sandbox [--jobs 200] [--rounds 5]

Each job is ``pipeline.process`` on a noisy 1200x900 JPEG to a 150x150 ``thumb``
WebP: the cheapest real job, so the pool's fixed cost (pickling the bytes and the
outputs across a pipe, waking the child) shows most. in-thread calls the pipeline
directly; sandbox calls ``ImageSandbox.process`` (2 children, a forkserver). Both run
with 1 and with 2 submitting threads. Rounds alternate the modes; medians (min-max) of
the rounds' jobs/s; overhead per job = the difference of the single-thread medians.
Also measured: the first job of a new pool (forkserver start, imports, child start)
and the recovery after a child is SIGKILLed (the next job waits for its replacement).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from bench.harness import machine, today, write_result
from jobs.images.decode import escalate_bomb_warnings
from jobs.images.pipeline import Limits, Outputs, process
from jobs.images.sandbox import CHILD_NAME, ImageSandbox, SandboxPolicy
from jobs.images.steps import parse_chain

SOURCE_SIZE = (1200, 900)
THUMB = parse_chain([{"width": 150, "height": 150, "crop": "thumb", "fetch_format": "auto"}])
LIMITS = Limits(max_pixels=60_000_000)
POLICY = SandboxPolicy(processes=2, max_memory_mb=4096)
Job = Callable[[], Outputs]


def make_source() -> bytes:
    import io

    image = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(SOURCE_SIZE),
            Image.effect_noise(SOURCE_SIZE, 40),
            Image.radial_gradient("L").resize(SOURCE_SIZE),
        ],
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def rate(job: Job, jobs: int, threads: int) -> float:
    """Jobs per second with ``threads`` threads sharing ``jobs`` jobs."""
    counter = iter(range(jobs))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            job()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return jobs / (time.perf_counter() - started)


def children() -> set[int]:
    """This process's sandbox children (grandchildren, through the forkserver)."""
    parents: dict[int, int] = {}
    named = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(stat[stat.rindex(")") + 2 :].split()[1])
            if stat[stat.index("(") + 1 : stat.rindex(")")] == CHILD_NAME:
                named.add(pid)
    return {pid for pid in named if parents.get(parents.get(pid, 0), 0) == os.getpid()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench image_sandbox")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    escalate_bomb_warnings()
    data = make_source()
    before = children()
    sandbox = ImageSandbox(POLICY)
    try:
        started = time.perf_counter()
        sandbox.process(data, THUMB, {}, LIMITS, 60)
        cold_ms = (time.perf_counter() - started) * 1000
        modes: dict[str, Job] = {
            "in-thread": lambda: process(data, THUMB, {}, LIMITS),
            "sandbox": lambda: sandbox.process(data, THUMB, {}, LIMITS, 60),
        }
        for job in modes.values():  # warm up both
            for _ in range(10):
                job()
        rates: dict[tuple[str, int], list[float]] = {(m, t): [] for m in modes for t in (1, 2)}
        for _ in range(args.rounds):
            for threads in (1, 2):
                for name, job in modes.items():
                    rates[name, threads].append(rate(job, args.jobs, threads))
        recovery_ms = _recovery(sandbox, data, children() - before)
    finally:
        sandbox.close()
    text = _report(args, len(data), cold_ms, recovery_ms, rates)
    print(text)
    write_result("image_sandbox", text)
    return 0


def _recovery(sandbox: ImageSandbox, data: bytes, mine: set[int]) -> float:
    """SIGKILL one idle child, then time the next two jobs (one may wait for the replacement)."""
    os.kill(min(mine), signal.SIGKILL)
    started = time.perf_counter()
    for _ in range(2):
        sandbox.process(data, THUMB, {}, LIMITS, 60)
    return (time.perf_counter() - started) * 1000


def _report(
    args: argparse.Namespace,
    source_bytes: int,
    cold_ms: float,
    recovery_ms: float,
    rates: dict[tuple[str, int], list[float]],
) -> str:
    def med(name: str, threads: int) -> float:
        return statistics.median(rates[name, threads])

    load = os.getloadavg()[0]
    lines = [
        "# Image sandbox: the same thumbnail job in the worker thread and through the process pool",
        "",
        f"- date: {today()}; machine: {machine()}; load average at the end {load:.1f} "
        "(the cores are shared: see the min-max spread)",
        f"- command: `python -m bench image_sandbox --jobs {args.jobs} --rounds {args.rounds}`; "
        "rounds alternate the modes; medians (min-max) of the rounds",
        f"- job: `pipeline.process`, {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEG ({source_bytes // 1024} KB) "
        "to a 150x150 `thumb` WebP; sandbox: `ImageSandbox.process`, 2 children, forkserver",
        "",
        "| mode | threads | jobs/s, median (min-max) | wall ms per job |",
        "|---|---|---|---|",
    ]
    for threads in (1, 2):
        for name in ("in-thread", "sandbox"):
            values = rates[name, threads]
            lines.append(
                f"| {name} | {threads} | {med(name, threads):.0f} ({min(values):.0f}-{max(values):.0f}) "
                f"| {1000 / med(name, threads):.2f} |"
            )
    overhead = 1000 / med("sandbox", 1) - 1000 / med("in-thread", 1)
    lines += [
        "",
        f"- overhead per job (1 thread, difference of medians): **{overhead:.2f} ms** "
        f"({overhead / (1000 / med('in-thread', 1)) * 100:.0f}% of this small job; a 12 MP photo "
        "takes ~75 ms in the pipeline, see image.md)",
        f"- first job of a new pool (forkserver, imports, 2 children): {cold_ms:.0f} ms, "
        "once per worker process",
        f"- two jobs right after SIGKILL of an idle child (its replacement started): {recovery_ms:.0f} ms",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
