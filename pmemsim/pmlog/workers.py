"""Checker worker processes: a C library's function (or a Python function out of process)
judging image files that the worker keeps itself.

Each worker is a forked process with one image file per registered file, in a private
folder. This process streams it messages in batches, in the order the exploration chose the
images:

* ``("M", [(pool, line, content), ...])``: the lines whose all-persisted content changed
  since the worker's last move (its files then show the crash state the next images are
  made from);
* ``("I", patches, runs, markers, info)``: one image: the worker writes the lines the image
  deviates in (``patches``, the image's line options: ``content`` at ``[start, end)`` of
  ``pool``, as ``(content, _, _, pool, start, end)``), calls the checker once per run (a
  list of pools: one for a library, pmreorder's protocol), writes the lines back, and
  answers with the verdict of each run. ``markers`` (PMREORDER_MARKERS) and ``info`` (the
  crash, for Python checkers) are None when unchanged.

So an image costs this process a few small tuples, and the worker a few line copies into a
shared mapping of its files: no file is written here, no process started per image, and a
pool of any size costs what its crash points change.

A checker may write to its image file (libpmemobj's open does); inotify tells the worker
when someone opened one of its files for writing, and the worker puts that file's initial
content and the lines it was sent back into it (in place while it is the file the worker
made: :class:`~pmemsim.pmlog.slots.Refill`). A checker that crashes (SIGSEGV) or runs past its
time costs a restart: the new worker is brought to the state of the last batch answered
(:class:`Workers` keeps those lines), and the failed batch is judged again one image at a
time, so that the image that crashed or hung the checker is the one that gets that verdict.
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, InvalidArgumentError
from ..explore import frames
from ..markers import CrashInfo
from .checkers import (
    _TAIL,
    Crashed,
    Fault,
    FunctionChecker,
    LibChecker,
    TimedOut,
    _status,
    timed_out,
)
from .forked import end_group, fork
from .judging import Cand, Deviations, Judge, _file_names, _runs
from .slots import Refill, _copy, _Inotify

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint
    from .images import Pool
    from .waiting import Patience

__all__ = ["LibWorker", "Workers", "spare_loaded", "spare_worker"]

_PAGE = 4096
#: What a worker is judging, in a word of memory shared with this process (8 bytes, little
#: endian): its message number << _INDEX | the image's index in it.
_WORD = 8
_INDEX = 20


# -- in the worker ---------------------------------------------------------------------------


class _Files:
    """The worker's image files: one per pool, shared-mapped, kept at the state it was sent
    (the initial content plus every line moved)."""

    def __init__(self, folder: str, names: Sequence[str], pools: Sequence[Pool]) -> None:
        self.pools = list(pools)
        self.paths = [os.path.join(folder, n) for n in names]
        self.bpaths = [os.fsencode(p) for p in self.paths]
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []
        #: (pool, line) -> the content it was sent (what the file holds there).
        self.moved: dict[tuple[int, int], bytes] = {}
        #: (pool, line) -> the initial content read back from the source file.
        self.initial: dict[tuple[int, int], bytes] = {}
        self.notify: _Inotify | None = None
        self.watches: dict[int, int] = {}
        self.rebuilds = 0
        self.refills = [Refill(p) for p in self.pools]
        os.makedirs(folder, 0o700, exist_ok=True)
        try:
            self.notify = _Inotify()
        except (OSError, AttributeError):
            self.notify = None  # every image rebuilt: correct, slower
        for i in range(len(self.pools)):
            self._create(i)

    def _create(self, i: int) -> None:
        size, source, source_size = self.pools[i]
        path = self.paths[i]
        # Events of the file being replaced are not news.
        self.watches = {wd: j for wd, j in self.watches.items() if j != i}
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.ftruncate(fd, size)
        if source is not None and source_size:
            _copy(source, fd, min(size, source_size))
        m = mmap.mmap(fd, size, mmap.MAP_SHARED)
        if i < len(self.fds):
            with contextlib.suppress(OSError, BufferError):
                self.maps[i].close()
                os.close(self.fds[i])
            self.fds[i], self.maps[i] = fd, m
        else:
            self.fds.append(fd)
            self.maps.append(m)
        if self.notify is not None:
            try:
                self.watches[self.notify.watch(path)] = i
            except OSError:  # out of watches: no telling what a checker does
                self.notify.close()
                self.notify = None
        self._moved_into(i)

    def _renew(self, i: int) -> None:
        """Make file ``i`` right again after someone opened it for writing: in place when
        it is still the file made, else a new one."""
        if self.refills[i](self.paths[i], self.fds[i], self.maps[i]):
            self._moved_into(i)
        else:
            self._create(i)

    def _moved_into(self, i: int) -> None:
        m = self.maps[i]
        for (pool, line), content in self.moved.items():
            if pool == i:
                m[line : line + len(content)] = content

    def move(self, changes: list[tuple[int, int, bytes]]) -> None:
        maps, moved = self.maps, self.moved
        for pool, line, content in changes:
            maps[pool][line : line + len(content)] = content
            moved[(pool, line)] = content

    def held(self, pool: int, line: int, n: int) -> bytes:
        """What the file holds at a line outside an image."""
        got = self.moved.get((pool, line))
        if got is not None:
            return got
        got = self.initial.get((pool, line))
        if got is not None and len(got) == n:
            return got
        _, source, source_size = self.pools[pool]
        if source is None or line >= source_size:
            return bytes(n)
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, min(n, source_size - line), line)
        finally:
            os.close(fd)
        got = data + bytes(n - len(data))
        # Kept: the same lines deviate image after image. Bounded: a pool of millions of
        # lines would otherwise be held twice.
        if len(self.initial) >= 1 << 16:
            self.initial.clear()
        self.initial[(pool, line)] = got
        return got

    def check(self) -> None:
        """Rebuild every file that someone opened for writing (or changed) since."""
        if self.notify is None:
            for i in range(len(self.pools)):
                self._renew(i)
            self.rebuilds += 1
            return
        events = self.notify.events()
        if not events:
            return
        hit = {self.watches[wd] for wd, _ in events if wd in self.watches}
        if any(mask & 0x4000 for _, mask in events):  # the queue overflowed
            hit = set(range(len(self.pools)))
        for i in sorted(hit):
            self._renew(i)
        if hit:
            self.rebuilds += 1
        if self.notify is not None:  # what renewing itself queued: not a checker's doing
            self.notify.events()


def _serve(
    load: Callable[[], Callable[[Any, list[int]], str | None]],
    rfd: int,
    wfd: int,
    judging: mmap.mmap,
) -> None:
    """A worker's loop: messages in, verdicts out, until EOF. ``judging`` is told, before
    each image, the number of the message and the image's in it (:meth:`LibWorker.judging`)."""
    from ..markers import reset_crash, set_crash

    try:
        judge = load()
    except InvalidArgumentError as exc:
        frames.send(wfd, ("error", exc.message), marshal.dumps)
        return
    except Exception as exc:
        frames.send(wfd, ("error", f"{type(exc).__name__}: {exc}"), marshal.dumps)
        return
    frames.send(wfd, ("ready", ""), marshal.dumps)
    reader = frames.Reader(rfd, marshal.loads)
    files: _Files | None = None
    token: object = None
    received = 0
    try:
        while True:
            try:
                batch: Any = reader.get()
            except EOFError:
                return
            if batch[0] == "setup":
                _, folder, names, pools = batch
                files = _Files(folder, names, pools)
                continue
            assert files is not None
            received += 1
            message = received << _INDEX
            # Only the images some run found inconsistent are answered, by their number
            # in the batch: most images pass, and their verdicts cost nothing to send.
            out = []
            maps, held = files.maps, files.held
            n = 0
            for item in batch:
                if item[0] == "M":
                    files.move(item[1])
                    continue
                _, patches, runs, markers, info = item
                if markers is not None:
                    os.environ["PMREORDER_MARKERS"] = markers
                if info is not None:
                    if token is not None:
                        reset_crash(token)
                    token = set_crash(CrashInfo(*info))
                for p in patches:
                    maps[p[3]][p[4] : p[5]] = p[0]
                judging[:_WORD] = (message | n).to_bytes(_WORD, "little")
                try:
                    got = [judge(files, run) for run in runs]
                finally:
                    # First: a checker that cut its file short makes writing the lines back
                    # through the mapping a SIGBUS.
                    files.check()
                    for p in patches:
                        maps[p[3]][p[4] : p[5]] = held(p[3], p[4], p[5] - p[4])
                if got.count(None) != len(got):
                    out.append((n, [_sent(v) for v in got]))
                n += 1
            frames.send(wfd, out, marshal.dumps)
    finally:
        if token is not None:
            reset_crash(token)


def _sent(verdict: str | None) -> str | tuple[str, str] | None:
    """A verdict as marshal sends it: a Python checker's timeout or crash (a str subclass
    that says which) as ``(kind, text)``."""
    return (verdict.kind, str(verdict)) if isinstance(verdict, Fault) else verdict


def _received(verdict: str | tuple[str, str] | None) -> str | None:
    if isinstance(verdict, tuple):
        kind, text = verdict
        return TimedOut(text) if kind == TimedOut.kind else Crashed(text)
    return verdict


def _limited(
    load: Callable[[], Callable[[Any, list[int]], str | None]], seconds: float | None
) -> Callable[[], Callable[[Any, list[int]], str | None]]:
    """``load`` whose judge runs under a time limit: past it, SIGALRM (its default action)
    ends the worker, wherever the checker is (a C loop never returns to Python), and the
    parent reads that exit as "timed out". So a hang costs its image's limit, not a
    batch's (the parent's own deadline for a batch is only a backstop)."""
    if seconds is None:
        return load

    def limited_load() -> Callable[[Any, list[int]], str | None]:
        judge = load()
        arm, real = signal.setitimer, signal.ITIMER_REAL

        def limited(files: Any, run: list[int]) -> str | None:
            arm(real, seconds)
            try:
                return judge(files, run)
            finally:
                arm(real, 0)

        return limited

    return limited_load


def _c_judge(
    checker: LibChecker, streams: tuple[int, ...] = (1,)
) -> Callable[[Any, list[int]], str | None]:
    """Loads the library in the worker (ctypes: the C ABI, called in-process; imported
    there, not by the check). What the checker writes to ``streams`` (its stdout; a
    worker's stderr too, where nothing else writes) goes with its verdict, as a checker
    program's output does, instead of onto the terminal once per image."""
    import ctypes

    _keep_heap(ctypes)
    try:
        lib = ctypes.CDLL(checker.library)
    except OSError as exc:
        raise InvalidArgumentError(ErrorCode.EINVAL, str(exc)) from None
    try:
        fn = getattr(lib, checker.function)
    except AttributeError:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{checker.library} has no function {checker.function!r}"
        ) from None
    fn.argtypes = [ctypes.c_char_p]
    fn.restype = ctypes.c_int
    ok = checker.consistent
    out, flush = _own_output(streams)

    def judge(files: _Files, run: list[int]) -> str | None:
        got = fn(files.bpaths[run[0]])
        flush(None)
        said = os.lseek(out, 0, os.SEEK_CUR)
        text = ""
        if said:
            if got != ok:
                text = os.pread(out, _TAIL, max(0, said - _TAIL)).decode(errors="replace")
                text = ("..." if said > _TAIL else "") + text.strip()
            os.ftruncate(out, 0)
            os.lseek(out, 0, os.SEEK_SET)
        return None if got == ok else f"returned {got}{': ' + text if text else ''}"

    return judge


def _keep_heap(ctypes: Any) -> None:
    """Have malloc keep what a checker frees for its next call. libpmemobj's open and close
    allocate and free megabytes per image; in a worker, glibc gave them back to the system
    at every close and took them again, page by page, at the next open: PMDK's map checker
    on hashmap_tx's images spent 7.6 ms of CPU per call in a worker, 2.4 ms with up to
    64 MiB kept at the heap's top (resident once a checker used them)."""
    with contextlib.suppress(AttributeError, OSError):  # glibc's; elsewhere a default
        ctypes.CDLL(None).mallopt(_M_TOP_PAD, 64 << 20)


_M_TOP_PAD = -2


def _own_output(streams: tuple[int, ...]) -> tuple[int, Callable[[None], int]]:
    """``streams`` sent to a file of this process's own, and libc's fflush."""
    import ctypes

    out = os.memfd_create("checker-output")
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    for fd in streams:
        os.dup2(out, fd)
    return out, libc.fflush


def _python_judge(
    checker: FunctionChecker, names: list[str]
) -> Callable[[Any, list[int]], str | None]:
    def judge(files: _Files, run: list[int]) -> str | None:
        views = [memoryview(files.maps[i]).toreadonly() for i in run]
        try:
            arg: Any = (
                dict(zip([names[i] for i in run], views, strict=True))
                if checker.all_files
                else views[0]
            )
            return checker(arg)
        finally:
            for v in views:
                v.release()

    return judge


# -- in this process -------------------------------------------------------------------------


class WorkerDied(Exception):
    """The worker died or ran past its time (``status`` says which)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class Abandoned(Exception):
    """No one waits for the verdicts any more (:meth:`Workers.abandon`)."""


class LibWorker:
    """One worker process (see the module docstring). Started at once; :meth:`ready`
    waits until it loaded its checker (an error there is the checker's: InvalidArgumentError)."""

    def __init__(
        self,
        checker: LibChecker | FunctionChecker,
        names: Sequence[str] = (),
        timeout: float | None = None,
    ) -> None:
        self.checker = checker
        self.names = list(names)
        self.timeout = timeout if timeout is not None else getattr(checker, "timeout", None)
        self.pid = 0
        self.exit_code = 0
        self.loaded = False
        self._start()

    def _load(self) -> Callable[[Any, list[int]], str | None]:
        checker = self.checker
        if isinstance(checker, LibChecker):
            return _c_judge(checker, (1, 2))
        return _python_judge(checker, self.names)

    def _start(self) -> None:
        _reap_exited()
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        # Room for the two batches a worker is given at a time (the default 64 KiB holds
        # one: this process would wait on the worker to take the second).
        frames.widen(w1)
        judging = mmap.mmap(-1, _WORD)

        def serve() -> None:
            os.close(w1)
            os.close(r2)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # ends a run past its time
            _serve(_limited(self._load, self.timeout), r1, w2, judging)

        # What the checker starts is ended with the worker.
        pid = fork(serve, group=True, background=True)
        os.close(r1)
        os.close(w2)
        # Its exit, watched: a process its checker started may hold the answers' pipe open
        # (no end of file) long after the worker died.
        try:
            self._exited = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._exited = -1  # (no pidfd: end of file alone says it died)
        self.pid, self._to = pid, w1
        self._from = frames.Reader(r2, marshal.loads, self._exited)
        self._judging = judging
        self.loaded = False
        #: Messages sent, and answers read: the worker answers every message but "setup".
        self.sent = self.answered = 0

    def ready(self) -> None:
        """Wait until the worker loaded its checker."""
        if self.loaded:
            return
        try:
            kind, text = self._from.get(time.monotonic() + 60)
        except (EOFError, TimeoutError):
            status = self._reap(kill=True)
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"the checker {self.checker.label} failed to load: {status}"
            ) from None
        if kind != "ready":
            self.close()
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"cannot load the checker {self.checker.label}: {text}"
            )
        self.loaded = True

    def _reap(self, kill: bool = False) -> str:
        if not self.pid:
            return "not running"
        if kill:
            end_group(self.pid)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        # Exited but not reaped: its pid still names its group, and no other process's.
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        end_group(self.pid)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        for fd in (self._to, self._from.fd, self._exited):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._judging.close()
        self.exit_code = os.waitstatus_to_exitcode(status)
        return _status(self.exit_code)

    def close(self, wait: bool = True) -> None:
        """End the worker and what its checker started (its process group): killed and
        waited for, or (``wait=False``, after its last answer) killed and reaped later
        (its exit takes milliseconds)."""
        if not self.pid:
            return
        with contextlib.suppress(OSError):
            os.close(self._to)
        self._to = -1
        if wait:
            self._reap(kill=True)
            return
        end_group(self.pid)
        for fd in (self._from.fd, self._exited):
            with contextlib.suppress(OSError):
                os.close(fd)
        _EXITING.append(self.pid)
        self.pid = 0
        _reap_exited()

    def send(self, message: object) -> None:
        if not (isinstance(message, tuple) and message[0] == "setup"):
            self.sent += 1
        with contextlib.suppress(BrokenPipeError):  # it died: the next answer says how
            frames.send(self._to, message, marshal.dumps)

    def judging(self) -> tuple[int, int]:
        """What the worker is judging: (the number of the message, counted from 1 as
        :attr:`sent` counts them, the image's index in it); (0, 0) before the first."""
        word = int.from_bytes(self._judging[:_WORD], "little")
        return word >> _INDEX, word & ((1 << _INDEX) - 1)

    def _patience(self, tell: Callable[[int, float], None]) -> Patience[int]:
        """Telling ``tell(index, seconds)`` of a long wait on an image of the oldest batch
        sent (since this process saw the worker begin it: a worker says which image it is
        on, not when it began, which would cost it a clock reading per image)."""
        from .waiting import Patience

        waited_on = self.answered + 1
        seen: list[Any] = [None, 0.0]

        def where(now: float) -> tuple[int, float] | None:
            message, index = self.judging()
            if message != waited_on:
                return None
            if seen[0] != index:
                seen[:] = [index, now]
            return index, seen[1]

        return Patience(where, tell)

    def answer(
        self, deadline: float | None, tell: Callable[[int, float], None] | None = None
    ) -> Any:
        """The answer to the oldest batch sent; WorkerDied when it died or ran past the
        deadline (it is then dead). ``tell(index, seconds)``: told of a long wait on the
        image of that index in the batch (:mod:`pmemsim.pmlog.waiting`)."""
        self.ready()  # (not waited for at the start: the replay runs while it loads)
        try:
            got = self._from.get(deadline, None if tell is None else self._patience(tell).next)
        except TimeoutError:
            self._reap(kill=True)
            assert self.timeout is not None
            raise WorkerDied(timed_out(self.timeout)) from None
        except EOFError:
            status = self._reap()
            if self.exit_code == -signal.SIGALRM and self.timeout is not None:
                raise WorkerDied(timed_out(self.timeout)) from None  # its own time limit
            if self.exit_code >= 0:  # exit() in the checker: no crash, and no verdict either
                said = f"the checker ended its worker process ({status}) instead of returning"
            else:
                said = f"the checker crashed: {status}"
            raise WorkerDied(Crashed(said)) from None
        self.answered += 1
        return got


#: Workers told to stop and not waited for (see LibWorker.close).
_EXITING: list[int] = []


def _reap_exited() -> None:
    for pid in list(_EXITING):
        try:
            exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            _EXITING.remove(pid)
            continue
        if exited is not None:
            end_group(pid)  # (before reaping: until then its pid names no other group)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            _EXITING.remove(pid)


#: Workers started by LibChecker.parse (which loads the library in one to check it), kept for
#: the check that follows: one process less to start.
_SPARES: list[LibWorker] = []


def spare_worker(checker: LibChecker) -> None:
    """Start a worker for ``checker`` and keep it for the next check with that checker: it
    loads the library while this process reads and replays the log (a library that cannot
    be loaded is refused by the check, :meth:`LibWorker.ready`)."""
    _before_the_fork()
    for old in _SPARES:
        old.close()
    _SPARES[:] = [LibWorker(checker)]


def _before_the_fork() -> None:
    """Make now what the replay of the check to come makes at its start (the simulator's
    crash-state class and the modules it imports): after the fork, with the worker alive,
    every page of memory this process writes is copied first, and importing writes many (a
    short check's replay took about 2 ms longer)."""
    from pmemsim_backends.sim import lint  # noqa: F401

    from .fastreplay import log_state_type

    log_state_type()


def spare_loaded(checker: LibChecker) -> None:
    """Wait until the spare worker for ``checker`` (started now if there is none) loaded
    the library: InvalidArgumentError, and no spare kept, when it cannot."""
    worker = next((w for w in _SPARES if w.checker == checker and w.pid), None)
    if worker is None:
        spare_worker(checker)
        worker = _SPARES[0]
    try:
        worker.ready()
    except BaseException:
        worker.close()
        _SPARES.remove(worker)
        raise


def _take_spare(checker: LibChecker | FunctionChecker, timeout: float | None) -> LibWorker:
    for w in _SPARES:
        if w.checker == checker and w.pid:
            _SPARES.remove(w)
            w.timeout = timeout if timeout is not None else w.timeout
            return w
    return LibWorker(checker, (), timeout)


#: A queued item: a move, or an image with what to do with its verdicts.
_Item = tuple[Any, ...]


class _Slot:
    """What this process keeps of one worker."""

    def __init__(self, worker: LibWorker, folder: str) -> None:
        self.worker = worker
        self.folder = folder
        #: Lines changed since the last move sent to it.
        self.stale: set[tuple[int, int]] = set()
        #: Its files' lines as of the last batch it answered (to start a new worker from).
        self.acked: dict[tuple[int, int], bytes] = {}
        #: Batches sent, oldest first: (items, images: [(cand, runs)]).
        self.inflight: deque[tuple[list[_Item], list[Any], list[CrashPoint]]] = deque()
        self.markers: str | None = None
        #: The crash its Python checker was last told of: CrashInfo's fields.
        self.info: tuple[int, str, tuple[str, ...]] | None = None


class Workers(Judge):
    """``jobs`` worker processes judging images (see the module docstring). Images go to a
    worker in batches (one message each way per batch; batches grow from 8 to 256 images),
    two batches per worker at a time, so that a worker judges one while this process
    prepares the next."""

    def __init__(
        self,
        checker: LibChecker | FunctionChecker,
        pools: list[Pool],
        jobs: int,
        tmp: str,
        *args: Any,
    ) -> None:
        super().__init__(*args)
        self.checker = checker
        self.pools = pools
        self.jobs = jobs
        self.timeout = getattr(checker, "timeout", None)
        self.python = isinstance(checker, FunctionChecker)
        self.file_names = _file_names(self.names)
        self.slots: list[_Slot] = []
        self.depth = 8
        self.turn = 0
        self.filling: list[_Item] = []
        self.images: list[Any] = []
        #: The crash points of the images being batched (an image names its point by index).
        self.points: list[CrashPoint] = []
        self.finished = False
        self.abandoned = False
        #: The runs of an image of a simple judge: one over every file (one list for all:
        #: pickle sends what a batch's images share once).
        self._every = (tuple(range(len(pools))),)
        self._all: tuple[tuple[Sequence[int], int | None]] = ((self._every[0], None),)
        self.img.listen(self._moved)
        try:
            for k in range(jobs):
                w = (
                    _take_spare(checker, self.timeout)
                    if not self.python and k == 0
                    else LibWorker(checker, self.names, self.timeout)
                )
                slot = _Slot(w, os.path.join(tmp, f"worker-{k}"))
                self.slots.append(slot)
                self._setup(slot)
        except BaseException:
            self.close()
            raise

    def _setup(self, slot: _Slot) -> None:
        # (A base image named by a Path from Python: marshal sends str.)
        pools = [(n, None if src is None else os.fspath(src), k) for n, src, k in self.pools]
        slot.worker.send(("setup", slot.folder, list(self.file_names), pools))
        slot.markers = None
        slot.info = None

    def _moved(self, lines: set[tuple[int, int]]) -> None:
        for slot in self.slots:
            slot.stale |= lines

    # -- sending -----------------------------------------------------------------------

    @property
    def simple(self) -> bool:
        """Every image is one run over every file: :meth:`image` applies."""
        return self.per_file is None

    def add(self, cand: Cand) -> None:
        runs, known = _runs(cand, self.per_file, len(self.pools))
        if known is not None or not runs:
            self.verdicts.add(cand, known)
            return
        self._queue(
            cand.seq, cand.point, cand.dev, cand.size, cand.markers, cand.marker_ordinal, runs
        )

    def image(
        self,
        point: CrashPoint,
        markers: str,
        ordinal: int,
        seq: int,
        dev: Deviations,
        size: tuple[int, int, int],
    ) -> None:
        """:meth:`add` for a :attr:`simple` judge, the image given by its parts (a Cand is
        made only for an inconsistent one)."""
        self._queue(seq, point, dev, size, markers, ordinal, self._all)

    def _queue(
        self,
        seq: int,
        point: CrashPoint,
        dev: Deviations,
        size: tuple[int, int, int],
        markers: str,
        ordinal: int,
        runs: Sequence[tuple[Sequence[int], int | None]],
    ) -> None:
        """Queue an image (a Cand's fields, and its runs) for the next batch. What a batch
        holds per image until it is answered is kept to tuples of numbers and strings, which
        the garbage collector stops tracking: a batch's objects survive young collections,
        and tracked ones would lengthen every old one."""
        slot = self.slots[self.turn % self.jobs]
        items = self.filling
        if not items:
            # A batch names its first image's markers and crash in full, so that it means
            # the same to a worker restarted after an earlier batch (see _again).
            slot.markers = slot.info = None
        if slot.stale:
            items.append(("M", self._contents(slot.stale)))
            slot.stale = set()
        img = self.img
        cached, option = img._options.get, img._option
        # The options themselves ((content, key delta, atoms lost, pool, start, end)): an
        # option in several images of a batch is pickled once.
        patches = tuple([cached(d) or option(*d) for d in dev])
        changed = None
        if markers != slot.markers:
            changed = slot.markers = markers
        info = None
        if self.python and (slot.info is None or slot.info[0] != point.index):
            info = slot.info = (point.index, point.kind, tuple(point.markers))
        sent = self._every if runs is self._all else tuple(r for r, _ in runs)
        items.append(("I", patches, sent, changed, info))
        points = self.points
        if not points or points[-1] is not point:
            points.append(point)
        self.images.append((seq, dev, size, markers, ordinal, len(points) - 1, runs))
        self.verdicts.runs += len(runs)
        if len(self.images) >= self.depth:
            self._flush()

    def _contents(self, lines: set[tuple[int, int]]) -> list[tuple[int, int, bytes]]:
        img = self.img
        out = []
        for pool, line in sorted(lines):
            buf = img.buffer(pool)
            out.append((pool, line, bytes(buf[line : line + 64])))
        return out

    def _flush(self) -> None:
        if not self.images:
            return
        slot = self.slots[self.turn % self.jobs]
        self.turn += 1
        while len(slot.inflight) >= 2:
            self._collect(slot)
        slot.worker.send(self.filling)
        slot.inflight.append((self.filling, self.images, self.points))
        self.filling, self.images, self.points = [], [], []
        self.depth = min(256, self.depth * 2)
        # The next worker's batch starts with what changed since its last one.

    # -- answers -----------------------------------------------------------------------

    def _teller(self, images: list[Any], points: list[CrashPoint]) -> Any:
        """``tell(index, seconds)`` of a long wait on ``images[index]``, for the verdicts'
        ``waiting``."""
        waiting = self.verdicts.waiting
        if waiting is None:
            return None

        def tell(index: int, waited: float) -> None:
            seq, dev, size, markers, ordinal, k, _ = images[index]
            waiting(Cand(seq, points[k], dev, size, markers, ordinal), waited)

        return tell

    def _collect(self, slot: _Slot) -> None:
        items, images, points = slot.inflight[0]
        n = len(images)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout * n
        try:
            answers = slot.worker.answer(deadline, self._teller(images, points))
        except WorkerDied:
            answers = self._again(slot, items, images, points)
        slot.inflight.popleft()
        for item in items:
            if item[0] == "M":
                for pool, line, content in item[1]:
                    slot.acked[(pool, line)] = content
        verdicts, per_file = self.verdicts, self.per_file
        failed = {i: [_received(v) for v in got] for i, got in answers}
        if per_file is None and not failed:
            verdicts.passed(n)
            return
        for i, (seq, dev, size, markers, ordinal, k, runs) in enumerate(images):
            got = failed.get(i)
            verdict = None
            for r, (chosen, key) in enumerate(runs):
                v = None if got is None else got[r]
                if per_file is not None and key is not None:
                    v = per_file.note(chosen[0], key, v)
                if v is not None and verdict is None:
                    verdict = v
            verdicts.add(Cand(seq, points[k], dev, size, markers, ordinal), verdict)

    def abandon(self) -> None:
        """From another thread, when no one waits for the verdicts any more (a Dask client
        left): the workers are killed, and the judging ends (Abandoned) where a worker's
        death would restart it on the image it died on, which with no time limit would
        hang the new worker too."""
        self.abandoned = True
        for slot in self.slots:
            if slot.worker.pid:
                end_group(slot.worker.pid)

    def _restart(self, slot: _Slot, acked: dict[tuple[int, int], bytes]) -> None:
        slot.worker.close()
        if self.abandoned:
            raise Abandoned
        slot.worker = LibWorker(self.checker, self.names, self.timeout)
        if self.abandoned:  # (after abandon() ended the workers it saw)
            slot.worker.close()
            raise Abandoned
        self._setup(slot)
        if acked:
            slot.worker.send([("M", [(p, ln, c) for (p, ln), c in sorted(acked.items())])])
            slot.worker.answer(None)  # an empty answer: the move is in

    def _again(
        self, slot: _Slot, items: list[_Item], images: list[Any], points: list[CrashPoint]
    ) -> list[tuple[int, list[str | None]]]:
        """The worker died on this batch: judge it again an image at a time (the image that
        crashed or hung the checker gets that verdict), from the state of the last batch it
        answered; then send the later batches again."""
        acked = dict(slot.acked)
        self._restart(slot, acked)
        answers: list[tuple[int, list[str | None]]] = []
        n = 0
        # The markers and crash of the image before (the batch's first image names both).
        markers: str | None = None
        info: tuple[int, str, tuple[str, ...]] | None = None
        for item in items:
            if item[0] == "M":
                slot.worker.send([item])
                slot.worker.answer(None)
                for pool, line, content in item[1]:
                    acked[(pool, line)] = content
                continue
            _, patches, runs = item[:3]
            # A new worker has no markers or crash info yet: send them with every image.
            markers = item[3] if item[3] is not None else markers
            info = item[4] if item[4] is not None else info
            slot.worker.send([("I", patches, runs, markers, info)])
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            try:
                tell = self._teller(images[n : n + 1], points)
                answers += [(n, got) for _, got in slot.worker.answer(deadline, tell)]
            except WorkerDied as died:
                answers.append((n, [died.status] * len(runs)))
                self._restart(slot, acked)
            n += 1
        for later, *_ in list(slot.inflight)[1:]:
            slot.worker.send(later)
        return answers

    def finish(self) -> None:
        self._flush()
        for slot in self.slots:
            slot.worker.ready()  # a checker that does not load, even where no image came
        for slot in self.slots:
            while slot.inflight:
                self._collect(slot)
        self.finished = True

    def close(self) -> None:
        self.img.listen(None)
        for slot in self.slots:
            # After the last answer the worker only has to exit: no need to wait for it. One
            # that has answered nothing may still be making its image files (given no image,
            # or the check ended early): ended now, before its folder is removed.
            w = slot.worker
            w.close(wait=not self.finished or not w.answered)
