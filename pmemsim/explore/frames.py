"""Frames over a pipe between pmemsim and a worker process it forked: each message a
pickle behind its length, so either end reads whole messages whatever the pipe splits.

Both kinds of worker use them: exploration's (:mod:`pmemsim.explore.workers`) and
check-log's checker workers (:mod:`pmemsim.pmlog.workers`), which send only tuples of
numbers, strings and bytes, as :mod:`marshal` (``dumps``/``loads``): built in, where
importing pickle costs a short check a millisecond. A library checker's worker, a new
interpreter, imports this module while pmemsim starts: it imports no more than it uses."""

from __future__ import annotations

import posix  # (os's C half: a worker imports no os, 6.4 million instructions of its start)
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Reader", "exited", "send", "widen"]

#: A frame's length, before it: 8 bytes, little endian.
_LEN = 8


def send(fd: int, obj: object, dumps: Callable[[Any], bytes] | None = None) -> None:
    """Write ``obj`` as one frame (blocking until the pipe took all of it), pickled or
    made bytes by ``dumps``."""
    if dumps is None:
        import pickle

        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        data = dumps(obj)
    view = memoryview(len(data).to_bytes(_LEN, "little") + data)
    while view:
        view = view[posix.write(fd, view) :]


def widen(fd: int, size: int = 1 << 20) -> None:
    """Make room in a pipe for more than Linux's default 64 KiB (where the writer would
    otherwise wait on the reader); nothing where that cannot be done."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError):
        pass


def exited(pid: int, ended: int, wait: float) -> bool:
    """Whether the worker ``pid`` (a child of this process, left unreaped) exits within
    ``wait`` seconds; ``ended``: its pidfd, readable once it has exited, or -1 (then polled:
    an idle worker exits within a millisecond of its pipe closing)."""
    until = time.monotonic() + wait
    pause = 0.0005
    while True:
        try:
            if posix.waitid(posix.P_PID, pid, posix.WEXITED | posix.WNOHANG | posix.WNOWAIT):
                return True
        except ChildProcessError:
            return True
        left = until - time.monotonic()
        if left <= 0:
            return False
        if ended >= 0:
            watch = select.poll()
            watch.register(ended, select.POLLIN)
            watch.poll(max(left * 1000, 1))
            continue
        time.sleep(min(pause, left))
        pause = min(2 * pause, 0.01)


class Reader:
    """The frames written to a pipe, in order, with a deadline per frame if wanted.
    ``loads``: what makes a message of a frame's bytes (else pickle's). ``ended``: a
    descriptor that becomes readable when the writer has ended (a pidfd): the pipe then
    ends with what it holds, even where a process the writer started keeps it open."""

    def __init__(
        self, fd: int, loads: Callable[[bytes], Any] | None = None, ended: int = -1
    ) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.loads = loads
        self.ended = ended
        # poll, not select: select() refuses descriptors numbered 1,024 and up, which a
        # process with many files open (a long test run) hands out.
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        if ended >= 0:
            self._poll.register(ended, select.POLLIN)

    def _await(self, deadline: float | None, wake: Callable[[float], float] | None) -> bool:
        """Until there is something to read (TimeoutError past ``deadline``): False when
        nothing is left to read, the writer having ended. ``wake(now)`` is called at the
        times it returns, for what the caller does while it waits."""
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError
            until = deadline
            if wake is not None:
                look = wake(now)
                until = look if until is None else min(until, look)
            ready = self._poll.poll(None if until is None else max(until - now, 0) * 1000)
            if ready:
                # What the writer wrote before it ended is read first.
                return any(fd == self.fd for fd, _ in ready)

    def _fill(self, n: int, deadline: float | None, wake: Callable[[float], float] | None) -> bool:
        while len(self.buf) < n:
            waits = deadline is not None or wake is not None or self.ended >= 0
            if waits and not self._await(deadline, wake):
                return False
            chunk = posix.read(self.fd, 1 << 16)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def waiting(self) -> bool:
        """Whether :meth:`get` would wait now: nothing to read, and the writer still there."""
        return not self.buf and not self._poll.poll(0)

    def get(
        self, deadline: float | None = None, wake: Callable[[float], float] | None = None
    ) -> Any:
        """The next message; EOFError when the other end is gone (before or within it),
        TimeoutError past ``deadline`` (``time.monotonic()``)."""
        if not self._fill(_LEN, deadline, wake):
            raise EOFError
        n = int.from_bytes(self.buf[:_LEN], "little")
        if not self._fill(_LEN + n, deadline, wake):
            raise EOFError
        data = bytes(self.buf[_LEN : _LEN + n])
        del self.buf[: _LEN + n]
        if self.loads is not None:
            return self.loads(data)
        import pickle

        return pickle.loads(data)
