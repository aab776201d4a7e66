"""Decoding and transforming in a small pool of child processes: a hostile file kills a child, not the worker.

The pipeline (:func:`~jobs.images.pipeline.process`) is pure, so it runs unchanged in a
pebble ``ProcessPool`` started by a forkserver (the worker process is multi-threaded:
plain ``fork`` could copy a lock held by another thread). One pool per process and
policy, created on the first image job, reused by every later one, closed at exit.

- A child that crashes or is killed (segfault, SIGKILL, the OOM killer) fails the job
  with ``FILE_4004``, not retried: the next job gets a fresh child.
- The job's time limit is a hard limit: when it runs out pebble kills the child, even
  inside C code, and the job fails with ``SRV_6005`` (retried).
- ``IMAGE_SANDBOX_MAX_MEMORY_MB`` caps each child's address space, so an allocation
  that explodes fails in the child (``FILE_4004``) instead of starving the worker.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util
import os
import resource
import signal
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pebble import ProcessExpired, ProcessPool

from middleware.errors import FILE_4004, SRV_6001, SRV_6005, JobError

if TYPE_CHECKING:
    from ..settings import Settings
    from .pipeline import Limits, Outputs
    from .steps import Step

# The children's name in ps/top (/proc/PID/comm, at most 15 bytes).
CHILD_NAME: Final = "taatom-image"
# Extra wait beyond the time limit before the worker thread gives up on the pool by
# itself: pebble normally kills the child first (it checks every 0.1 s).
WAIT_GRACE_S: Final = 1.0
# Imported once in the forkserver, so a replacement child starts in milliseconds.
_PRELOAD: Final = ["jobs.images.pipeline"]


@dataclass(frozen=True)
class SandboxPolicy:
    """``processes``: children per worker process; ``max_memory_mb``: address space per child (0: none)."""

    processes: int
    max_memory_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxPolicy:
        return cls(settings.image_sandbox_processes, settings.image_sandbox_max_memory_mb)


class ImageSandbox:
    """Runs the pipeline in a child process with a hard deadline. Thread-safe."""

    def __init__(self, policy: SandboxPolicy) -> None:
        if policy.processes < 1:
            raise ValueError(
                "an image sandbox needs at least one process (0 means: run in the worker thread)"
            )
        self.policy = policy
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = None

    def process(
        self,
        data: bytes,
        steps: Sequence[Step],
        variants: Mapping[str, Sequence[Step]],
        limits: Limits,
        timeout_s: float,
    ) -> Outputs:
        """``pipeline.process`` in a child, killed after ``timeout_s`` seconds of work.

        Raises:
          JobError: the pipeline's own errors as raised in the child; ``FILE_4004`` when
            the child died or ran out of memory; ``SRV_6005`` when the time ran out;
            ``SRV_6001`` when the pool itself broke (it is replaced for the next job).
        """
        if timeout_s <= 0:
            raise JobError(SRV_6005, "time limit exceeded before the image could be decoded")
        pool = self._running_pool()
        future = pool.schedule(process_in_child, args=(data, steps, variants, limits), timeout=timeout_s)
        try:
            # Bounded by the deadline too: a job queued behind busy children has no
            # pebble timeout running yet.
            return future.result(timeout=timeout_s + WAIT_GRACE_S)
        except TimeoutError as exc:
            raise JobError(
                SRV_6005,
                f"image processing exceeded its time limit ({timeout_s:.1f} s); the child was killed",
            ) from exc
        except ProcessExpired as exc:
            raise JobError(
                FILE_4004, f"the image decoder crashed (child process ended with code {exc.exitcode})"
            ) from exc
        except (BrokenProcessPool, CancelledError) as exc:
            self._retire(pool)
            raise JobError(SRV_6001, "the image sandbox broke; it is restarted") from exc
        finally:
            # Also when this thread is interrupted (Dramatiq's TimeLimitExceeded): a
            # cancelled running task has its child killed by the pool.
            if not future.done():
                future.cancel()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop the children (their work is abandoned) and the pool's threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join(timeout=5)

    def _running_pool(self) -> ProcessPool:
        with self._lock:
            if self._pool is None or not self._pool.active:
                if self._pool is not None:
                    _stop_in_background(self._pool)
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(_PRELOAD)
                self._pool = ProcessPool(
                    max_workers=self.policy.processes,
                    initializer=init_child,
                    initargs=(self.policy.max_memory_mb,),
                    context=context,
                )
            return self._pool

    def _retire(self, pool: ProcessPool) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        _stop_in_background(pool)


def _stop_in_background(pool: ProcessPool) -> None:
    # stop() joins the pool's threads: not on a job's thread.
    threading.Thread(target=pool.stop, name="image-sandbox-stop", daemon=True).start()


class _Registry:
    """This process's sandboxes, one per policy."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sandboxes: dict[SandboxPolicy, ImageSandbox] = {}

    def forget(self) -> None:
        # In a forked child: the parent's pools (and their threads) are not ours.
        self.lock = threading.Lock()
        self.sandboxes = {}


_registry = _Registry()
os.register_at_fork(after_in_child=_registry.forget)


def sandbox_for(policy: SandboxPolicy) -> ImageSandbox:
    """This process's sandbox for ``policy``; its pool starts on the first job."""
    with _registry.lock:
        sandbox = _registry.sandboxes.get(policy)
        if sandbox is None:
            if not _registry.sandboxes:
                # A Dramatiq worker process is a multiprocessing child: it never
                # runs atexit hooks, and multiprocessing's exit handler joins the
                # pool's children before its plain finalizers run. A finalizer
                # with a priority runs first, so the worker can exit.
                multiprocessing.util.Finalize(None, close_all, exitpriority=10)
            sandbox = _registry.sandboxes[policy] = ImageSandbox(policy)
        return sandbox


@atexit.register
def close_all() -> None:
    """Stop every sandbox of this process (at exit; also safe to call earlier)."""
    with _registry.lock:
        sandboxes = list(_registry.sandboxes.values())
        _registry.sandboxes.clear()
    for sandbox in sandboxes:
        sandbox.close()


# --- in the child ------------------------------------------------------------------------


def init_child(max_memory_mb: int) -> None:
    """Prepare a fresh child: a name, a memory cap, immediate SIGTERM, bomb warnings as errors."""
    from .decode import escalate_bomb_warnings

    # pebble stops a timed-out child with SIGTERM and waits 3 s before SIGKILL; its own
    # handler would only run once the decoder returns to Python. The default action
    # ends the child at once, even inside C code.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):  # not Linux: the name is cosmetic
        Path("/proc/self/comm").write_text(CHILD_NAME)
    if max_memory_mb:
        limit = max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    escalate_bomb_warnings()


def process_in_child(
    data: bytes, steps: Sequence[Step], variants: Mapping[str, Sequence[Step]], limits: Limits
) -> Outputs:
    """The pipeline, with running out of memory reported as the file's fault."""
    from .pipeline import process

    try:
        return process(data, steps, variants, limits)
    except MemoryError:
        raise JobError(
            FILE_4004, "the image needs more memory than a decoder may use (IMAGE_SANDBOX_MAX_MEMORY_MB)"
        ) from None
