"""Long CPU-heavy jobs are not mistaken for a dead worker (Dramatiq issue #692).

Every thread of one worker process is busy for several heartbeat timeouts:
pure-Python CPU work, and a real ``process_image`` job encoding a 6 MP photo
to AVIF. A second group, started once the first one is busy, would requeue the
first one's messages if its heartbeat went stale. Each job must run exactly once.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from PIL import Image

from tests.conftest import Stack
from tests.reliability.conftest import report, wait_for
from tests.reliability.ledger import Ledger, declare_ledger_actors, text
from tests.reliability.supervise import EntrypointGroup
from tests.services.http import HTTPTestServer

TIMEOUT_MS = 2000  # the smallest WORKER_HEARTBEAT_TIMEOUT_MS the settings accept
RECOVERY_LINE = "in-flight messages of dead workers"


def noisy_jpeg(width: int, height: int) -> bytes:
    """A photo-sized JPEG that compresses badly, so encoding it is real work."""
    out = io.BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def worker_id(client: redis.Redis, namespace: str, pid: int) -> str:
    """The broker id a worker process heartbeats under (its keeper describes itself in Redis)."""
    for key in client.scan_iter(match=f"{namespace}:workers:*"):
        if int(text(client.hget(key, "pid") or 0)) == pid:
            return text(key).rsplit(":", 1)[1]
    raise AssertionError(f"no worker entry for pid {pid}")


class HeartbeatWatch(threading.Thread):
    """Samples the age of every worker's heartbeat while the jobs run."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        super().__init__(daemon=True)
        self.client, self.key = client, f"{namespace}:__heartbeats__"
        self.max_age_ms: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            now = time.time() * 1000
            beats: list[tuple[bytes, float]] = self.client.zrange(self.key, 0, -1, withscores=True)  # type: ignore[assignment]
            for worker, beat in beats:
                name = text(worker)
                self.max_age_ms[name] = max(self.max_age_ms.get(name, 0.0), now - beat)


@pytest.mark.timeout(150)
def test_busy_cpu_bound_workers_keep_their_heartbeat_and_run_each_job_once(
    real_env: dict[str, str],
    ledger_env: dict[str, str],
    ledger: Ledger,
    make_stack: Callable[[dict[str, str]], Stack],
    groups: Callable[..., EntrypointGroup],
    redis_client: redis.Redis,
    http_server: HTTPTestServer,
    tmp_path: Path,
) -> None:
    env = {
        **real_env,
        **ledger_env,
        "WORKER_HEARTBEAT_TIMEOUT_MS": str(TIMEOUT_MS),
        "IMAGE_FETCH_ALLOW_HOSTS": f"127.0.0.1:{http_server.port}",
        "IMAGE_STORAGE_DIR": str(tmp_path / "images"),
        "IMAGE_MAX_ATTEMPTS": "1",
    }
    url = http_server.add_bytes("/photo.jpg", noisy_jpeg(3000, 2000), "image/jpeg")
    busy = groups(env, processes=1, threads=3)
    busy.wait_ready()
    stack = make_stack(env)
    ledger_actors = declare_ledger_actors(stack.broker, ledger)
    watch = HeartbeatWatch(redis_client, stack.broker.namespace)
    watch.start()
    images = [
        stack.actors.process_image.send(
            image_url=url, transformations=[{"format": "avif", "quality": 80}]
        ).message_id
        for _ in range(1)
    ]
    for queue in ("analytics", "cleanup"):
        ledger_actors[queue].send(key=f"cpu-{queue}", cpu_ms=2 * TIMEOUT_MS)

    def images_running() -> bool:
        return all((stack.api.status(job) or {}).get("state") == "running" for job in images)

    assert wait_for(lambda: len(ledger.counts("start")) == 2 and images_running(), timeout=30), busy.output[
        -3000:
    ]
    started = time.monotonic()
    # A second worker whose keeper would take the busy one's jobs if its heartbeat went stale.
    rescuer = groups(env, processes=1, threads=2)
    rescuer.wait_ready()
    done = wait_for(
        lambda: (
            len(ledger.counts("end")) == 2
            and all(
                (stack.api.status(job) or {}).get("state") in ("succeeded", "failed", "dead")
                for job in images
            )
        ),
        timeout=90,
    )
    busy_for = time.monotonic() - started
    watch.stopped.set()
    watch.join(timeout=5)
    statuses = [stack.api.status(job) or {} for job in images]
    busy_age, rescuer_age = (
        watch.max_age_ms.get(worker_id(redis_client, stack.broker.namespace, g.workers()[0]), -1.0)
        for g in (busy, rescuer)
    )
    figures = report(
        "heartbeats under CPU load",
        f"3 threads busy for {busy_for:.1f}s after the rescuer started (an AVIF encode of 6 MP, "
        f"2 x {2 * TIMEOUT_MS} ms of pure-Python CPU time); WORKER_HEARTBEAT_TIMEOUT_MS={TIMEOUT_MS}",
        f"oldest heartbeat of the busy worker: {busy_age:.0f} ms, of the rescuer: {rescuer_age:.0f} ms",
        f"image jobs: {[(s.get('state'), s.get('attempts'), s.get('error_code')) for s in statuses]}; "
        f"ledger starts {ledger.counts('start')}",
    )
    assert done, figures + busy.output[-3000:]
    assert all(s.get("state") == "succeeded" and s.get("attempts") == 1 for s in statuses), figures
    for status in statuses:
        assert [h["state"] for h in status["history"]].count("running") == 1, status["history"]
    assert set(ledger.counts("start").values()) == {1} and set(ledger.counts("end").values()) == {1}, figures
    assert RECOVERY_LINE not in busy.output + rescuer.output, figures
    assert 0 <= busy_age < TIMEOUT_MS, figures
    # A worker process that ran an image job does not exit on SIGTERM (see
    # test_shutdown.py::test_a_worker_that_ran_an_image_job_exits_on_sigterm): no 30 s teardown.
    busy.kill_all()
