"""Frames over a pipe between pmemsim and a worker process it forked: each message a
pickle behind its length, so either end reads whole messages whatever the pipe splits.

Both kinds of worker use them: exploration's (:mod:`pmemsim.explore.workers`) and
check-log's checker workers (:mod:`pmemsim.pmlog.workers`)."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Reader", "send", "widen"]

_LEN = struct.Struct("<Q")


def send(fd: int, obj: object) -> None:
    """Write ``obj`` as one frame (blocking until the pipe took all of it)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def widen(fd: int, size: int = 1 << 20) -> None:
    """Make room in a pipe for more than Linux's default 64 KiB (where the writer would
    otherwise wait on the reader); nothing where that cannot be done."""
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


class Reader:
    """The frames written to a pipe, in order, with a deadline per frame if wanted."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        # poll, not select: select() refuses descriptors numbered 1,024 and up, which a
        # process with many files open (a long test run) hands out.
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def _await(self, deadline: float | None, wake: Callable[[float], float] | None) -> None:
        """Until there is something to read (TimeoutError past ``deadline``); ``wake(now)``
        is called at the times it returns, for what the caller does while it waits."""
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError
            until = deadline
            if wake is not None:
                look = wake(now)
                until = look if until is None else min(until, look)
            assert until is not None
            if self._poll.poll(max(until - now, 0) * 1000):
                return

    def _fill(self, n: int, deadline: float | None, wake: Callable[[float], float] | None) -> bool:
        while len(self.buf) < n:
            if deadline is not None or wake is not None:
                self._await(deadline, wake)
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def get(
        self, deadline: float | None = None, wake: Callable[[float], float] | None = None
    ) -> Any:
        """The next message; EOFError when the other end is gone (before or within it),
        TimeoutError past ``deadline`` (``time.monotonic()``)."""
        if not self._fill(_LEN.size, deadline, wake):
            raise EOFError
        (n,) = _LEN.unpack_from(self.buf)
        if not self._fill(_LEN.size + n, deadline, wake):
            raise EOFError
        data = bytes(self.buf[_LEN.size : _LEN.size + n])
        del self.buf[: _LEN.size + n]
        return pickle.loads(data)
