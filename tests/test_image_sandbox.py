"""The image sandbox with a real process pool: a killed child, a hard time limit, reuse.

One embedded stack with one sandbox child (so the child running a job is the only one
of that pool), a 2 s image time limit, one attempt. The children are found in /proc by
their name among this process's descendants: no pool internals.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from jobs.images.sandbox import CHILD_NAME
from middleware.errors import JobError
from tests.conftest import FAST_POLICY, Stack
from tests.services.http import HTTPTestServer, running_http_server
from tests.support.images import encoded, jpeg, quadrants
from tests.support.redis_inspect import wait_until

TIME_LIMIT_S = 2.0
# A 59 MP PNG (0.8 MB on the wire) turned by 45 degrees, three times: about 12 s of work
# here, far over the limit, and seconds before a kill can miss it.
SLOW_CHAIN = [{"angle": 45, "width": 5400}]
SLOW_VARIANTS = {"b": [{"angle": 30, "width": 5400}], "c": [{"angle": 60, "width": 5400}]}
SMALL_CHAIN = [{"width": 100}]


@pytest.fixture(scope="module")
def http_server() -> Iterator[HTTPTestServer]:
    with running_http_server() as server:
        yield server


@pytest.fixture(scope="module")
def urls(http_server: HTTPTestServer) -> dict[str, str]:
    slow = Image.linear_gradient("L").resize((7700, 7700)).convert("RGB")
    return {
        "slow": http_server.add_bytes("/slow.png", encoded(slow, "PNG", compress_level=1), "image/png"),
        "small": http_server.add_bytes("/small.jpg", jpeg(quadrants(400, 300))),
    }


@pytest.fixture(scope="module")
def others() -> set[int]:
    """Sandbox children of other pools in this test process (other modules' stacks)."""
    return _sandbox_children()


@pytest.fixture(scope="module")
def stack(
    http_server: HTTPTestServer, tmp_path_factory: pytest.TempPathFactory, others: set[int]
) -> Iterator[Stack]:
    from jobs.actors import declare_actors
    from jobs.api import JobsAPI
    from jobs.runtime import Runtime
    from jobs.settings import Settings
    from jobs.wiring import build_broker

    tmp = tmp_path_factory.mktemp("image-sandbox")
    settings = Settings.from_mapping(
        {
            "EMBEDDED_DATA_DIR": str(tmp / "data"),
            "IMAGE_STORAGE_DIR": str(tmp / "images"),
            "IMAGE_FETCH_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}",
            "IMAGE_FETCH_TIMEOUT_S": "1",
            "IMAGE_TIME_LIMIT_S": str(TIME_LIMIT_S),
            "IMAGE_MAX_ATTEMPTS": "1",
            "IMAGE_SANDBOX_PROCESSES": "1",
            # Distinct from the defaults, so this module gets a pool of its own.
            "IMAGE_SANDBOX_MAX_MEMORY_MB": "3900",
            **FAST_POLICY,
        }
    )
    broker = build_broker(settings)
    runtime = Runtime(settings)
    built = Stack(
        settings, broker, declare_actors(broker, settings, runtime), runtime, JobsAPI(broker, settings)
    )
    yield built
    if built.embedded is not None:
        built.embedded.stop()
    broker.close()
    runtime.close()


def _sandbox_children() -> set[int]:
    """PIDs of processes named CHILD_NAME descending from this test process."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if rest[0] != "Z":
            parents[int(entry.name)], names[int(entry.name)] = int(rest[1]), name
    me = os.getpid()

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    return {pid for pid, name in names.items() if name == CHILD_NAME and descends(pid)}


def _cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _mine(others: set[int]) -> set[int]:
    return _sandbox_children() - others


def _run(stack: Stack, url: str) -> dict[str, Any]:
    job = stack.actors.process_image.send(image_url=url, transformations=SMALL_CHAIN).message_id
    result = stack.api.result(job, timeout=20)
    assert isinstance(result, dict) and result["width"] == 100
    return result


def _failure(stack: Stack, job: str) -> tuple[str, dict[str, Any]]:
    """The failed job's code and its final status: dead (in the dead letters) once written."""
    with pytest.raises(JobError) as info:
        stack.api.result(job, timeout=20)

    def dead() -> bool:
        status = stack.api.status(job)
        return status is not None and status["state"] == "dead"

    assert wait_until(dead, timeout=5)
    status = stack.api.status(job)
    assert status is not None
    return info.value.code, status


def test_the_pool_is_reused_across_jobs(stack: Stack, urls: dict[str, str], others: set[int]) -> None:
    _run(stack, urls["small"])
    children = _mine(others)
    assert len(children) == 1
    for _ in range(3):
        _run(stack, urls["small"])
    assert _mine(others) == children  # no fork per job


def test_a_child_killed_mid_job_fails_it_with_file_4004(
    stack: Stack, urls: dict[str, str], others: set[int]
) -> None:
    _run(stack, urls["small"])  # the pool is up
    [child] = _mine(others)
    idle = _cpu_ticks(child)
    job = stack.actors.process_image.send(
        image_url=urls["slow"], transformations=SLOW_CHAIN, variants=SLOW_VARIANTS
    ).message_id
    # Busy decoding for a few tenths of a second: past the task hand-over, not done.
    assert wait_until(lambda: _cpu_ticks(child) - idle >= 30, timeout=10)
    os.kill(child, signal.SIGKILL)
    code, status = _failure(stack, job)
    assert code == "FILE_4004"
    assert status["attempts"] == 1 and status["error_code"] == "FILE_4004"
    assert "crashed" in (status["error"] or "")
    _run(stack, urls["small"])  # the worker lives, with a new child
    assert child not in _mine(others) and len(_mine(others)) == 1


def test_the_time_limit_kills_a_child_inside_the_decoder(
    stack: Stack, urls: dict[str, str], others: set[int]
) -> None:
    _run(stack, urls["small"])
    [child] = _mine(others)
    sent = time.monotonic()
    job = stack.actors.process_image.send(
        image_url=urls["slow"], transformations=SLOW_CHAIN, variants=SLOW_VARIANTS
    ).message_id
    code, status = _failure(stack, job)
    elapsed = time.monotonic() - sent
    assert code == "SRV_6005"
    assert status["attempts"] == 1 and status["error_code"] == "SRV_6005"
    # The job's thread was back well before the ~12 s the work would have taken.
    assert elapsed < TIME_LIMIT_S + 2.5, elapsed
    assert not Path(f"/proc/{child}").exists()  # killed and reaped
    started = time.monotonic()
    _run(stack, urls["small"])
    assert time.monotonic() - started < 5
    assert len(_mine(others)) == 1
