"""A stop event that signal handlers may set.

``threading.Event.set()`` takes the event's lock. Python runs signal handlers
in the main thread between bytecodes, so a handler calling ``set()`` while
the main thread is inside ``Event.wait()`` holding that same lock deadlocks.
This event is set by storing a flag and writing one byte to a non-blocking
pipe, neither of which takes a lock; waiting is ``select()`` on the pipe.
"""

from __future__ import annotations

import contextlib
import os
import select


class StopEvent:
    def __init__(self) -> None:
        self._flag = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        """Safe from a signal handler and from any thread."""
        self._flag = True
        # After close() the descriptor's number may belong to another file.
        if self._write >= 0:
            # A full pipe (BlockingIOError) already holds a wake-up.
            with contextlib.suppress(OSError):
                os.write(self._write, b"\0")

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds pass; return whether it is set."""
        if not self._flag and self._read >= 0:
            # select() is resumed after a signal handler runs (PEP 475); the
            # handler's byte then ends the wait.
            select.select([self._read], [], [], None if timeout is None else max(0.0, timeout))
        return self._flag

    def close(self) -> None:
        fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
