"""Hypothesis-driven fuzzing of every actor's payload through ``.send()`` and of raw messages in Redis.

Properties, checked against a real `dramatiq jobs` worker group:

- ``send()`` either enqueues or refuses with a registered, non-retried code; it
  never raises anything else;
- every message ends settled: done, or dead-lettered with a registered code;
  permanent codes are attempted at most once; nothing stays in a queue or in flight;
- no worker process dies and no consumer fails unexpectedly;
- the queues keep flowing afterwards.

Examples are derandomized, so CI runs the same cases every time; set
``RELIABILITY_FUZZ_EXAMPLES`` to run more (and random ones) locally.
"""

from __future__ import annotations

import json
import os
import string
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from middleware.errors import JobError, registry
from tests.conftest import Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import text
from tests.reliability.supervise import EntrypointGroup
from tests.services.http import HTTPTestServer
from tests.services.smtp import SMTPTestServer
from tests.support.images import grid, jpeg

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 120,
    derandomize=not EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
ACTORS = ("send_email", "process_image", "aggregate_analytics", "cleanup")
QUEUE_OF = {
    "send_email": "email",
    "process_image": "image-processing",
    "aggregate_analytics": "analytics",
    "cleanup": "cleanup",
}
CRASH_SIGNS = (
    "Consumer encountered an unexpected error",
    "Unexpected failure in",
    "exited unexpectedly",
    "Exception in thread",
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly plausible, sometimes any JSON at all."""
    return st.one_of(strategy, strategy, json_values)


def fields(**choices: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A payload made of some of these fields, plus now and then a key no schema knows."""
    return st.fixed_dictionaries({}, optional={name: maybe(s) for name, s in choices.items()}).flatmap(
        lambda d: st.one_of(
            st.just(d),
            st.dictionaries(st.text(max_size=10), json_values, max_size=2).map(lambda x: {**x, **d}),
        )
    )


addresses = st.sampled_from(
    ["ana@example.com", "Bo <bo@example.org>", "not an address", "", "x@", "evil@example.com\r\nBcc: all@x"]
) | st.emails().map(str)
dates = st.sampled_from(
    ["2026-01-01", "2026-01-02", "2025-12-31", "2026-02-30", "yesterday", ""]
) | st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat())
steps = st.fixed_dictionaries(
    {},
    optional={
        "width": st.sampled_from([1, 32, 320, 0.5, 0, -3, 20_000, "64"]),
        "height": st.sampled_from([1, 24, 240, 1.0, 0, 99_999]),
        "crop": st.sampled_from(["scale", "fit", "limit", "fill", "pad", "thumb", "melt"]),
        "gravity": st.sampled_from(["center", "north", "auto", "nowhere"]),
        "quality": st.sampled_from([1, 80, 100, 101, "auto", "auto:eco"]),
        "format": st.sampled_from(["jpg", "png", "webp", "gif"]),
        "angle": st.sampled_from([90, 45, "hflip", 720]),
        "background": st.sampled_from(["#fff", "rgb:00ff00", "blue"]),
    },
)


def valid_payloads(image_urls: list[str]) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """Payloads the schemas accept (most of the time): the base the mutations start from."""
    words = st.text(alphabet=string.ascii_letters + string.digits + " ,.!", min_size=1, max_size=40).filter(
        str.strip
    )
    day = st.integers(min_value=1, max_value=9)
    return {
        "send_email": st.fixed_dictionaries(
            {
                "to": st.emails().map(str) | st.lists(st.emails().map(str), min_size=1, max_size=3),
                "subject": words,
            },
            optional={
                "text": words,
                "html": words.map(lambda t: f"<p>{t}</p>"),
                "idempotency_key": st.text(alphabet=string.ascii_letters + ":/-", min_size=1, max_size=12),
            },
        ).map(lambda d: d if "text" in d or "html" in d else {**d, "text": "body"}),
        "process_image": st.fixed_dictionaries(
            {
                "image_url": st.sampled_from(image_urls),
                "transformations": st.lists(
                    st.fixed_dictionaries(
                        {"width": st.integers(min_value=1, max_value=200)},
                        optional={
                            "crop": st.sampled_from(["scale", "fit", "limit"]),
                            "quality": st.integers(min_value=1, max_value=100),
                            "format": st.sampled_from(["jpg", "png", "webp"]),
                        },
                    ),
                    max_size=2,
                ),
            }
        ),
        "aggregate_analytics": st.tuples(day, day, st.sampled_from(["hourly", "daily"])).map(
            lambda t: {
                "start_date": f"2026-01-0{min(t[0], t[1])}",
                "end_date": f"2026-01-0{max(t[0], t[1])}",
                "aggregation_type": t[2],
            }
        ),
        "cleanup": st.fixed_dictionaries(
            {
                "cleanup_type": st.sampled_from(["analytics", "error_logs", "all"]),
                "older_than_days": st.integers(min_value=7, max_value=36_500),
            },
            optional={"dry_run": st.booleans()},
        ),
    }


def mutated(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid payload with one or two fields replaced by any JSON, dropped, or an unknown key added."""

    def mutate(draw: st.DrawFn) -> dict[str, Any]:
        payload = dict(draw(base))
        for _ in range(draw(st.integers(min_value=1, max_value=2))):
            how = draw(st.sampled_from(["replace", "drop", "add"]))
            if how == "add" or not payload:
                payload[draw(st.text(max_size=10))] = draw(json_values)
            elif how == "drop":
                payload.pop(draw(st.sampled_from(sorted(payload))))
            else:
                payload[draw(st.sampled_from(sorted(payload)))] = draw(json_values)
        return payload

    return st.composite(mutate)()


def payloads(image_urls: list[str]) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    plausible = {
        "send_email": fields(
            to=addresses | st.lists(addresses, max_size=3),
            subject=st.text(max_size=40),
            text=st.text(max_size=200) | st.just("x" * 300_000),
            html=st.text(max_size=100).map(lambda t: f"<p>{t}</p>"),
            cc=st.lists(addresses, max_size=2),
            reply_to=addresses,
            idempotency_key=st.text(alphabet=string.ascii_letters + ":/-", max_size=12),
        ),
        "process_image": fields(
            image_url=st.sampled_from(image_urls) | st.text(max_size=40),
            transformations=st.lists(steps, max_size=3),
            variants=st.dictionaries(
                st.sampled_from(["thumb", "Big!", "x"]), st.lists(steps, max_size=2), max_size=2
            ),
        ),
        "aggregate_analytics": fields(
            start_date=dates, end_date=dates, aggregation_type=st.sampled_from(["hourly", "daily", "weekly"])
        ),
        "cleanup": fields(
            cleanup_type=st.sampled_from(["analytics", "error_logs", "all", "everything"]),
            older_than_days=st.sampled_from([7, 30, 36_500, 3, -1, 10**9]) | st.integers(),
            dry_run=st.booleans(),
        ),
    }
    valid = valid_payloads(image_urls)
    return {
        name: st.one_of(valid[name], valid[name], mutated(valid[name]), plausible[name]) for name in ACTORS
    }


def settled_states(stack: Stack, jobs: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    final = {"succeeded", "failed", "dead", "skipped"}

    def statuses() -> dict[str, dict[str, Any]]:
        return {job: stack.api.status(job) or {} for job in jobs}

    wait_for(lambda: all(s.get("state") in final for s in statuses().values()), timeout=timeout, interval=0.5)
    return statuses()


@pytest.fixture
def fuzz_env(
    real_env: dict[str, str],
    smtp_server: SMTPTestServer,
    mongo_url: str,
    mongo_db: Database[dict[str, object]],
    http_server: HTTPTestServer,
) -> dict[str, str]:
    return {
        **real_env,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db.name,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "IMAGE_FETCH_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}",
        "IMAGE_FETCH_TIMEOUT_S": "3",
        "IMAGE_STORAGE_DIR": str(uuid.uuid4().hex),
    }


@pytest.mark.timeout(240)
def test_fuzzed_payloads_through_send_are_refused_with_a_code_or_settle_with_one(
    fuzz_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    http_server: HTTPTestServer,
    tmp_path: Any,
) -> None:
    env = {**fuzz_env, "IMAGE_STORAGE_DIR": str(tmp_path / "images")}
    group = groups(env, processes=1, threads=4, args=())
    group.wait_ready()
    stack = make_stack(env)
    actors = {actor.actor_name: actor for actor in stack.actors}
    image_urls = [
        http_server.add_bytes("/ok.jpg", jpeg(grid(64, 48)), "image/jpeg"),
        http_server.add_bytes("/text.jpg", b"this is no image", "image/jpeg"),
        http_server.add_status("/gone.jpg", 404),
        "http://127.0.0.1:1/closed.jpg",
        "http://169.254.169.254/latest/meta-data",
    ]
    strategies = payloads(image_urls)
    accepted: dict[str, str] = {}
    refused: dict[str, int] = {}

    @FUZZ
    @given(name=st.sampled_from(ACTORS), data=st.data())
    @example(name="send_email", data=None)
    def send_one(name: str, data: Any) -> None:
        kwargs = (
            data.draw(strategies[name])
            if data is not None
            else {"to": "ana@example.com", "subject": "hi", "text": "x"}
        )
        try:
            message = actors[name].send(**kwargs)
        except JobError as exc:
            assert exc.code in registry(), exc.code
            # A payload refused at send is refused for good: retrying cannot fix it.
            assert not exc.error_code.retried, (name, exc.code, exc.message)
            refused[exc.code] = refused.get(exc.code, 0) + 1
            return
        accepted[message.message_id] = name

    send_one()
    statuses = settled_states(stack, list(accepted), timeout=120)
    outcomes: dict[str, int] = {}
    for status in statuses.values():
        label = f"{status.get('state')}:{status.get('error_code') or ''}"
        outcomes[label] = outcomes.get(label, 0) + 1
    figures = report(
        "fuzz send()",
        f"{len(accepted) + sum(refused.values())} payloads: refused at send {refused}; "
        f"accepted {len(accepted)} -> {outcomes}",
    )
    unsettled = {
        job: s.get("state")
        for job, s in statuses.items()
        if s.get("state") not in ("succeeded", "failed", "dead")
    }
    assert not unsettled, (unsettled, figures)
    for job, status in statuses.items():
        if status["state"] in ("failed", "dead"):
            code = registry().get(status["error_code"] or "")
            assert code is not None, (accepted[job], status)
            if not code.retried:
                assert status["attempts"] == 1, (accepted[job], status)
    assert not any(sign in group.output for sign in CRASH_SIGNS), group.output[-5000:]
    assert group.proc.poll() is None
    # Still flowing.
    ok = actors["send_email"].send(to="after@example.com", subject="after", text="still flowing").message_id
    assert stack.api.result(ok, timeout=30)["success"] is True
    # SIGKILL: quicker, and nothing here depends on a graceful stop.
    group.kill_all()


# -- raw messages ---------------------------------------------------------------------------------

options = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": st.integers(min_value=1, max_value=5),
        "unique_key": st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
        "redis_message_id": st.text(max_size=8),
        "error_code": st.sampled_from(["SRV_6003", "NOPE_1"]),
    },
)


# Option values of any JSON type, for the options the middleware reads.
wild_options = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(json_values, st.sampled_from([None, "soon", -1, 0, 10**20, 1.5e308, True, "3"]))
        for name in ("eta", "attempt", "max_attempts", "generation", "unique_key", "encrypted", "error_code")
    },
)


def messages(queue: str) -> st.SearchStrategy[bytes]:
    """Bytes a hostile or broken producer could push: garbage, JSON that is no message,
    messages with fields missing, unknown or removed actors, positional arguments,
    payloads of any JSON values, and envelopes whose fields have the wrong JSON types."""
    fields_ = st.fixed_dictionaries(
        {
            "queue_name": st.just(queue),
            "actor_name": st.sampled_from([*ACTORS, "removed_actor", "", "send_email "])
            | st.text(max_size=12),
            "args": st.sampled_from([[], [1, "two"]]) | st.lists(json_values, max_size=2),
            "kwargs": st.dictionaries(
                st.sampled_from(["to", "subject", "text", "image_url", "cleanup_type"]), json_values
            )
            | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
            "options": options,
            "message_id": st.uuids().map(str),
            "message_timestamp": st.integers(min_value=0, max_value=2**41),
        },
    )
    wild = st.fixed_dictionaries(
        {
            "queue_name": st.sampled_from([queue, f"{queue}.DQ", "elsewhere"]) | json_values,
            "actor_name": st.sampled_from([*ACTORS, "removed_actor"]) | json_values,
            "args": json_values,
            "kwargs": json_values,
            "options": wild_options | json_values,
            "message_id": st.uuids().map(str) | json_values,
            "message_timestamp": st.integers(min_value=0, max_value=2**41) | json_values,
        },
    )
    as_json = fields_.map(lambda d: json.dumps(d).encode())
    dropped = fields_.flatmap(
        lambda d: st.sets(st.sampled_from(sorted(d)), min_size=1, max_size=3).map(
            lambda gone: json.dumps({k: v for k, v in d.items() if k not in gone}).encode()
        )
    )
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        as_json,
        as_json,
        wild.map(lambda d: json.dumps(d).encode()),
        wild.map(lambda d: json.dumps(d).encode()),
        dropped,
        st.text(max_size=100).map(str.encode),
    )


def dead_letters_by_id(client: redis.Redis, ns: str, queue: str) -> list[tuple[str, dict[str, Any]]]:
    ids = [text(rid) for rid in client.zrange(f"{ns}:{queue}.XQ", 0, -1)]
    stored = client.hmget(f"{ns}:{queue}.XQ.msgs", ids) if ids else []
    return [(rid, json.loads(raw)) for rid, raw in zip(ids, stored, strict=True) if raw]


def push_raw(client: redis.Redis, ns: str, queue: str, data: bytes) -> str:
    redis_id = str(uuid.uuid4())
    client.hset(f"{ns}:{queue}.msgs", redis_id, data)
    client.rpush(f"{ns}:{queue}", redis_id)
    return redis_id


def huge_message(queue: str, actor: str, megabytes: int) -> bytes:
    return json.dumps(
        {
            "queue_name": queue,
            "actor_name": actor,
            "args": [],
            "kwargs": {"to": "ana@example.com", "subject": "big", "text": "x" * (megabytes << 20)},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": 0,
        }
    ).encode()


@pytest.mark.timeout(240)
def test_raw_messages_pushed_into_redis_are_dead_lettered_with_a_code_and_the_worker_keeps_going(
    fuzz_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    redis_client: redis.Redis,
    tmp_path: Any,
) -> None:
    env = {**fuzz_env, "IMAGE_STORAGE_DIR": str(tmp_path / "images")}
    group = groups(env, processes=2, threads=3, args=())
    group.wait_ready()
    stack = make_stack(env)
    ns = stack.broker.namespace
    pushed: dict[str, str] = {}

    @FUZZ
    @given(queue=st.sampled_from(sorted(QUEUE_OF.values())), data=st.data())
    @example(queue="email", data=b"\xff\xfe not json at all")
    @example(queue="email", data=huge_message("email", "send_email", 6))
    @example(queue="cleanup", data=huge_message("cleanup", "removed_actor", 2))
    def push_one(queue: str, data: Any) -> None:
        raw = data if isinstance(data, bytes) else data.draw(messages(queue))
        pushed[push_raw(redis_client, ns, queue, raw)] = queue

    push_one()

    def unsettled() -> dict[str, str]:
        return {rid: q for rid, q in pushed.items() if redis_client.hexists(f"{ns}:{q}.msgs", rid)}

    settled = wait_for(lambda: not unsettled(), timeout=120, interval=0.5)
    letters = {
        rid: letter
        for queue in QUEUE_OF.values()
        for rid, letter in dead_letters_by_id(redis_client, ns, queue)
    }
    codes: dict[str, int] = {}
    for rid in pushed:
        letter = letters.get(rid)
        key = "done" if letter is None else str(letter["options"].get("error_code"))
        codes[key] = codes.get(key, 0) + 1
    figures = report(
        "fuzz raw messages",
        f"{len(pushed)} raw messages pushed (incl. 2 MB and 6 MB ones): {codes}; "
        f"unsettled: {len(unsettled())}",
    )
    assert settled, (figures, unsettled())
    for rid, letter in ((r, letters[r]) for r in pushed if r in letters):
        code = registry().get(str(letter["options"].get("error_code")))
        assert code is not None, (rid, letter["options"])
        if not code.retried:
            assert int(letter["options"].get("attempts", 0)) <= 1, (rid, letter["options"])
    in_flight = sum(int(redis_client.scard(k)) for k in redis_client.scan_iter(match=f"{ns}:__acks__.*"))
    assert in_flight == 0, figures
    assert not any(sign in group.output for sign in CRASH_SIGNS), group.output[-5000:]
    assert group.proc.poll() is None and len(group.workers()) == 2
    ok = stack.actors.send_email.send(
        to="after@example.com", subject="after", text="still flowing"
    ).message_id
    assert stack.api.result(ok, timeout=30)["success"] is True
    group.kill_all()  # as above


def envelope(queue: str, **fields_: Any) -> bytes:
    """A well-formed cleanup message (a dry run) with some fields replaced."""
    message = {
        "queue_name": queue,
        "actor_name": "cleanup",
        "args": [],
        "kwargs": {"cleanup_type": "all", "older_than_days": 30, "dry_run": True},
        "options": {},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": 0,
    }
    return json.dumps({**message, **fields_}).encode()


# Minimal envelopes the hypothesis run above found mishandled, and what happens to each now.
WRONG_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    # FleetConsumer.__next__: `message.actor_name not in broker.actors` raises TypeError: the
    # consumer restarts and the message stays in the ack set of a live worker, never settled.
    "actor_name is a list": ("email", {"actor_name": ["cleanup"]}),
    # `message.options["redis_message_id"] = ...` on a list: the same consumer crash.
    "options is a list": ("image-processing", {"options": []}),
    # Dramatiq's WorkerThread looks the consumer up by message.queue_name: KeyError in its
    # `finally`, the message is never acked, and the queue stops flowing.
    "queue_name names another queue": ("analytics", {"queue_name": "email"}),
    # DeadLetters cannot stamp it (queue_name.removesuffix): dead-lettered without a code.
    "queue_name is an object": ("email", {"queue_name": {"q": 1}, "actor_name": "removed_actor"}),
    # JobSecretsScope, then the actor call, fail on kwargs=None; Attempts' hook fails too and
    # is swallowed by Dramatiq: the failed job is acked as if done, with no code.
    "kwargs is null": ("image-processing", {"kwargs": None}),
    # Attempts.policy_for: int({}) raises inside after_process_message: the invalid payload
    # (VAL_2001) is acked, not dead-lettered.
    "max_attempts is an object": (
        "email",
        {"options": {"max_attempts": {}}, "kwargs": {"cleanup_type": "x"}},
    ),
    # An eta in the year 33658 on a plain queue: held in memory (and, on a capped queue, on a
    # concurrency slot the keeper renews) for ever; cleanup (cap 1) stops flowing.
    "eta far in the future": ("cleanup", {"options": {"eta": 10**15}}),
}


# One valid payload per actor: after the poison, each queue must still settle a job.
VALID: dict[str, dict[str, Any]] = {
    "send_email": {"to": "ana@example.com", "subject": "after", "text": "x"},
    "process_image": {"image_url": "http://127.0.0.1:1/x.jpg", "transformations": []},
    "aggregate_analytics": {
        "start_date": "2026-01-01",
        "end_date": "2026-01-01",
        "aggregation_type": "daily",
    },
    "cleanup": {"cleanup_type": "all", "older_than_days": 30, "dry_run": True},
}


@pytest.mark.timeout(90)
def test_envelopes_with_wrong_field_types_are_dead_lettered_with_a_code(
    fuzz_env: dict[str, str],
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    redis_client: redis.Redis,
    tmp_path: Any,
) -> None:
    env = {**fuzz_env, "IMAGE_STORAGE_DIR": str(tmp_path / "images")}
    group = groups(env, processes=1, threads=3, args=())
    group.wait_ready()
    stack = make_stack(env)
    ns = stack.broker.namespace
    pushed = {
        name: (queue, push_raw(redis_client, ns, queue, envelope(queue, **fields_)))
        for name, (queue, fields_) in WRONG_TYPES.items()
    }
    wait_for(
        lambda: not any(redis_client.hexists(f"{ns}:{q}.msgs", rid) for q, rid in pushed.values()), timeout=10
    )
    problems: dict[str, str] = {}
    for name, (queue, rid) in pushed.items():
        letters = dict(dead_letters_by_id(redis_client, ns, queue))
        if redis_client.hexists(f"{ns}:{queue}.msgs", rid):
            problems[name] = "never settled"
        elif rid not in letters:
            problems[name] = "acked, no dead letter"
        elif str(letters[rid]["options"].get("error_code")) not in registry():
            problems[name] = (
                f"dead letter without a registered code: {letters[rid]['options'].get('error_code')!r}"
            )
    flowing = {actor.queue_name: actor.send(**VALID[actor.actor_name]).message_id for actor in stack.actors}

    def settles(job: str) -> bool:
        return wait_for(
            lambda: (stack.api.status(job) or {}).get("state") in ("succeeded", "failed", "dead"), timeout=6
        )

    stalled = [queue for queue, job in flowing.items() if not settles(job)]
    signs = [sign for sign in CRASH_SIGNS if sign in group.output]
    assert not problems and not stalled and not signs, (problems, f"stalled queues: {stalled}", signs)
