"""A streamed check's crash points shared among processes that all go on recording it.

With ``jobs`` > 1, once a check has done enough work inline, the process forks ``jobs - 1``
workers *at the crash point it has reached*: each is a copy of it halfway through the
workload (its simulator, its recorder, the decision trees and images it explored so far)
and goes on running the workload from there, as the parent does. Nothing but chunk numbers
and reports crosses a pipe: no crash state is shipped.

The parent records every crash point (capturing its state, self-checking it) and cuts the
points into chunks of about :data:`CHUNK` images (a lazy crash point counts one; a point
heavier than two chunks whose images can be sliced, exhaustive, is cut into slices, a chunk
each). It hands each chunk out through a pipe that every process reads, and the kernel gives
each chunk to one reader: a worker that is done with a chunk takes the next one, runs the
workload on to it (capturing only the states of that chunk's points and the one before:
``record(states=...)``) and explores it. The parent keeps the points of the chunks whose
reports are still to come; past :data:`AHEAD` chunks per process it takes chunks itself
until the oldest is in. It merges the reports in point order, so the result is the one
``jobs=1`` gives; only the recovery runs differ (a process runs an image again that another
judged).

The workload runs on in every worker: what it does besides its stores to the pool (print,
write a file) happens once per process from the point where they forked.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from .. import scratch
from . import frames
from .workers import _Worker, fork, signals_blocked

if TYPE_CHECKING:
    from .engine import Explorer, Session, StateReport, _Recent
    from .trace import CrashPoint

__all__ = ["AHEAD", "CHUNK", "GRACE", "PARENT_TAKES", "Shares", "WorkerMismatch"]

#: Images (a lazy crash point counts one) per chunk: enough that a chunk's reports are one
#: message, few enough that a slow stretch is shared out.
CHUNK = 256
#: Chunks the parent keeps, per process, whose reports are still to come.
AHEAD = 4
#: The most slices one crash point is cut into, per process.
SLICES_PER_JOB = 32
#: Whether the parent explores chunks no worker has taken yet (once :data:`AHEAD` chunks
#: per process are out, and when its recording is over). Off, the workers explore every
#: chunk however late they start: tests that need a worker to run recovery turn it off.
PARENT_TAKES = True
#: Seconds past the check's deadline (and one run's time) before a worker that has not
#: sent the chunk the parent waits for counts as stuck.
GRACE = 5.0

#: A chunk as handed out: its number, crash points [first, end), and slice part of parts.
_CHUNK = struct.Struct("<QQQII")

#: One piece of a chunk, explored: crash point, slice, the point's operation count (the
#: parent compares it with its own: the same run recorded), and the reports.
Entry = tuple[int, int, int, list["StateReport"]]


class WorkerMismatch(RuntimeError):
    """A worker recorded a different run than this process: the workload is not
    deterministic (it reads the clock, unseeded randomness, state from an earlier run)."""


@dataclass
class _Chunk:
    number: int
    first: int
    end: int = 0
    part: int = 0
    parts: int = 1
    closed: bool = False
    #: Its pieces' reports, once explored (here or by a worker).
    entries: list[Entry] | None = None

    def pack(self) -> bytes:
        return _CHUNK.pack(self.number, self.first, self.end, self.part, self.parts)


class Shares:
    """The crash points of a streamed check from the one it forked at (:meth:`start`),
    shared among ``jobs`` processes; ``take`` merges a report (in the parent)."""

    def __init__(
        self,
        jobs: int,
        session: Session,
        window: _Recent,
        explorer: Explorer,
        seen: set[bytes],
        take: Callable[[StateReport], None],
    ) -> None:
        self.jobs = jobs
        self.s = session
        self.window = window
        self.explorer = explorer
        self.seen = seen
        self.take = take
        self.grace = GRACE
        #: Which process this is: 0 the parent, 1 to jobs - 1 a worker.
        self.me = 0
        #: The pipe of chunks handed out (every process reads it; the parent writes it).
        self.claims = -1
        self.handing = -1
        # A worker's: the chunk it took (None: no more), its entries, where they go.
        self.mine: _Chunk | None = None
        self.out: list[Entry] = []
        self.fd = -1
        # The parent's: its workers, the chunks not merged yet (oldest first; the last one
        # is being cut while not closed), and the images in the one being cut.
        self.peers: list[_Peer] = []
        self.pending: deque[_Chunk] = deque()
        self.numbered = 0
        self.load = 0
        #: The workers were stopped (stuck past the deadline): all is explored here.
        self.alone = False
        self.note = ""

    @property
    def worker(self) -> bool:
        return self.me != 0

    def wants(self, i: int) -> bool:
        """Whether this process needs crash point ``i``'s state (record's ``states``)."""
        if not self.worker:
            return True
        mine = self.mine
        return mine is not None and mine.first - 1 <= i < mine.end

    def start(self) -> None:
        """Fork the workers, here at the crash point the recording has reached."""
        self.claims, self.handing = os.pipe()
        # Shared by every process (one open file): each polls before it reads.
        os.set_blocking(self.claims, False)
        with signals_blocked():
            for k in range(1, self.jobs):
                held = [fd for p in self.peers for fd in (p.w.send_fd, p.w.receive_fd)]
                got = fork([*held, self.handing])
                if isinstance(got, _Worker):
                    frames.widen(got.receive_fd)
                    self.peers.append(_Peer(got))
                    continue
                receive, self.fd = got  # pragma: no cover - in a worker from here on
                os.close(receive)  # pragma: no cover
                self.me, self.peers, self.handing = k, [], -1  # pragma: no cover
                return  # pragma: no cover

    # -- a crash point reached -----------------------------------------------------------

    def point(self, point: CrashPoint) -> None:
        if self.worker:
            self._explore_mine(point)
            return
        weight, sliceable = self.s.weight(point.index)
        if sliceable and weight > 2 * CHUNK and not self.alone:
            if self.pending and not self.pending[-1].closed:
                self._close()
            parts = min(-(-weight // CHUNK), SLICES_PER_JOB * self.jobs)
            for part in range(parts):
                self._cut(point, part, parts)
                self._close()
            return
        self._cut(point, 0, 1)
        self.load += max(weight, 1)
        if self.load >= CHUNK:
            self._close()

    # -- a worker's side ---------------------------------------------------------------

    def _explore_mine(self, point: CrashPoint) -> None:  # pragma: no cover - in a worker
        i = point.index
        while True:
            mine = self.mine
            if mine is None and self.claims >= 0:
                self.mine = self._claim(block=True)
                continue
            if mine is None or i < mine.first:
                return
            if i >= mine.end:
                raise WorkerMismatch(f"chunk {mine.number} was handed out after its points")
            reports = list(self.explorer.points(i, i + 1, mine.part, mine.parts, seen=self.seen))
            self.out.append((i, mine.part, point.operation, reports))
            if i < mine.end - 1:
                return
            out, self.out = self.out, []
            frames.send(self.fd, ("done", mine.number, out))
            self.mine = None

    def _claim(self, block: bool) -> _Chunk | None:
        """The next chunk handed out; None when there is none now (``block`` false) or
        none will come (the pipe is closed: then :attr:`claims` is -1)."""
        while True:
            try:
                data = os.read(self.claims, _CHUNK.size)
            except BlockingIOError:
                if not block:
                    return None
                watch = select.poll()
                watch.register(self.claims, select.POLLIN)
                watch.poll()
                continue
            if not data:
                os.close(self.claims)
                self.claims = -1
                return None
            assert len(data) == _CHUNK.size  # written and read whole (below PIPE_BUF)
            number, first, end, part, parts = _CHUNK.unpack(data)
            return _Chunk(number, first, end, part, parts)

    def _ran(self, count: int) -> tuple[int, int]:
        """How many crash points and operations a recording of ``count`` points ran."""
        return count, self.window[count - 1].operation if count else 0

    def exit(self, count: int, error: BaseException | None) -> NoReturn:  # pragma: no cover
        """A worker's end (its recording is over): how many points and operations it
        recorded, or what went wrong."""
        code = 1
        try:
            if error is None:
                frames.send(self.fd, ("end", self._ran(count)))
                code = 0
            elif not isinstance(error, BrokenPipeError):
                with contextlib.suppress(Exception):
                    frames.send(self.fd, ("error", _picklable(error)))
        finally:
            scratch.remove_left()  # (a stop's signal may have come between make and its try)
            os._exit(code)

    # -- the parent's side -------------------------------------------------------------

    def _cut(self, point: CrashPoint, part: int, parts: int) -> None:
        """Add a piece to the chunk being cut."""
        if not self.pending or self.pending[-1].closed:
            i = point.index
            self.pending.append(_Chunk(self.numbered, i, i + 1, part, parts))
            self.numbered += 1
            self._hold()
        self.pending[-1].end = point.index + 1

    def _close(self) -> None:
        """The chunk being cut is complete: hand it out (explore it, when alone)."""
        ch = self.pending[-1]
        ch.closed = True
        self.load = 0
        if self.alone:
            self._explore(ch)
        else:
            os.write(self.handing, ch.pack())
        self._progress(limit=AHEAD * self.jobs)

    def _explore(self, ch: _Chunk) -> None:
        """Explore chunk ``ch`` here (its points are kept)."""
        entries: list[Entry] = []
        for i in range(ch.first, ch.end):
            reports = list(self.explorer.points(i, i + 1, ch.part, ch.parts, seen=self.seen))
            entries.append((i, ch.part, self.s.points[i].operation, reports))
        if self.note:
            for rep in (r for _, _, _, reports in entries for r in reports):
                rep.note, self.note = self.note, ""
                break
        ch.entries = entries

    def _chunk(self, number: int) -> _Chunk:
        for ch in self.pending:
            if ch.number == number:
                return ch
        raise WorkerMismatch(f"chunk {number} is not waiting for its reports")

    def _fill(self, number: int, entries: list[Entry]) -> None:
        ch = self._chunk(number)
        got = [(i, part, op) for i, part, op, _ in entries]
        want = [(i, ch.part, self.s.points[i].operation) for i in range(ch.first, ch.end)]
        if got != want or ch.entries is not None:
            raise WorkerMismatch(
                f"a worker process recorded crash points {got[:3]} (point, slice, "
                f"operations) where this one recorded {want[:3]}: the workload is not "
                "deterministic"
            )
        ch.entries = entries

    def _collect(self, timeout: float | None) -> bool:
        """Take in what the workers sent, waiting up to ``timeout`` seconds (None: no
        limit) for something; False if nothing came or no worker is left."""
        live = {fd: p for p in self.peers if not p.ended for fd in p.w.watched()}
        if not live:
            return False
        watch = select.poll()
        for fd in live:
            watch.register(fd, select.POLLIN)
        ready = watch.poll(None if timeout is None else max(0.0, timeout) * 1000)
        for peer in {id(live[fd]): live[fd] for fd, _ in ready}.values():
            while True:
                msg = peer.get()
                if msg[0] == "done":
                    self._fill(msg[1], msg[2])
                # A read takes in whatever the pipe holds: the frames after this one may
                # be here already, where no poll sees them.
                if peer.ended or not peer.w.reader.buf:
                    break
        return bool(ready)

    def _merge(self) -> None:
        pending = self.pending
        while pending and pending[0].closed and pending[0].entries is not None:
            for _, _, _, reports in pending.popleft().entries or ():
                for rep in reports:
                    self.take(rep)
        self._hold()

    def _hold(self) -> None:
        """Keep the points of the chunks not merged yet."""
        self.window.keep_from(self.pending[0].first if self.pending else None)

    def _progress(self, limit: int) -> None:
        """Take in what came and merge what can be; while more than ``limit`` chunks wait,
        take chunks handed out and not taken yet, else wait for the workers."""
        while True:
            self._collect(0)
            self._merge()
            if len(self.pending) <= limit:
                return
            if self.alone:
                head = self.pending[0]
                if head.closed and head.entries is None:
                    self._explore(head)
                    continue
                return  # (only the chunk being cut is left)
            got = self._claim(block=False) if self.claims >= 0 and PARENT_TAKES else None
            if got is not None:
                self._explore(self._chunk(got.number))
                continue
            if not self._collect(self._wait()):
                self._stop_workers()

    def _wait(self) -> float | None:
        """Seconds to wait for a worker's chunk: past the check's deadline (workers stop
        taking work there) by a run's time and the grace; no limit without a deadline."""
        s = self.s
        if s.deadline is None:
            return None
        return s.deadline + (s.timer.seconds or 0.0) + self.grace - time.monotonic()

    def _stop_workers(self) -> None:
        """No worker answers (stuck past the deadline where no signal reaches it, in a C
        call?) or none is left: stop them and explore the rest here."""
        if any(not p.ended for p in self.peers):
            self.note = (
                "a worker process was still busy past the check's time budget (stuck where "
                "no signal reaches it, in a C call?) and was stopped"
            )
        self.stop()
        self.alone = True

    def finish(self, count: int) -> None:
        """The parent's recording ended after ``count`` points: the last chunk handed out,
        every chunk merged, every worker recorded as many points."""
        if self.pending and not self.pending[-1].closed:
            self._close()
        if self.handing >= 0:
            os.close(self.handing)  # the workers take what is left, then run to the end
            self.handing = -1
        self._progress(limit=0)
        for p in self.peers:
            while not p.ended:
                if not self._collect(self._wait()):
                    return
            if p.ran != self._ran(count):
                (points, ops), (mine, my_ops) = p.ran, self._ran(count)
                raise WorkerMismatch(
                    f"a worker process recorded {points} crash point(s) and {ops} "
                    f"operation(s) where this one recorded {mine} and {my_ops}: the workload "
                    "is not deterministic"
                )

    def stop(self) -> None:
        """Stop the workers (whatever they are doing) and their process groups."""
        if self.handing >= 0:
            os.close(self.handing)
            self.handing = -1
        for p in self.peers:
            p.w.close()
        for p in self.peers:
            p.w.stop(2.0)
        self.peers = []
        if self.claims >= 0:
            os.close(self.claims)
            self.claims = -1


class _Peer:
    """A worker as the parent reads it."""

    def __init__(self, w: _Worker) -> None:
        self.w = w
        self.ended = False
        #: Crash points and operations it recorded (once ended).
        self.ran = (-1, -1)

    def get(self) -> Any:
        try:
            msg = self.w.reader.get()
        except EOFError:
            raise self.w.died() from None
        if msg[0] == "error":
            raise msg[1]
        if msg[0] == "end":
            self.ended, self.ran = True, msg[1]
        return msg


def _picklable(error: BaseException) -> BaseException:
    """``error``, or a RuntimeError saying what it was if it cannot travel."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
