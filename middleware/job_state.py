"""Job state and results in Redis, readable by the app with ``status()`` and ``result()``.

Each message has a hash ``{ns}:job:{id}`` (state, queue, actor, attempts,
timestamps, error code, sanitized error and result) and a history list of
``{state, at}`` entries, both expiring after the configured TTL. States:
``queued``, ``delayed``, ``running``, ``retrying`` (with ``retry_at``),
``succeeded`` (with ``result``), ``failed`` (with ``error_code`` and
``attempts``), ``dead`` (in the dead-letter queue), ``skipped`` (a duplicate
of a unique job). Transitions are written by a Lua script (job_state.lua),
a batch of them in one call; they carry a sequence number, so one that
arrives late never takes a job back to an earlier state. Outcomes are
counted for metrics by the state writer, summed per batch.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, Union

import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from dramatiq.worker import ConsumerThread, WorkerThread

from . import deferred, keys, metrics
from .errors import JobError
from .job_logs import MAX_LINES, start_capture, take_lines
from .job_result import take_job_result
from .sanitize import redact, redact_text
from .scripts import LuaScript, execute
from .secrets_scope import sensitive_args_of
from .settle import PendingOutcome, settle_after_outcome

FINAL_STATES = frozenset({"succeeded", "failed", "dead", "skipped"})
_TIMESTAMPS = ("enqueued_at", "started_at", "finished_at", "retry_at", "updated_at", "progress_at")
MAX_RESULT_BYTES = 64 * 1024
# How long a job's "running" state may wait to be written (see StateWriter):
# longer than most short jobs, too short for a person watching to notice.
RUNNING_DELAY_S = 0.05
# How long the state writer lets a batch gather: 10 ms (measured: a fifth off
# the CPU per no-op job of a busy worker and Redis, against none), and for a
# busy worker longer, in proportion to its last batch, up to 50 ms (another
# 6 % off the CPU per job at ~1,300 jobs/s a process, against 10 ms).
GATHER_S = 0.01
MAX_GATHER_S = 0.05
GATHER_PER_ITEM_S = 0.0005
# How soon a batch that Redis could not be reached for is tried again, and how
# many writes are kept for that at most (each a job's transition or log lines).
RETRY_S = 1.0
MAX_BACKLOG = 20_000
STATE = LuaScript.from_file(Path(__file__).parent / "job_state.lua")

# Order of transitions within one attempt; a later attempt, or a message
# retried from the dead letters (a new generation), always sorts later.
_PHASE = {
    "queued": 0,
    "delayed": 0,
    "retrying": 0,
    "running": 1,
    "succeeded": 2,
    "failed": 2,
    "skipped": 2,
    "dead": 3,
}

_started: ContextVar[float | None] = ContextVar("taatom_state_started", default=None)
# The running job, for report_progress(): (its JobState, broker, message).
_running: ContextVar[tuple[JobState, Broker, MessageProxy] | None] = ContextVar(
    "taatom_running_job", default=None
)
logger = logging.getLogger("middleware.job_state")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seq(message: Message[Any] | MessageProxy, state: str) -> int:
    generation = int(message.options.get("generation", 0))
    return generation * 100_000 + int(message.options.get("attempt", 1)) * 10 + _PHASE[state]


class StateWriter(threading.Thread):
    """Writes the job-state transitions of a worker process, in order, batched per round trip.

    Worker threads hand transitions over and go on: they never wait for a
    state write. One thread keeps them in order (FIFO), and each round trip
    carries every transition queued since the last one, gathered for
    ``gather_s`` after the first (longer while busy: see ``MAX_GATHER_S``).

    A job's start (a :class:`Start`, or a ``running`` transition) is held
    back for up to ``running_delay_s``: a job that ends sooner has it written
    in one call with its outcome (both history entries, the true start time),
    which halves the state writes of short jobs. Outcomes, progress reports
    and counts are never held; they take a held start of their job with
    them, in order.

    With ``fleet``, finished messages acked with ``keep`` (see
    ``middleware.settle``) are forgotten at the end of the round trip that
    writes their outcomes. A batch that could not reach Redis is tried again
    whole, ahead of the next, so an outcome is not lost to a short outage and
    no message is forgotten without its outcome.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        fleet: SettleScript | None = None,
        running_delay_s: float = RUNNING_DELAY_S,
        gather_s: float = GATHER_S,
    ) -> None:
        super().__init__(name="taatom-job-state", daemon=True)
        self.client = client
        self.fleet = fleet
        self.running_delay_s = running_delay_s
        self.gather_s = gather_s
        self._gather_for = gather_s
        self.pending: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        # job key -> (when it must be written, its start); only this thread uses it
        self._held: dict[str, tuple[float, Start | Transition]] = {}
        # Writes of batches Redis could not be reached for, oldest first; only this thread uses it
        self._backlog: list[_Write] = []

    def submit(self, keys_: list[str], args: list[Any]) -> None:
        self.pending.put((keys_, args))

    def submit_start(self, start: Start) -> None:
        self.pending.put(start)

    def submit_commands(self, write: Callable[[Any], None]) -> None:
        """Other writes of the job (its log lines), kept in order with its transitions."""
        self.pending.put(write)

    def settle(self, job_key: str, queue_name: str, redis_id: str) -> None:
        """Forget a message acked with ``keep`` once everything submitted before is written."""
        self.pending.put(Settled(job_key, queue_name, redis_id))

    def flush(self, timeout_s: float = 5.0) -> bool:
        done = threading.Event()
        self.pending.put(done)
        return done.wait(timeout_s)

    def run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._write(self._release(batch))
            except Exception as exc:
                # This thread must outlive any one batch: without it no state is
                # written and no finished message is forgotten (they would all run
                # again after a restart). The type only: the text may quote job data.
                logger.error("Dropped a batch of %d job-state writes: %s", len(batch), type(exc).__name__)
                self._backlog = []
            finally:
                for item in batch:
                    if isinstance(item, threading.Event):
                        item.set()

    def _next_batch(self) -> list[_Item]:
        wait_s = RETRY_S if self._backlog else None
        if self._held:
            due_s = max(0.0, min(due for due, _ in self._held.values()) - time.monotonic())
            wait_s = due_s if wait_s is None else min(wait_s, due_s)
        try:
            batch = [self.pending.get(timeout=wait_s)]
        except queue.Empty:
            return []
        if self.gather_s > 0 and not isinstance(batch[0], threading.Event):
            # Let a batch form: one round trip for many jobs costs the worker
            # and Redis less CPU than one each, and the state is late by no
            # more than this.
            time.sleep(self._gather_for)
        while len(batch) < 1000:
            try:
                batch.append(self.pending.get_nowait())
            except queue.Empty:
                break
        if self.gather_s > 0:
            self._gather_for = gather_after(len(batch), self.gather_s)
        return batch

    def _release(self, batch: list[_Item]) -> list[_Write]:
        """What to write now, in order: the batch, minus the starts held back, plus the
        held ones whose job moved on (carried by its next transition) or whose time is up."""
        out: list[_Write] = []
        for item in batch:
            if isinstance(item, threading.Event):
                # flush(): everything held goes out before the caller is told.
                out.extend(_written_alone(held) for _, held in self._held.values())
                self._held.clear()
            elif isinstance(item, Start):
                self._hold_or_write(item.job_key, item, out)
            elif isinstance(item, tuple):
                holds = _starts_running(item)  # decided on the item as submitted
                transition = self._with_held_start(item, out)
                if holds:
                    self._hold_or_write(transition[0][0], transition, out)
                else:
                    out.append(transition)
            else:
                out.append(item)
        now = time.monotonic()
        for job_key in [k for k, (due, _) in self._held.items() if due <= now]:
            out.append(_written_alone(self._held.pop(job_key)[1]))
        return out

    def _with_held_start(self, transition: Transition, out: list[_Write]) -> Transition:
        """``transition``, carrying its job's held start if it can (a count-only call, seq -1,
        cannot: the start is then written just before it)."""
        held = self._held.pop(transition[0][0], None)
        if held is None:
            return transition
        start = held[1]
        if isinstance(start, Start) and int(transition[1][3]) >= 0:
            return start.absorbed_by(transition)
        out.append(_written_alone(start))
        return transition

    def _hold_or_write(self, job_key: str, start: Start | Transition, out: list[_Write]) -> None:
        if self.running_delay_s > 0:
            self._held[job_key] = (time.monotonic() + self.running_delay_s, start)
        else:
            out.append(_written_alone(start))

    def _write(self, batch: list[_Write]) -> None:
        items = [*self._backlog, *batch]
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        _queue_writes(pipe, items)
        scripts = [STATE]
        settled = [(s.queue_name, s.redis_id) for s in items if isinstance(s, Settled)]
        if settled and self.fleet is not None:
            # Last: a round trip cut short forgets no message whose outcome it did not write.
            self.fleet.queue_settle(pipe, settled)
            scripts.append(self.fleet.script)
        self._backlog = []
        try:
            execute(pipe, self.client, scripts)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._keep_for_retry(items, exc)
        except redis.RedisError as exc:
            # Every command ran (the error is one's reply): trying again would repeat them.
            logger.warning("A job-state write failed: %s", type(exc).__name__)

    def _keep_for_retry(self, items: list[_Write], exc: redis.RedisError) -> None:
        """Try ``items`` again with the next batch; past ``MAX_BACKLOG``, drop the oldest.

        A dropped write leaves an earlier state in ``status()``; a dropped
        settle leaves its message in this worker's ack set, to run again
        after this worker stops (never forgotten without its outcome).
        """
        dropped = max(0, len(items) - MAX_BACKLOG)
        # A job whose transition is dropped keeps its message too.
        lost = {item[0][0] for item in items[:dropped] if isinstance(item, tuple)}
        self._backlog = [
            item for item in items[dropped:] if not (isinstance(item, Settled) and item.job_key in lost)
        ]
        logger.warning(
            "Job-state writes wait for Redis (%s): %d kept, %d dropped.",
            type(exc).__name__,
            len(self._backlog),
            len(items) - len(self._backlog),
        )


def _queue_writes(pipe: Any, items: list[_Write]) -> None:
    """Add ``items`` (but settles) to ``pipe`` in submission order, the batch's counters first.

    Order matters: a job's log lines land before its final state (which
    wakes ``result()`` waiters), and a waiter woken by a final state finds
    its job counted. A job's consecutive transitions merge into one; a run
    of transitions goes in one script call.
    """
    counts = BatchCounts()
    writes: list[Transition | Callable[[Any], None]] = []
    run: list[Transition] = []
    for item in [*items, None]:
        if isinstance(item, Settled):
            continue
        if isinstance(item, tuple):
            run.append(item)
            continue
        # Count-only calls (seq -1) have nothing left to write once counted.
        writes.extend(t for t in (counts.take(t) for t in coalesce(run)) if int(t[1][3]) >= 0)
        run = []
        if item is not None:
            writes.append(item)
    counts.queue(pipe)
    wires: list[bytes] = []
    for write in [*writes, None]:
        if isinstance(write, tuple):
            wires.append(wire(write))
            continue
        # A few hundred at most per call, so that no call holds Redis up for long.
        for start in range(0, len(wires), MAX_PER_CALL):
            STATE.queue(pipe, [], wires[start : start + MAX_PER_CALL])
        wires = []
        if write is not None:
            write(pipe)


def gather_after(batch_size: int, minimum_s: float) -> float:
    """How long the next batch gathers after one of ``batch_size`` items: a busy
    writer longer (fewer, larger round trips), an idle one ``minimum_s``."""
    return min(MAX_GATHER_S, max(minimum_s, batch_size * GATHER_PER_ITEM_S))


Transition = tuple[list[str], list[Any]]
#: Most transitions in one call of job_state.lua.
MAX_PER_CALL = 200


def wire(transition: Transition) -> bytes:
    """``transition`` as job_state.lua takes it: one JSON argument (see its header).

    One argument instead of some thirty: packing them for the wire was the
    larger part of the state writer's time. UTF-8, with any lone surrogate
    (text decoded with ``surrogateescape``) replaced: neither UTF-8 nor the
    script's JSON decoder would take it.
    """
    keys_, args = transition
    entries = int(args[10])
    fields = [value if isinstance(value, str) else str(value) for value in args[11 + entries :]]
    return json.dumps(
        [
            keys_[0],
            keys_[1],
            keys_[2],
            str(args[0]),
            str(args[1]),
            args[2],
            str(args[3]),
            int(args[4]),
            args[11 : 11 + entries],
            fields,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8", "replace")


_Item = Union["Transition", "Start", "Settled", Callable[[Any], None], threading.Event]
_Write = Union["Transition", "Settled", Callable[[Any], None]]


class SettleScript(Protocol):
    """What the writer needs of the fleet script to forget settled messages."""

    @property
    def script(self) -> LuaScript: ...

    def queue_settle(self, pipe: Any, settled: Sequence[tuple[str, str]]) -> None: ...


@dataclass(frozen=True, slots=True)
class Settled:
    """A message acked with ``keep``, to forget once its outcome (submitted before) is written."""

    job_key: str
    queue_name: str
    redis_id: str


class BatchCounts:
    """The fleet counters of a batch of transitions, summed: a few commands per batch
    instead of six per job (the job-state script skips counters it is not given)."""

    def __init__(self) -> None:
        self.increments: dict[tuple[str, str], int] = {}
        self.sums: dict[tuple[str, str], float] = {}
        self.minute_keys: set[str] = set()

    def take(self, transition: Transition) -> Transition:
        """``transition`` without its counters, which are added here."""
        keys_, args = transition
        counter, minute_field, bucket, actor, duration = args[5:10]
        if not counter:
            return transition
        jobs_key, minute_key, duration_key = keys_[3:6]
        self._add(jobs_key, counter)
        self._add(minute_key, minute_field)
        self.minute_keys.add(minute_key)
        if bucket:
            self._add(duration_key, bucket)
            self._add(duration_key, f"{actor}|count")
            field = (duration_key, f"{actor}|sum")
            self.sums[field] = self.sums.get(field, 0.0) + float(duration)
        return keys_, [*args[:5], "", "", "", *args[8:]]

    def _add(self, key: str, field: str) -> None:
        self.increments[(key, field)] = self.increments.get((key, field), 0) + 1

    def queue(self, pipe: Any) -> None:
        for (key, field), count in self.increments.items():
            pipe.hincrby(key, field, count)
        for (key, field), total in self.sums.items():
            pipe.hincrbyfloat(key, field, repr(total))
        for key in self.minute_keys:
            pipe.expire(key, metrics.MINUTE_TTL_S)


def history_entry(state: str, at_ms: int) -> str:
    """One entry of a job's history list, as JSON (states are plain words: nothing to escape)."""
    return f'{{"state":"{state}","at":{at_ms}}}'


def _written_alone(held: Start | Transition) -> Transition:
    return held.running() if isinstance(held, Start) else held


@dataclass(frozen=True, slots=True)
class Start:
    """A job's start, as a worker thread hands it over: cheap to make, and most never
    become a transition of their own (see StateWriter)."""

    job_key: str
    at_ms: int
    attempts: int
    running: Callable[[], Transition]  # the full "running" transition, when written alone

    def absorbed_by(self, transition: Transition) -> Transition:
        """``transition`` (the job's next, never a count-only one) carrying this start too:
        the "running" history entry before its own, and the start time."""
        keys_, args = transition
        entries = int(args[10])
        merged = [*args[:10], entries + 1, history_entry("running", self.at_ms), *args[11:]]
        names = set(merged[12 + entries :: 2])
        if "started_at" not in names:
            merged += ["started_at", self.at_ms]
        if "attempts" not in names:
            merged += ["attempts", self.attempts]
        return keys_, merged


def _starts_running(transition: Transition) -> bool:
    """A job's ``running`` transition with its history entry (a progress report has none)."""
    args = transition[1]
    return bool(args[2] == "running" and int(args[3]) >= 0 and int(args[10]) == 1)


def coalesce(transitions: list[Transition]) -> list[Transition]:
    """Merge a job's consecutive transitions of one batch into one call (a short job's
    ``running`` and its outcome), keeping every history entry; calls that count an
    outcome are never merged with each other, so no count is lost."""
    merged: list[tuple[list[str], list[Any]]] = []
    last_for: dict[str, int] = {}
    for keys_, args in transitions:
        index = last_for.get(keys_[0])
        if index is not None and index == len(merged) - 1 and not (merged[index][1][5] and args[5]):
            merged[index] = (keys_, _merge(merged[index][1], args))
        else:
            last_for[keys_[0]] = len(merged)
            merged.append((keys_, list(args)))
    return merged


def _merge(first: list[Any], then: list[Any]) -> list[Any]:
    h1, h2 = int(first[10]), int(then[10])
    fields = dict(zip(first[11 + h1 :: 2], first[12 + h1 :: 2], strict=True))
    fields.update(zip(then[11 + h2 :: 2], then[12 + h2 :: 2], strict=True))
    counted = first if first[5] else then
    state = first[2] if int(then[3]) < 0 else then[2]  # a count-only call changes no state
    head = [then[0], then[1], state, max(first[3], then[3]), int(first[4] or then[4]), *counted[5:10]]
    return [
        *head,
        h1 + h2,
        *first[11 : 11 + h1],
        *then[11 : 11 + h2],
        *(x for kv in fields.items() for x in kv),
    ]


class JobState(Middleware):
    """Records every job's transitions (see the module docstring).

    In the app, the ``queued`` state travels in the enqueue round trip (so
    ``status()`` right after ``send()`` sees it). In worker threads, every
    transition goes through one :class:`StateWriter` per process.
    """

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._writer: StateWriter | None = None
        self._writer_lock = threading.Lock()

    def _writer_for(self, broker: Broker) -> StateWriter:
        with self._writer_lock:
            if self._writer is None:
                # A FleetBroker's consumers ack finished messages with "keep": this writer forgets them.
                fleet = getattr(broker, "fleet", None)
                self._writer = StateWriter(broker.client, fleet=fleet)  # type: ignore[attr-defined]
                self._writer.start()
            return self._writer

    def _transition(
        self,
        broker: Broker,
        message: Message[Any] | MessageProxy,
        state: str,
        *,
        done: bool = False,
        outcome: tuple[str, str] | None = None,
        at_ms: int | None = None,
        **fields: Any,
    ) -> tuple[list[str], list[Any]]:
        ns = broker.namespace  # type: ignore[attr-defined]
        now = _now_ms() if at_ms is None else at_ms
        queue_name = keys.group(message.queue_name)
        counter = minute_field = bucket = ""
        duration = 0.0
        if outcome is not None:
            counter = f"{message.actor_name}|{queue_name}|{outcome[0]}|{outcome[1]}"
            minute_field = f"{queue_name}|{outcome[0]}"
            started = _started.get()
            if started is not None and outcome[0] in ("succeeded", "failed"):
                duration = time.perf_counter() - started
                bucket = f"{message.actor_name}|{metrics.bucket_for(duration)}"
        message_id = message.message_id
        keys_ = [keys.job(ns, message_id), keys.job_history(ns, message_id), keys.job_done(ns, message_id)]
        if counter:  # the counters' keys, for BatchCounts
            keys_ += [metrics.jobs_key(ns), metrics.minute_key(ns, now // 60_000), metrics.duration_key(ns)]
        args: list[Any] = [
            self.ttl_s,
            now,
            state,
            _seq(message, state),
            int(done),
            counter,
            minute_field,
            bucket,
            message.actor_name,
            repr(duration),
            1,  # history entries that follow
            history_entry(state, now),
        ]
        for name, value in fields.items():
            if value is not None:
                args.extend((name, _encode(value)))
        return keys_, args

    def _submit(self, broker: Broker, transition: tuple[list[str], list[Any]]) -> None:
        self._writer_for(broker).submit(*transition)

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        retry_at = message.options.get("retry_at")
        if delay is not None and retry_at is not None:
            state = "retrying"
        elif delay is not None:
            state = "delayed"
        else:
            state = "queued"
        transition = self._transition(
            broker,
            message,
            state,
            queue=keys.group(message.queue_name),
            lane="high" if keys.canonical(message.queue_name).endswith(keys.HIGH_LANE) else None,
            actor=message.actor_name,
            # where the stored message is, for operators' job pages
            redis_id=message.options.get("redis_message_id"),
            enqueued_at=message.message_timestamp,
            retry_at=retry_at if state == "retrying" else (_now_ms() + delay if delay else None),
            attempts=int(message.options.get("attempt", 1)) - 1,
            error_code=message.options.get("last_error_code"),
            error=message.options.get("last_error"),
        )
        if isinstance(threading.current_thread(), WorkerThread | ConsumerThread):
            self._submit(broker, transition)
        else:
            # The app's send(): written in the same round trip as the message, before it.
            deferred.defer(
                message.options["redis_message_id"], lambda pipe: STATE.queue(pipe, [], [wire(transition)])
            )

    def progress(self, broker: Broker, message: MessageProxy, percent: float, note: str | None) -> None:
        keys_, args = self._transition(
            broker,
            message,
            "running",
            progress=round(percent, 1),
            progress_note=redact_text(note)[:200] if note else "",
            progress_at=_now_ms(),
        )
        args[10] = 0  # no history entry for a progress report
        del args[11]
        self._submit(broker, (keys_, args))

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        _running.set((self, broker, message))
        _started.set(time.perf_counter())
        start_capture()
        at_ms, attempts = _now_ms(), int(message.options.get("attempt", 1))

        def running() -> Transition:
            return self._transition(
                broker, message, "running", at_ms=at_ms, started_at=at_ms, attempts=attempts
            )

        job_key = keys.job(broker.namespace, message.message_id)  # type: ignore[attr-defined]
        self._writer_for(broker).submit_start(Start(job_key, at_ms, attempts, running))

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        _running.set(None)
        self._store_lines(broker, message)
        if exception is None:
            result = take_job_result() if result is None else result
            sensitive = sensitive_args_of(broker, message.actor_name)
            transition = self._transition(
                broker,
                message,
                "succeeded",
                done=True,
                outcome=("succeeded", ""),
                finished_at=_now_ms(),
                # Results are our jobs' own data: hashes and ids in them are not secrets.
                result=_bounded_result(redact(result, extra_keys=sensitive, opaque=False)),
                error_code="",
                error="",
            )
            self._settle_with_outcome(broker, message)
        elif message.failed:
            take_job_result()
            transition = self._transition(
                broker,
                message,
                "failed",
                done=True,
                outcome=("failed", str(message.options.get("error_code", ""))),
                finished_at=_now_ms(),
                error_code=message.options.get("error_code"),
                error=message.options.get("error"),
                attempts=message.options.get("attempts"),
            )
        else:
            # A retry was scheduled (its enqueue wrote "retrying"): count it only.
            take_job_result()
            transition = self._count(
                broker, message, "retried", str(message.options.get("last_error_code", ""))
            )
        self._submit(broker, transition)

    def _count(
        self, broker: Broker, message: MessageProxy, outcome: str, code: str
    ) -> tuple[list[str], list[Any]]:
        """A counter-only transition: state "retrying" at a sequence that never overrides the real one."""
        keys_, args = self._transition(broker, message, "retrying", outcome=(outcome, code))
        args[3] = -1  # seq: below any recorded transition, so the state itself is left alone
        args[10] = 0  # and no history entry
        del args[11]
        return keys_, args

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._submit(
            broker,
            self._transition(
                broker, message, "dead", outcome=("dead", str(message.options.get("error_code", "")))
            ),
        )

    def _store_lines(self, broker: Broker, message: MessageProxy) -> None:
        lines = take_lines()
        if not lines:
            return
        key = keys.job_logs(broker.namespace, message.message_id)  # type: ignore[attr-defined]
        ttl = self.ttl_s

        def write(pipe: Any) -> None:
            pipe.rpush(key, *lines)
            pipe.ltrim(key, -MAX_LINES, -1)
            pipe.expire(key, ttl)

        self._writer_for(broker).submit_commands(write)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        _running.set(None)
        take_lines()
        self._submit(broker, self._transition(broker, message, "skipped", done=True, finished_at=_now_ms()))
        self._settle_with_outcome(broker, message)

    def _settle_with_outcome(self, broker: Broker, message: MessageProxy) -> None:
        """Keep the message in Redis until its final state is written (see ``middleware.settle``).

        Only for outcomes that end the message here: a retried one is acked at
        once (its next attempt is already queued, and must not run twice), a
        failed one moves to the dead letters.
        """
        writer = self._writer_for(broker)
        if writer.fleet is not None:
            job_key = keys.job(broker.namespace, message.message_id)  # type: ignore[attr-defined]
            settle_after_outcome(
                message, PendingOutcome(partial(writer.settle, job_key), writer.submit_commands)
            )

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._writer is not None:
            self._writer.flush()


def _encode(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, default=str)


def _bounded_result(result: Any) -> str:
    text = json.dumps(result, default=str)
    if len(text) > MAX_RESULT_BYTES:
        return json.dumps({"truncated": True, "bytes": len(text)})
    return text


def report_progress(percent: float, note: str | None = None) -> None:
    """Record how far the running job is (0-100) and an optional note; shown by status() and the dashboard.

    Call it from inside a job. Reports are written in order with the job's
    other transitions and cost the job no round trip; outside a job (or in a
    stack without job state) it does nothing.
    """
    running = _running.get()
    if running is None:
        return
    state, broker, message = running
    state.progress(broker, message, max(0.0, min(100.0, float(percent))), note)


class JobNotFound(LookupError):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"no job {message_id!r} (never sent, or its state expired)")


class ResultTimeout(TimeoutError):
    def __init__(self, message_id: str, timeout_s: float, state: str) -> None:
        self.message_id, self.timeout_s, self.state = message_id, timeout_s, state
        super().__init__(f"job {message_id} has no result after {timeout_s:g}s (state: {state})")


class JobSkipped(LookupError):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"job {message_id} was skipped: another message with its unique_key ran")


class JobStateReader:
    """The app's view of job state: ``status()`` and ``result()``."""

    def __init__(self, client: redis.Redis, namespace: str, *, socket_timeout_s: float) -> None:
        self.client = client
        self.namespace = namespace
        # A blocking read must end before the socket gives up on it.
        self.max_block_s = max(0.1, min(5.0, socket_timeout_s - 1.0))

    def status(self, message_id: str) -> dict[str, Any] | None:
        ns = self.namespace
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.job(ns, message_id))
        pipe.lrange(keys.job_history(ns, message_id), 0, -1)
        pipe.lrange(keys.job_logs(ns, message_id), 0, -1)
        raw, history, lines = pipe.execute()
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        status: dict[str, Any] = {
            "id": message_id,
            "state": fields.get("state"),
            "queue": fields.get("queue"),
            "actor": fields.get("actor"),
            "attempts": int(fields.get("attempts") or 0),
            "error_code": fields.get("error_code") or None,
            "error": fields.get("error") or None,
            "result": json.loads(fields["result"]) if fields.get("result") else None,
            "progress": float(fields["progress"]) if fields.get("progress") else None,
            "progress_note": fields.get("progress_note") or None,
            "logs": [line.decode("utf-8", "replace") for line in lines],
            "redis_id": fields.get("redis_id"),
            "lane": fields.get("lane") or "normal",
            "history": [
                {"state": e["state"], "at": _datetime(e["at"])} for e in (json.loads(h) for h in history)
            ],
        }
        for name in _TIMESTAMPS:
            status[name] = _datetime(fields.get(name))
        return status

    def result(self, message_id: str, timeout: float = 30.0) -> Any:
        """Wait up to ``timeout`` seconds for the job to finish and return its result.

        Raises :class:`JobError` (with the job's code) if it failed,
        :class:`JobSkipped` for a duplicate of a unique job,
        :class:`ResultTimeout` if it has not finished in time and
        :class:`JobNotFound` for an unknown id.
        """
        deadline = time.monotonic() + timeout
        done_key = keys.job_done(self.namespace, message_id)
        while True:
            status = self.status(message_id)
            if status is None:
                raise JobNotFound(message_id)
            state = status["state"]
            if state == "succeeded":
                return status["result"]
            if state in ("failed", "dead"):
                raise JobError(status["error_code"] or "SRV_6001", status["error"] or "job failed")
            if state == "skipped":
                raise JobSkipped(message_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(message_id, timeout, state)
            # Block until the job signals a final state; put the signal back
            # for any other waiter.
            popped = self.client.blpop([done_key], timeout=min(remaining, self.max_block_s))
            if popped is not None:
                self.client.rpush(done_key, popped[1])


def _datetime(value: str | int | None) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
