"""The `taatom-jobs` command: the operator's entry point.

Commands: demo, status [--watch S], job ID, promote ID, dead list|retry|purge,
pause Q, resume Q, enqueue ACTOR --json '{...}' [--priority high], dashboard, scheduler.

Exit codes: 0 success; 1 the command ran but its work failed (e.g. a payload
refused with VAL_2001); 2 usage error (unknown queue, actor or option);
69 Redis unreachable; 78 configuration error (invalid setting, or a command
that needs real mode run in embedded mode). Errors are one line on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .context import Ops

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_CONFIG = 78

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit code 2."""


def duration_ms(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``7d`` -> milliseconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 2h or 7d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taatom-jobs", description="Taatom background jobs: operator commands."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run sample jobs through the full stack in embedded mode")

    status = commands.add_parser("status", help="per-queue overview")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    job = commands.add_parser("job", help="one job's state, history, progress, log lines, error and result")
    job.add_argument("message_id")

    promote = commands.add_parser("promote", help="run a delayed or retry-waiting job now")
    promote.add_argument("message_id")

    dead = commands.add_parser("dead", help="dead letters").add_subparsers(dest="dead_command", required=True)
    dead_list = dead.add_parser("list", help="list dead letters, newest first")
    dead_list.add_argument("--queue", action="append", help="only this queue (repeatable)")
    dead_list.add_argument("--limit", type=int, default=25)
    for name, what in (("retry", "put dead letters back on their queue"), ("purge", "delete dead letters")):
        sub = dead.add_parser(name, help=what)
        sub.add_argument("--queue", action="append", help="only this queue (repeatable); default: all")
        sub.add_argument("--id", dest="redis_id", help="only this dead letter (its redis id, as listed)")
        sub.add_argument("--older-than", type=duration_ms, help="only those that failed longer ago, e.g. 2h")
        if name == "purge":
            sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    for name in ("pause", "resume"):
        sub = commands.add_parser(name, help=f"{name} a queue")
        sub.add_argument("queue")

    enqueue = commands.add_parser("enqueue", help="send a job, validated like .send()")
    enqueue.add_argument("actor")
    enqueue.add_argument(
        "--json", dest="payload", required=True, help="the keyword arguments as a JSON object"
    )
    enqueue.add_argument("--unique-key")
    enqueue.add_argument("--delay", type=duration_ms, help="run no sooner than this from now, e.g. 30s")
    enqueue.add_argument(
        "--priority", choices=("high", "normal"), help="the high lane, where the queue has one"
    )

    dashboard = commands.add_parser("dashboard", help="serve the web dashboard")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)

    scheduler = commands.add_parser("scheduler", help="run the schedule daemon (python -m scheduler)")
    scheduler.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one exit per documented code
    args = build_parser().parse_args(argv)
    # Imports are deferred so that `--help` and usage errors need no configuration.
    # Importing anything under `jobs` reads the settings: a bad value surfaces here.
    try:
        from jobs.settings import SettingsError
    except ValueError as exc:
        return _fail(EXIT_CONFIG, " ".join(str(exc).split()))
    from middleware.errors import JobError

    try:
        if args.command == "demo":
            from jobs.demo import run_demo

            return run_demo()
        if args.command == "scheduler":
            return _scheduler(args.args)
        return _with_ops(args)
    except SettingsError as exc:
        return _fail(EXIT_CONFIG, str(exc).replace("\n", " "))
    except JobError as exc:
        return _fail(EXIT_FAILED, f"{exc.code}: {exc.message}")
    except (UsageError, KeyError) as exc:
        return _fail(EXIT_USAGE, str(exc.args[0]) if exc.args else str(exc))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return _fail(EXIT_UNAVAILABLE, f"Redis is unreachable ({type(exc).__name__}); check REDIS_URL")
    except KeyboardInterrupt:
        return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(f"taatom-jobs: {message}", file=sys.stderr)
    return code


def _scheduler(argv: list[str]) -> int:
    from scheduler.__main__ import main as scheduler_main

    return int(scheduler_main(argv) or 0)


def _with_ops(args: argparse.Namespace) -> int:
    from .context import default_ops

    ops = default_ops()
    if not ops.settings.real_mode and args.command != "dashboard":
        return _fail(
            EXIT_CONFIG,
            "this command reads the fleet's Redis, but the configuration is embedded mode: "
            "set ENABLE_BACKGROUND_JOBS=true (or APP_ENV=production) and REDIS_URL",
        )
    handlers: dict[str, Callable[[Ops, argparse.Namespace], int]] = {
        "status": _status,
        "job": _job,
        "promote": _promote,
        "dead": _dead,
        "pause": _pause_resume,
        "resume": _pause_resume,
        "enqueue": _enqueue,
        "dashboard": _dashboard,
    }
    return handlers[args.command](ops, args)


# --- commands ---------------------------------------------------------------------------


def _status(ops: Ops, args: argparse.Namespace) -> int:
    from .render import console, overview_table

    out = console()
    while True:
        rows = ops.inspector.overview()
        if args.json:
            print(json.dumps([row.__dict__ for row in rows]))
        else:
            if args.watch:
                out.clear()
            out.print(overview_table(rows, ops.inspector.workers()))
        if not args.watch:
            return EXIT_OK
        time.sleep(args.watch)


def _job(ops: Ops, args: argparse.Namespace) -> int:
    from .render import console, job_panel

    status = ops.inspector.job(args.message_id)
    if status is None:
        raise UsageError(f"no job {args.message_id!r} (never sent, or its state expired)")
    console().print(job_panel(status))
    return EXIT_OK


def _promote(ops: Ops, args: argparse.Namespace) -> int:
    if not ops.operator.promote(args.message_id):
        raise UsageError(f"job {args.message_id!r} is not waiting for a delay or a retry")
    print(f"{args.message_id}: promoted")
    return EXIT_OK


def _queues(ops: Ops, wanted: list[str] | None) -> list[str]:
    queues = list(ops.inspector.queues)
    for queue in wanted or []:
        if queue not in queues:
            raise UsageError(f"unknown queue {queue!r}; known: {', '.join(queues)}")
    return wanted or queues


def _dead(ops: Ops, args: argparse.Namespace) -> int:
    from .render import console, dead_table, progress_bar

    queues = _queues(ops, args.queue)
    if args.dead_command == "list":
        rows = [row for q in queues for row in ops.inspector.messages(q, "dead", per_page=args.limit)[0]]
        console().print(
            dead_table(sorted(rows, key=lambda r: r.at or r.enqueued_at, reverse=True)[: args.limit])
        )
        return EXIT_OK
    if args.redis_id:
        if len(queues) != 1:
            raise UsageError("--id needs exactly one --queue")
        if args.dead_command == "retry":
            done = int(ops.operator.retry_dead(queues[0], args.redis_id) is not None)
        else:
            done = int(ops.operator.delete_dead(queues[0], args.redis_id))
        if not done:
            raise UsageError(f"no dead letter {args.redis_id!r} on {queues[0]}")
        print(f"{args.dead_command}: 1 dead letter")
        return EXIT_OK
    if args.dead_command == "purge" and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("purge deletes dead letters for good: confirm with --yes")
        answer = input(f"Delete dead letters of {', '.join(queues)} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    action = ops.operator.retry_all_dead if args.dead_command == "retry" else ops.operator.purge_dead
    total = 0
    with progress_bar() as progress:
        for queue in queues:
            task = progress.add_task(f"{args.dead_command} {queue}", total=None)

            def advance(done: int, of: int, task: Any = task) -> None:
                progress.update(task, completed=done, total=of)

            total += action(queue, older_than_ms=args.older_than, progress=advance)
    print(f"{args.dead_command}: {total} dead letters")
    return EXIT_OK


def _pause_resume(ops: Ops, args: argparse.Namespace) -> int:
    queue = _queues(ops, [args.queue])[0]
    (ops.operator.pause if args.command == "pause" else ops.operator.resume)(queue)
    print(f"{queue}: {'paused' if args.command == 'pause' else 'resumed'}")
    return EXIT_OK


def _enqueue(ops: Ops, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--json is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(payload, dict):
        raise UsageError("--json must be a JSON object of keyword arguments")
    if args.priority:
        payload["priority"] = args.priority
    options: dict[str, Any] = {}
    if args.unique_key:
        options["unique_key"] = args.unique_key
    message = ops.actor(args.actor).send_with_options(kwargs=payload, delay=args.delay, **options)
    print(message.message_id)
    return EXIT_OK


def _dashboard(ops: Ops, args: argparse.Namespace) -> int:
    from .dashboard import serve

    return int(serve(ops, args.host, args.port))
