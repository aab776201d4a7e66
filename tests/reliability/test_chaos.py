"""Chaos: 5,000 jobs, two supervised groups, a worker process SIGKILLed every few seconds.

Every ledger job writes its start and end to the ledger; e-mails go to a real
SMTP server with the e-mail log in MongoDB. Asserted: every job completes,
none is lost, nothing is left in Redis, no e-mail is accepted twice.
Duplicate executions (at least once) are counted and reported.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from pymongo.database import Database

from tests.conftest import Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import LEDGER_ACTORS, Ledger, declare_ledger_actors
from tests.reliability.supervise import Supervisor
from tests.services.smtp import SMTPTestServer

LEDGER_JOBS = {"email": 1750, "image-processing": 1400, "analytics": 900, "cleanup": 600}
EMAILS = 300
# The app sends some e-mails twice (a double click): same idempotency key, two jobs.
RESENT = 50
TOTAL = sum(LEDGER_JOBS.values()) + EMAILS + RESENT
SMTP_LATENCY_S = 0.05
KILL_EVERY_S = (2.5, 4.5)
HEARTBEAT_TIMEOUT_MS = 3000


@dataclass
class Kill:
    at: float
    pid: int
    group: str
    running: set[str] = field(default_factory=set)


def _header(content: bytes, name: str) -> str:
    for line in content.decode(errors="replace").splitlines():
        if line.lower().startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return "?"


@pytest.mark.timeout(300)
def test_chaos_every_job_completes_no_email_twice(
    real_env: dict[str, str],
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    supervisors: Callable[..., Supervisor],
    redis_client: redis.Redis,
    smtp_server: SMTPTestServer,
    mongo_url: str,
    mongo_db: Database[dict[str, object]],
) -> None:
    env = {
        **real_env,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db.name,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "WORKER_HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_TIMEOUT_MS),
    }
    worker_env = {**env, **ledger_env, "TAATOM_WORKER_SHUTDOWN_MS": "5000"}
    # A remote server works on a message before taking it (a disconnect meanwhile drops
    # it, as real servers do): kills catch e-mails mid-send.
    accept = smtp_server.handler.handle_DATA

    async def slow_data(*args: Any) -> str:
        await asyncio.sleep(SMTP_LATENCY_S)
        return await accept(*args)

    smtp_server.handler.handle_DATA = slow_data  # type: ignore[method-assign,assignment]
    groups = {name: supervisors(name, worker_env) for name in ("A", "B")}
    for supervisor in groups.values():
        supervisor.wait_ready()
    stack = make_stack(env)
    actors = declare_ledger_actors(stack.broker, ledger)
    rng = random.Random(11)

    # Interleaved, so every queue has work until the end.
    plan = [(queue, i) for queue, count in LEDGER_JOBS.items() for i in range(count)]
    plan += [("send_email", i) for i in range(EMAILS)]
    rng.shuffle(plan)
    plan += [("send_email", i) for i in range(RESENT)]
    email_jobs: dict[str, str] = {}  # message id -> idempotency key
    started = time.monotonic()
    for queue, i in plan:
        if queue == "send_email":
            key = f"chaos-{i}"
            message = stack.actors.send_email.send(
                to=f"user{i}@example.com", subject=key, text=f"chaos e-mail {i}", idempotency_key=key
            )
            email_jobs[message.message_id] = key
        else:
            actors[queue].send(key=f"{queue}-{i}", sleep_ms=rng.choice((20, 40, 60, 80)))
    enqueued_s = time.monotonic() - started

    email_log = mongo_db["email_log"]
    ledger_total = sum(LEDGER_JOBS.values())
    ns = stack.broker.namespace
    queues = [*LEDGER_ACTORS, *(f"{q}.DQ" for q in LEDGER_ACTORS)]

    def leftover() -> dict[str, int]:
        """Messages still stored in Redis (queued, delayed, in flight) per queue."""
        sizes = {q: int(redis_client.hlen(f"{ns}:{q}.msgs")) for q in queues}
        return {q: n for q, n in sizes.items() if n}

    def done() -> bool:
        return (
            ledger.finished() == ledger_total
            and email_log.count_documents({"state": "sent"}) == EMAILS
            and not leftover()
        )

    kills: list[Kill] = []
    next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_S)
    deadline = time.monotonic() + 220
    while not done() and time.monotonic() < deadline:
        if time.monotonic() >= next_kill and all(g.current.ready for g in groups.values()):
            name = rng.choice(sorted(groups))
            pids = groups[name].current.workers()
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                kills.append(Kill(time.time(), victim, name))
                next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_S)
        wait_for(done, timeout=0.5, interval=0.25)
    elapsed = time.monotonic() - started
    finished = done()

    ends = ledger.counts("end")
    starts = ledger.counts("start")
    duplicates = sum(n - 1 for n in ends.values() if n > 1)
    killed_runs = sum(starts.values()) - sum(ends.values())
    received = Counter(_header(m.content, "subject") for m in smtp_server.messages)
    twice = {key: n for key, n in received.items() if n > 1}
    output = "\n".join(g.output for g in groups.values())
    already_sent = output.count("was already sent (")
    taken_over = {
        email_jobs.get(line.split("Email job ", 1)[1].split(":", 1)[0], "?")
        for line in output.splitlines()
        if "an earlier run stopped while sending" in line
    }
    # SMTP has no two-phase commit: a worker killed between the server's 250 and the
    # e-mail log's "sent" record leaves a claim that the rerun takes over, and sends again
    # with the same Message-ID (docs/email.md). That window is a few milliseconds; such a
    # copy is reported, any other second copy fails the test.
    message_ids = {
        key: {
            _header(m.content, "message-id")
            for m in smtp_server.messages
            if _header(m.content, "subject") == key
        }
        for key in twice
    }
    unexplained = {key for key in twice if key not in taken_over or len(message_ids[key]) != 1}
    recoveries = []
    events = ledger.events()
    for kill in kills:
        # Cut short: started in the victim, never finished there.
        mine = [e for e in events if e["pid"] == kill.pid]
        kill.running = {e["key"] for e in mine if e["event"] == "start"} - {
            e["key"] for e in mine if e["event"] == "end"
        }
        reruns = [
            e["at"] - kill.at
            for key in kill.running
            for e in events
            if e["key"] == key and e["event"] == "start" and e["at"] > kill.at
        ]
        if reruns:
            recoveries.append(max(reruns))
    dead = {q: len(redis_client.zrange(f"{ns}:{q}.XQ", 0, -1)) for q in LEDGER_ACTORS}
    figures = report(
        "chaos",
        f"{TOTAL} jobs ({ledger_total} ledger + {EMAILS} e-mails + {RESENT} sent again), "
        f"enqueued in {enqueued_s:.1f}s, "
        f"all done: {finished} after {elapsed:.1f}s ({TOTAL / elapsed:.0f} jobs/s under chaos)",
        f"SIGKILLs: {len(kills)}; group restarts: A {groups['A'].restarts}, B {groups['B'].restarts}",
        f"ledger jobs finished: {len(ends)}/{ledger_total}; duplicate executions: {duplicates} "
        f"(runs cut short by a kill: {killed_runs})",
        "recovery after each kill (last rerun of its running jobs): "
        + (
            f"max {max(recoveries):.1f}s, median {sorted(recoveries)[len(recoveries) // 2]:.1f}s"
            if recoveries
            else "n/a"
        )
        + f" (WORKER_HEARTBEAT_TIMEOUT_MS={HEARTBEAT_TIMEOUT_MS})",
        f"e-mails: {len(received)} distinct accepted, accepted twice: {len(twice)} {twice or ''} "
        f"(in the documented 250-to-record window: {len(twice) - len(unexplained)}); "
        f"answered from the e-mail log: {already_sent} ({RESENT} sent again by the app); "
        f"claims of killed sends taken over: {len(taken_over)}",
        f"left in Redis: {leftover() or 'nothing'}; dead letters: {dead}",
    )
    assert finished, figures + "\n" + output[-3000:]
    assert len(kills) >= 5, figures
    assert set(ends) == {f"{q}-{i}" for q, n in LEDGER_JOBS.items() for i in range(n)}, figures
    assert not leftover() and not any(dead.values()), figures
    assert len(received) == EMAILS and not unexplained, figures
    sent = {doc["_id"] for doc in email_log.find({"state": "sent"}, {"_id": 1})}
    assert sent == {f"key:chaos-{i}" for i in range(EMAILS)}, figures
    assert already_sent >= RESENT, figures
    states = Counter((stack.api.status(job) or {}).get("state") for job in email_jobs)
    # A kill between an ack and the outcome's write runs the job again (middleware.settle):
    # every job ends recorded as it ended.
    assert set(states) == {"succeeded"}, (states, figures)
