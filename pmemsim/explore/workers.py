"""Forked worker processes that explore work items, with nothing shared but two pipes each.

multiprocessing's Pool respawns a worker that dies and shares a queue lock between workers:
a worker killed while holding it (a SIGKILL for one stuck in a C call, a SIGTERM at the
wrong moment) leaves every other process waiting on that lock for ever. These workers are
plain ``os.fork`` children: the parent hands each one item at a time over its own pipe and
reads the answer from another, so stopping one (SIGTERM, then SIGKILL) can block nobody.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import scratch
from . import frames
from .jobs import MAX_JOBS, check_jobs

__all__ = ["MAX_JOBS", "Workers", "check_jobs", "fork", "signals_blocked"]


_STOPPING = (signal.SIGINT, signal.SIGTERM)

#: Seconds a worker whose pipe ended is given to exit before its error is worded: a dying
#: process closes its files first, and is seen to exit a moment later.
DYING = 5.0


class _Stopped(BaseException):
    """SIGTERM in a worker: unwinds through finally blocks (a recovery's temporary folder).
    Not SystemExit, which a recovery's own sys.exit() raises and which is then its verdict."""


def _exit_quietly(signum: int, frame: object) -> None:
    raise _Stopped(signum)


class _Worker:
    """A forked worker as its parent sees it: its pid and its two pipes."""

    def __init__(self, pid: int, send_fd: int, receive_fd: int) -> None:
        self.pid = pid
        self.send_fd = send_fd
        self.receive_fd = receive_fd
        # Its exit, watched: a process its recovery started may hold the answers' pipe open
        # (no end of file) long after the worker died.
        try:
            self.exited_fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.exited_fd = -1  # (no pidfd: end of file alone says it died)
        self.reader = frames.Reader(receive_fd, ended=self.exited_fd)
        self.item: int | None = None

    def watched(self) -> list[int]:
        """What to poll for its answers: its pipe, and its exit where that can be seen."""
        return [fd for fd in (self.receive_fd, self.exited_fd) if fd >= 0]

    def died(self) -> RuntimeError:
        """The error of a worker whose pipe ended before it answered, with how it ended.

        Its pipe can end before its exit can be seen: a dying process's files are closed
        before it becomes a zombie (a loaded machine may run the parent in between), and
        a recovery may close the pipe and go on. So its exit is awaited, up to
        :data:`DYING` seconds, before its end is worded."""
        if not self._exited(DYING):
            return RuntimeError(
                f"worker process {self.pid} closed its pipe before it answered and was "
                f"still running {DYING:g} s later"
            )
        how = "ended"  # (reaped elsewhere: how is not known)
        with contextlib.suppress(ChildProcessError, OSError):
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None:
                killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
                how = (
                    f"was killed by signal {info.si_status}"
                    if killed
                    else f"ended (exit status {info.si_status})"
                )
        return RuntimeError(f"worker process {self.pid} {how} before it answered")

    def close(self) -> None:
        """Close its pipes (once): an idle worker exits when no process holds them open."""
        for fd in (self.send_fd, self.receive_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.send_fd = self.receive_fd = -1

    def stop(self, wait: float) -> None:
        """Close its pipes (an idle worker exits), then SIGTERM, then SIGKILL whatever is
        still running ``wait`` seconds later; then end its process group (what its recovery
        runs started) and reap it."""
        self.close()
        if not self._exited(0.05):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if not self._exited(wait):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        # Before the reaping: until then no other process can have its pid as a group.
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        status = -1  # (reaped elsewhere: how it ended is not known)
        with contextlib.suppress(ChildProcessError):
            status = os.waitpid(self.pid, 0)[1]
        if self.exited_fd >= 0:
            os.close(self.exited_fd)
            self.exited_fd = -1
        if status < 0 or os.WIFSIGNALED(status):
            # Killed, it removed none of its folders (a recovery's): dead now, they are
            # ours to remove, as no later run may come to reclaim them.
            scratch.sweep()

    def _exited(self, wait: float) -> bool:
        """Whether it exited within ``wait`` seconds (left unreaped)."""
        return frames.exited(self.pid, self.exited_fd, wait)


def fork(siblings: Sequence[int] = ()) -> _Worker | tuple[int, int]:
    """Fork a worker with a pipe each way. Here: the :class:`_Worker`. In the worker: the
    fds it reads from and writes to, once it leads a process group of its own (so that
    whatever its recovery runs start ends with it), holds none of ``siblings`` (the parent's
    ends of earlier workers' pipes: held here, they would keep those workers from seeing
    their pipe close) and has its signals set (Ctrl-C is the parent's to handle; SIGTERM
    exits through finally blocks). Call it with SIGINT and SIGTERM blocked
    (:func:`signals_blocked`): the worker unblocks them once its handlers are set."""
    sys.stdout.flush()  # else what is buffered would be written twice
    sys.stderr.flush()
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        for fd in (from_parent, to_parent, *siblings):
            os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
        return to_child, from_child
    with contextlib.suppress(OSError):  # here too: the group exists before we may end it
        os.setpgid(pid, pid)
    os.close(to_child)
    os.close(from_child)
    return _Worker(pid, from_parent, to_parent)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while workers are forked: one arriving halfway would leave a
    worker nobody stops."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _spawn(start: Callable[[], Callable[[Any], Any]], siblings: Sequence[int]) -> _Worker:
    """A worker serving ``start()``'s function on the items it is sent."""
    got = fork(siblings)
    if isinstance(got, _Worker):
        return got
    code = 1  # pragma: no cover - runs in the child (exits with os._exit)
    try:  # pragma: no cover
        code = _serve(*got, start)
    finally:  # pragma: no cover
        scratch.remove_left()  # (a stop's signal may have come between make and its try)
        os._exit(code)


def _serve(receive: int, to_parent: int, start: Callable[[], Callable[[Any], Any]]) -> int:
    work = start()
    reader = frames.Reader(receive)
    while True:
        try:
            item = reader.get()
        except EOFError:
            return 0
        try:
            answer: tuple[str, Any] = ("ok", work(item))
        except Exception as exc:
            answer = ("error", exc)
        try:
            frames.send(to_parent, answer)
        except (pickle.PicklingError, TypeError, AttributeError):
            unpicklable = RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")
            frames.send(to_parent, ("error", unpicklable))


class Timeout(Exception):
    """No worker answered in time; ``done`` results were yielded, the rest were not."""

    def __init__(self, done: int) -> None:
        super().__init__(f"no answer after {done} work item(s)")
        self.done = done


class Workers:
    """``jobs`` forked workers running ``start()``'s function on each item (``start`` runs
    once per worker, in the worker). :meth:`map` yields the answers in item order."""

    def __init__(self, jobs: int, start: Callable[[], Callable[[Any], Any]]) -> None:
        self.jobs = jobs
        self.start = start

    def map(
        self, items: Sequence[Any], timeout: Callable[[], float | None] = lambda: None
    ) -> Iterator[Any]:
        """The answers in item order. ``timeout()`` bounds each wait for the next answer;
        past it, :class:`Timeout` is raised (the workers are stopped either way)."""
        workers: list[_Worker] = []
        with signals_blocked():
            for _ in range(min(self.jobs, len(items))):
                held = [fd for w in workers for fd in (w.send_fd, w.receive_fd)]
                workers.append(_spawn(self.start, held))
        try:
            yield from self._run(workers, items, timeout)
        finally:
            for w in workers:  # every pipe first: idle workers all exit at once
                w.close()
            for w in workers:
                w.stop(2.0)

    def _run(
        self, workers: list[_Worker], items: Sequence[Any], timeout: Callable[[], float | None]
    ) -> Iterator[Any]:
        sel = selectors.DefaultSelector()
        answers: dict[int, Any] = {}
        given = 0
        done = 0
        for w in workers:
            if given < len(items):
                frames.send(w.send_fd, items[given])
                w.item = given
                given += 1
                for fd in w.watched():
                    sel.register(fd, selectors.EVENT_READ, w)
        try:
            while done < len(items):
                ready = sel.select(timeout())
                if not ready:
                    raise Timeout(done)
                for w in {id(key.data): key.data for key, _ in ready}.values():
                    try:
                        status, value = w.reader.get()
                    except EOFError:
                        raise w.died() from None
                    if status == "error":
                        raise value
                    assert w.item is not None
                    answers[w.item] = value
                    w.item = None
                    if given < len(items):
                        frames.send(w.send_fd, items[given])
                        w.item = given
                        given += 1
                while done in answers:
                    yield answers.pop(done)
                    done += 1
        finally:
            sel.close()
