"""Worker log output: jobs' success lines are written in batches, everything else at once, in order."""

from __future__ import annotations

import io
import logging
import threading

from jobs.log_batching import BatchedStreamHandler
from middleware.job_log import OUTCOME
from tests.support.redis_inspect import wait_until


class CountingStream(io.StringIO):
    """Records each write, as a pipe to Dramatiq's main process would receive it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            self.writes.append(s)
        return super().write(s)


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test.batching.{id(handler)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return logger


def test_success_lines_wait_and_the_next_other_line_writes_them_first_in_order() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream, interval_s=60)
    log = _logger(handler)
    for n in range(3):
        log.info("job %d succeeded", n, extra=OUTCOME)
    assert stream.writes == []
    log.warning("retrying job 3")
    assert stream.writes == [
        "INFO job 0 succeeded\nINFO job 1 succeeded\nINFO job 2 succeeded\nWARNING retrying job 3\n"
    ]


def test_success_lines_are_written_together_within_the_interval() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream, interval_s=0.02)
    log = _logger(handler)
    for n in range(50):
        log.info("job %d succeeded", n, extra=OUTCOME)
    assert wait_until(lambda: stream.getvalue().count("\n") == 50, timeout=5)
    assert len(stream.writes) < 50
    assert stream.getvalue().splitlines() == [f"INFO job {n} succeeded" for n in range(50)]


def test_a_full_batch_is_written_at_once_and_close_writes_the_rest() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream, interval_s=60, max_lines=10)
    log = _logger(handler)
    for n in range(25):
        log.info("job %d succeeded", n, extra=OUTCOME)
    assert stream.getvalue().count("\n") == 20
    handler.close()
    assert stream.getvalue().count("\n") == 25


def test_worker_processes_get_the_batching_handler_for_dramatiqs_pipe() -> None:
    from jobs.logs import configure_logging
    from jobs.settings import Settings

    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    pipe = io.StringIO()
    try:
        root.handlers[:] = [logging.StreamHandler(pipe)]
        configure_logging(Settings.from_mapping({"LOG_FORMAT": "json"}), adopt_handlers=True)
        (handler,) = root.handlers
        assert isinstance(handler, BatchedStreamHandler) and handler.stream is pipe
        logging.getLogger("jobs.email").warning("written at once")
        assert "written at once" in pipe.getvalue()
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
