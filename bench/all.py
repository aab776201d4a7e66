"""The whole suite in one run: raw Dramatiq, our stack and Celery side by side, the per-job
benchmarks, and BENCHMARKS.md regenerated from the results.

    python -m bench all                 # ~7-8 min: bench/results/{throughput,latency,idle}.md, BENCHMARKS.md
    python -m bench all --quick         # ~1 min smoke run, into a temporary directory (or --out DIR)
    python -m bench all --report-only   # rebuild BENCHMARKS.md from the result files

One private redis-server serves the comparison benchmarks (see harness.bench_redis); every
worker process and key the run creates is gone when it ends, also after Ctrl-C or SIGTERM.
The per-job benchmarks (email, image, analytics, cleanup) belong to their jobs: they run with
the sizes below and write into a scratch directory, and BENCHMARKS.md shows what they printed,
so their own result files in bench/results stay as their owners measured them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import shutil
import statistics
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import harness
from bench.harness import REPO, bench_redis, load_average, read_data, redis_where, stopped_on_exit

BENCHMARKS = REPO / "BENCHMARKS.md"
COMPARISONS = ("throughput", "latency", "idle")


@dataclass(frozen=True)
class Plan:
    comparisons: dict[str, list[str]]
    jobs: dict[str, list[str]]


PLANS = {
    "full": Plan(
        comparisons={
            "throughput": ["--jobs", "4000", "--rounds", "5"],
            "latency": ["--seconds", "10", "--rates", "100,500"],
            "idle": ["--window", "10", "--probes", "15", "--gap", "1.5"],
        },
        jobs={
            "email": ["--emails", "300", "--rounds", "3"],
            "image": ["--rounds", "3"],
            "analytics": ["--events", "20000", "--small", "5000"],
            "cleanup": ["--events", "20000", "--id-events", "1000"],
        },
    ),
    "quick": Plan(
        comparisons={
            "throughput": ["--jobs", "300", "--rounds", "1", "--shapes", "raw,ours,celery"],
            "latency": ["--seconds", "1.5", "--rates", "100,500", "--shapes", "raw,celery,ours"],
            "idle": ["--window", "2", "--probes", "3", "--gap", "0.5", "--shapes", "raw,celery,ours"],
        },
        jobs={
            "email": ["--emails", "20", "--rounds", "1"],
            "image": ["--rounds", "1"],
            "analytics": ["--events", "500", "--small", "200"],
            "cleanup": ["--events", "500", "--batch-sizes", "100", "--id-events", "50", "--no-unbatched"],
        },
    ),
}


def run_comparisons(plan: Plan, redis_url: str | None, prefix: str) -> None:
    with bench_redis(redis_url) as url:
        where = redis_where(redis_url)
        for name in COMPARISONS:
            module = importlib.import_module(f"bench.{name}")
            args = module.build_parser().parse_args([*plan.comparisons[name], "--prefix", prefix])
            print(f"\n=== {name}: python -m bench {name} {' '.join(plan.comparisons[name])}", flush=True)
            module.run(args, url, where)


def run_jobs(plan: Plan, scratch: Path) -> dict[str, str]:
    """Each per-job benchmark present, with the plan's sizes; name -> its result text (or why none)."""
    out: dict[str, str] = {}
    saved = harness.RESULTS
    harness.RESULTS = scratch
    try:
        for name, argv in plan.jobs.items():
            if not (REPO / "bench" / f"{name}.py").exists():
                continue
            command = f"python -m bench {name} {' '.join(argv)}"
            print(f"\n=== {name}: {command}", flush=True)
            started = time.monotonic()
            try:
                code = importlib.import_module(f"bench.{name}").main(argv)
            except Exception:
                code = -1
                traceback.print_exc()
            seconds = time.monotonic() - started
            result = scratch / f"{name}.md"
            if code == 0 and result.exists():
                out[name] = f"_Run by `python -m bench all` as `{command}` ({seconds:.0f} s)._\n\n" + _body(
                    result.read_text()
                )
            else:
                out[name] = f"_`{command}` failed (exit {code}) in this run; see the runner's output._"
    finally:
        harness.RESULTS = saved
    return out


# --- BENCHMARKS.md ------------------------------------------------------------------------------


def _body(text: str) -> str:
    """A result file as a subsection: every heading two levels down, without the attached data."""
    lines = []
    for line in text.splitlines():
        if line.startswith("<!-- bench-data "):
            continue
        lines.append("##" + line if re.match(r"#+ ", line) else line)
    return "\n".join(lines).strip()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def summary(results: Path, wall_s: float | None, command: str, loads: tuple[str, str]) -> str:
    tp = (read_data(results / "throughput.md") or {}).get("shapes", {})
    lat = (read_data(results / "latency.md") or {}).get("latency", {})
    idle = (read_data(results / "idle.md") or {}).get("idle", {})

    def drain(name: str) -> float | None:
        return _median(tp[name]["drain"]) if name in tp else None

    def ratio(top: str, bottom: str) -> float | None:
        a, b = drain(top), drain(bottom)
        return None if a is None or b is None else a / b

    def p99(name: str, rate: str) -> float | None:
        runs = lat.get(name, {}).get(rate)
        return None if not runs else _median([r["p99"] for r in runs])

    def fmt(x: float | None, spec: str = ".2f", unit: str = "") -> str:
        return "n/a" if x is None else f"{x:{spec}}{unit}"

    ba, bc = ratio("ours", "raw"), ratio("ours", "celery")
    ours_idle, raw_idle = idle.get("ours"), idle.get("raw")
    wake_med = ours_idle["wake_median"] if ours_idle else None
    wake_max = ours_idle["wake_max"] if ours_idle else None
    ours_p99 = p99("ours", "100")
    idle_cmds = ours_idle["cmds_per_process_s"] if ours_idle else None
    raw_cmds = raw_idle["cmds_per_process_s"] if raw_idle else None
    rows = [
        ("12, 14", "drain (b)/(a) >= 0.9, everything on", fmt(ba), None if ba is None else ba >= 0.9),
        ("12", "drain (b)/(c) >= 2.5", fmt(bc), None if bc is None else bc >= 2.5),
        ("14", "ours: idle wake median <= 5 ms", fmt(wake_med, ".1f", " ms"), _le(wake_med, 5)),
        ("14", "ours: idle wake max <= 20 ms", fmt(wake_max, ".1f", " ms"), _le(wake_max, 20)),
        (
            "14",
            "ours: p99 enqueue-to-start <= 10 ms at 100 jobs/s",
            fmt(ours_p99, ".1f", " ms"),
            _le(ours_p99, 10),
        ),
        (
            "14",
            "ours: idle Redis commands/s per worker process <= raw Dramatiq's",
            f"{fmt(idle_cmds, '.1f')} vs {fmt(raw_cmds, '.1f')}",
            None if idle_cmds is None or raw_cmds is None else idle_cmds <= raw_cmds,
        ),
    ]
    targets = "\n".join(f"| {issue} | {what} | {value} | {_verdict(ok)} |" for issue, what, value, ok in rows)
    headline = "\n".join(
        f"| {tp[name]['title']} | {_median(tp[name]['drain']):,.0f} | {fmt(ratio(name, 'raw'))} |"
        for name in ("raw", "ours", "ours-unique", "celery", "ours-quiet")
        if name in tp
    )
    wall = "" if wall_s is None else f" in {wall_s // 60:.0f} min {wall_s % 60:.0f} s"
    quick = "\n**A --quick smoke run: its sizes are too small for these figures to mean anything.**\n"
    return f"""Last run: `{command}`{wall}; load average (1, 5, 15 min) {loads[0]} before, {loads[1]} after.
Machine, versions, commit and per-benchmark load are in each section below.
{quick if "--quick" in command else ""}
| issue | target | measured | |
|---|---|---|---|
{targets}

| shape | drain jobs/s (median) | / raw Dramatiq |
|---|---|---|
{headline}"""


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


TEMPLATE = """# Benchmarks

taatom-jobs against raw Dramatiq (what it builds on) and Celery (what most Python teams run), on one
machine and one Redis, in one run. Regenerate everything between the `begin`/`end` markers with
`python -m bench all` (or `make bench`); the text outside them is written by hand.

## Summary

<!-- begin:summary -->
<!-- end:summary -->

## Throughput, commands and CPU per job

<!-- begin:throughput -->
<!-- end:throughput -->

## Latency at a steady rate

<!-- begin:latency -->
<!-- end:latency -->

## Idle fleet: wake-up and Redis load

<!-- begin:idle -->
<!-- end:idle -->

## Per-job benchmarks

<!-- begin:jobs -->
<!-- end:jobs -->
"""


def replace_block(document: str, name: str, content: str) -> str:
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    if begin not in document or end not in document:
        document = f"{document.rstrip()}\n\n{begin}\n{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    return pattern.sub(lambda _: f"{begin}\n{content.strip()}\n{end}", document, count=1)


def write_benchmarks(
    target: Path,
    results: Path,
    jobs: dict[str, str] | None,
    wall_s: float | None,
    command: str,
    loads: tuple[str, str],
) -> Path:
    document = target.read_text() if target.exists() else TEMPLATE
    text = summary(results, wall_s, command, loads)
    previous = re.search(r"<!-- begin:summary -->\n(Last run: [^\n]*)", document)
    if wall_s is None and previous:  # --report-only: the figures are still those of that run
        text = previous.group(1) + "\n" + text.split("\n", 1)[1]
    document = replace_block(document, "summary", text)
    for name in COMPARISONS:
        path = results / f"{name}.md"
        if path.exists():
            document = replace_block(document, name, _body(path.read_text()))
    if jobs:  # otherwise the block keeps the numbers of the last run that had them
        document = replace_block(document, "jobs", "\n\n".join(jobs[name] for name in jobs))
    target.write_text(document)
    return target


# --- Entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench all", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run with tiny sizes")
    parser.add_argument("--out", help="results directory (default: bench/results; --quick: a temporary one)")
    parser.add_argument("--redis-url", help="benchmark against this Redis instead of a private one")
    parser.add_argument("--tag", help="marks this run's key namespaces (default: random)")
    parser.add_argument("--skip-jobs", action="store_true", help="leave out the per-job benchmarks")
    parser.add_argument("--report-only", action="store_true", help="only rebuild BENCHMARKS.md")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    plan = PLANS["quick" if args.quick else "full"]
    default_out = not args.out and not args.quick
    out = (
        Path(args.out)
        if args.out
        else (harness.RESULTS if default_out else Path(tempfile.mkdtemp(prefix="bench-")))
    )
    target = BENCHMARKS if default_out else out / "BENCHMARKS.md"
    command = "python -m bench all" + (" " + " ".join(argv) if argv else "")
    if args.report_only:
        path = write_benchmarks(target, out, None, None, command, (load_average(), load_average()))
        print(f"written to {path}")
        return 0
    tag = args.tag or uuid.uuid4().hex[:6]
    # Inherited by every process the run starts: what it left behind can be found by it.
    os.environ["BENCH_RUN_TAG"] = tag
    started, load_before = time.monotonic(), load_average()
    saved = harness.RESULTS
    harness.RESULTS = out
    scratch = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    jobs: dict[str, str] = {}
    try:
        with stopped_on_exit():
            run_comparisons(plan, args.redis_url, f"bench-{tag}")
            if not args.skip_jobs:
                jobs = run_jobs(plan, scratch)
    finally:
        harness.RESULTS = saved
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    wall = time.monotonic() - started
    path = write_benchmarks(target, out, jobs, wall, command, (load_before, load_average()))
    print(f"\nall done in {wall:.0f} s; results in {out}; {path} regenerated")
    failed = [name for name, text in jobs.items() if "failed (exit" in text]
    return 1 if failed else 0
