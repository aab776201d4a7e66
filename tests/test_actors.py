"""Actors: payloads validated at send (caller gets the code at once) and when processed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dramatiq.message import Message

from middleware.errors import JobError
from tests.conftest import Stack


@pytest.mark.parametrize(
    ("actor", "kwargs", "code", "field"),
    [
        ("send_email", {"subject": "s", "text": "t"}, "FILE_4001", "to"),
        ("send_email", {"to": [], "subject": "s", "text": "t"}, "FILE_4001", "to"),
        ("send_email", {"to": "a@example.com", "subject": "s"}, "VAL_2001", "(payload)"),
        (
            "send_email",
            {"to": "a@example.com", "subject": "hi\r\nBcc: x@evil", "text": "t"},
            "VAL_2001",
            "subject",
        ),
        ("send_email", {"to": "a@example.com", "subject": "", "text": "t"}, "VAL_2001", "subject"),
        (
            "send_email",
            {"to": "a@example.com", "subject": "s", "text": "t", "surprise": 1},
            "VAL_2001",
            "surprise",
        ),
        ("process_image", {"image_url": "ftp://x/y.jpg", "transformations": []}, "VAL_2001", "image_url"),
        ("process_image", {"image_url": "https://x/y.jpg"}, "VAL_2001", "transformations"),
        (
            "aggregate_analytics",
            {"start_date": "2026-01-01", "end_date": "2026-01-02", "aggregation_type": "weekly"},
            "VAL_2001",
            "aggregation_type",
        ),
        ("cleanup", {"cleanup_type": "all", "older_than_days": 3}, "VAL_2001", "older_than_days"),
        ("cleanup", {"cleanup_type": "all", "older_than_days": 30.5}, "VAL_2001", "older_than_days"),
        ("cleanup", {"cleanup_type": "all", "older_than_days": True}, "VAL_2001", "older_than_days"),
        ("cleanup", {"cleanup_type": "everything", "older_than_days": 30}, "VAL_2001", "cleanup_type"),
    ],
)
def test_bad_payload_is_refused_at_send(
    embedded_stack: Stack, actor: str, kwargs: dict[str, object], code: str, field: str
) -> None:
    with pytest.raises(JobError) as info:
        getattr(embedded_stack.actors, actor).send(**kwargs)
    assert info.value.code == code
    assert field in [d["field"] for d in info.value.details]
    # nothing reached the queue
    assert embedded_stack.broker.do_qsize(getattr(embedded_stack.actors, actor).queue_name) == 0


def test_validation_error_does_not_echo_values(embedded_stack: Stack) -> None:
    secret = "otp-778899-canary"
    with pytest.raises(JobError) as info:
        embedded_stack.actors.send_email.send(to="not-an-address\n" + secret, subject=secret + "\n", text="x")
    assert secret not in str(info.value)
    assert secret not in json.dumps(info.value.details)


def test_positional_arguments_are_refused(embedded_stack: Stack) -> None:
    with pytest.raises(JobError, match="keyword arguments only"):
        embedded_stack.actors.cleanup.send("analytics", 30)


def test_queues_match_design(embedded_stack: Stack) -> None:
    assert {a.actor_name: a.queue_name for a in embedded_stack.actors} == {
        "send_email": "email",
        "process_image": "image-processing",
        "aggregate_analytics": "analytics",
        "cleanup": "cleanup",
    }


def test_message_carries_normalised_json_kwargs(embedded_stack: Stack) -> None:
    message = embedded_stack.actors.cleanup.message(cleanup_type="all", older_than_days=30)
    assert message.kwargs == {"cleanup_type": "all", "older_than_days": 30, "dry_run": False}
    assert json.loads(message.encode())["kwargs"] == message.kwargs


def test_worker_validates_again(embedded_stack: Stack) -> None:
    """A message written to the queue by something other than send() is still checked."""
    actor = embedded_stack.actors.cleanup
    forged = Message(
        queue_name="cleanup",
        actor_name="cleanup",
        args=(),
        kwargs={"cleanup_type": "all", "older_than_days": 1},
        options={},
    )
    with pytest.raises(JobError) as info:
        actor(**forged.kwargs)
    assert info.value.code == "VAL_2001"


def test_importing_jobs_opens_no_connection_and_starts_no_thread() -> None:
    code = (
        "import socket, threading\n"
        "opened = []\n"
        "real = socket.socket.connect\n"
        "def spy(self, addr): opened.append(addr); return real(self, addr)\n"
        "socket.socket.connect = spy\n"
        "before = threading.active_count()\n"
        "import jobs\n"
        "assert opened == [], opened\n"
        "assert threading.active_count() == before, threading.enumerate()\n"
        "print('ok', jobs.settings.real_mode)\n"
    )
    env = {"ENABLE_BACKGROUND_JOBS": "true", "REDIS_URL": "redis://127.0.0.1:6379/13", "PATH": "/usr/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok True"
