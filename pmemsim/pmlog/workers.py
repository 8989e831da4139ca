"""Checker worker processes: a C library's function (or a Python function out of process)
judging image files that the worker keeps itself.

Each worker is a process with one image file per registered file, in a private folder (its
side is :mod:`pmemsim.pmlog.serve`). The command line starts a library checker's first
worker as a new interpreter before it parses its arguments
(:func:`~pmemsim.pmlog.forked.start_early`), and the Python API when it is given the checker
(:meth:`~pmemsim.pmlog.checkers.LibChecker.parse`): a fork would make every page this
process writes afterwards a copy first (about 1,500 faults of 3 us each in a check of 1,000
epochs). A library checker's worker is kept from one check to the next (:func:`keep`), with
its folder. Every other worker (a restart, more jobs, a Python checker, a first check with
no worker kept) is a fork of this process: ready at once.
This process streams a worker messages in batches, in the order the exploration chose the
images, after a ``("setup", ...)`` that says what files to make:

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
made: :class:`~pmemsim.pmlog.imagefile.Refill`). A checker that crashes (SIGSEGV) or runs
past its time costs a restart: the new worker is brought to the state of the last batch answered
(:class:`Workers` keeps those lines), and the failed batch is judged again one image at a
time, so that the image that crashed or hung the checker is the one that gets that verdict.
"""

from __future__ import annotations

import atexit
import contextlib
import marshal
import mmap
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, InvalidArgumentError, PmemError
from ..explore import frames
from .checkers import Crashed, FunctionChecker, LibChecker, TimedOut, _status, timed_out
from .forked import end_group, fork, spawn_worker, take_early, worker_pipes
from .judging import Cand, Image, Judge, _file_names, _runs
from .serve import INDEX, LEFT, WORD, Files, c_judge, serve
from .slots import new_folder, probe, scratch_folder

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint
    from ..scratch import Scratch
    from .images import Pool
    from .waiting import Patience

__all__ = ["LibWorker", "Workers", "close_spares", "keep", "spare_loaded", "spare_worker"]

#: Seconds a worker whose pipe ended is given to exit before its verdict is worded.
DYING = 5.0
#: The image file size a spare worker's folder is tried for (:func:`spare_worker`), before
#: any check: a check whose pools are no larger tries nothing (4 system calls on its path).
PROBED_AHEAD = 1 << 40
#: Batches sent to a worker still loading its checker (a new interpreter takes 10 ms or
#: more) before this process waits for it: at most about 1,000 images, whose messages fit
#: in its pipe, so that sending never waits on a worker that waits to send its answers.
LOOKAHEAD = 8


# -- in the worker (the rest is serve's) -----------------------------------------------------


def _python_judge(
    checker: FunctionChecker, names: list[str]
) -> Callable[[Any, list[int]], str | None]:
    def judge(files: Files, run: list[int]) -> str | None:
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
    """One worker process (see the module docstring). Started at once (``early``: a library
    checker's spare, the one the command line started if there is one, else a new
    interpreter, :func:`~pmemsim.pmlog.forked.spawn_worker`); :meth:`ready` waits until it
    loaded its checker (an error there is the checker's: InvalidArgumentError)."""

    def __init__(
        self,
        checker: LibChecker | FunctionChecker,
        names: Sequence[str] = (),
        timeout: float | None = None,
        early: bool = False,
    ) -> None:
        self.checker = checker
        self.names = list(names)
        self.timeout = timeout if timeout is not None else getattr(checker, "timeout", None)
        self.pid = 0
        self.exit_code = 0
        self.loaded = False
        #: Its folder (:meth:`folder`), the root it is in, the largest file tried there.
        self.home: Scratch | None = None
        self._root: str | None = None
        self._probed = -1
        #: Told its check is done (:meth:`release`), and not set up for another since.
        self.released = False
        #: The library file it loaded, as ``stat`` saw it when it started (None: a Python
        #: checker's, or a library found by the loader's search): a kept worker is reused
        #: only while that file is unchanged (:meth:`current`).
        self.library_id = _file_id(checker)
        #: Its folder and environment, which a checker may read: the ones it started with
        #: (a Python checker's worker is never kept or spare: None).
        self.setting = _setting() if isinstance(checker, LibChecker) else None
        self._start(early)

    def _load(self) -> Callable[[Any, list[int]], str | None]:
        checker = self.checker
        if isinstance(checker, LibChecker):
            return c_judge(checker.library, checker.function, checker.consistent, (1, 2))
        return _python_judge(checker, self.names)

    def _start(self, early: bool = False) -> None:
        _reap_exited()
        checker = self.checker
        started = None
        if early and isinstance(checker, LibChecker):
            started = take_early(checker.library, checker.function) or spawn_worker(
                checker.library, checker.function
            )
        pid, w1, r2, judging = started or self._fork()
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
        #: Whether its last answer said that its checker may have left a process running.
        self.left = False

    def _fork(self) -> tuple[int, int, int, mmap.mmap]:
        """A worker forked from this process (a Python checker's, or where a new interpreter
        cannot be spawned): pid, the ends of its pipes here, its judging word."""
        _before_the_fork()
        r1, w1, r2, w2 = worker_pipes()
        judging = mmap.mmap(-1, WORD)

        def run() -> None:
            os.close(w1)
            os.close(r2)
            serve(self._load, r1, w2, judging)

        # What the checker starts is ended with the worker.
        pid = fork(run, group=True, background=True)
        os.close(r1)
        os.close(w2)
        return pid, w1, r2, judging

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

    def loading(self) -> bool:
        """Whether the worker is still loading its checker (it has said nothing yet)."""
        return not self.loaded and self._from.waiting()

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
        (its exit takes milliseconds); then its folder is removed."""
        if self.pid:
            with contextlib.suppress(OSError):
                os.close(self._to)
            self._to = -1
            if wait:
                self._reap(kill=True)
            else:
                end_group(self.pid)
                for fd in (self._from.fd, self._exited):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._judging.close()  # (its descriptor with it: not left to the collector)
                _EXITING.append(self.pid)
                self.pid = 0
                _reap_exited()
        if self.home is not None:
            self.home.remove(ignore_errors=True)  # (what is left, a later run reclaims)
            self.home = None

    def folder(self, root: str | None, size: int) -> str:
        """The folder for the worker's image files (``size`` bytes at most, sparse), in
        ``root`` (None: the system's temporary folder): its own, made for its first check
        there and kept while it lives, so that a worker kept for the next check (:func:`keep`)
        costs that check no folder to make and remove."""
        if root is None:
            import tempfile

            root = tempfile.gettempdir()
        home = self.home
        if home is not None and (self._root != root or not os.path.isdir(home.path)):
            home.remove(ignore_errors=True)  # (elsewhere, or removed by someone else)
            home = self.home = None
        if home is None:
            home = self.home = new_folder(root)
            self._root, self._probed = root, -1
        if size > self._probed:
            probe(home.path, size)
            self._probed = size
        # (A subfolder: a pool's file may have any name, the scratch folder's lock file's too.)
        return f"{home.path}/images"

    def release(self) -> None:
        """Tell the worker its check is done: it removes its image files, keeps its folder,
        and waits for the next check's setup."""
        self.send(("release",))
        self.released = True

    def current(self) -> bool:
        """Whether the worker can judge another check: alive, idle (every message answered),
        nothing its checker started still there, and its library file, current folder and
        environment the ones it started with (a checker may read them: the environment
        perhaps as its library loaded)."""
        return (
            self.pid != 0
            and self.sent == self.answered
            and not self.left
            and self.library_id == _file_id(self.checker)
            and self.setting == _setting()
            and not frames.exited(self.pid, self._exited, 0)
        )

    def send(self, message: object) -> None:
        if not isinstance(message, tuple):  # (a batch: "setup" and "release" get no answer)
            self.sent += 1
        with contextlib.suppress(BrokenPipeError):  # it died: the next answer says how
            frames.send(self._to, message, marshal.dumps)

    def judging(self) -> tuple[int, int]:
        """What the worker is judging: (the number of the message, counted from 1 as
        :attr:`sent` counts them, the image's index in it); (0, 0) before the first."""
        word = int.from_bytes(self._judging[:WORD], "little")
        return word >> INDEX, word & ((1 << INDEX) - 1)

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
            # (A dying process closes its pipe a moment before its exit is seen; a checker
            # may also close the pipe and go on.)
            if not frames.exited(self.pid, self._exited, DYING):
                self._reap(kill=True)
                said = (
                    "the checker closed its worker's pipe and was still running "
                    f"{DYING:g} s later (stopped)"
                )
                raise WorkerDied(Crashed(said)) from None
            status = self._reap()
            if self.exit_code == -signal.SIGALRM and self.timeout is not None:
                raise WorkerDied(timed_out(self.timeout)) from None  # its own time limit
            if self.exit_code >= 0:  # exit() in the checker: no crash, and no verdict either
                said = f"the checker ended its worker process ({status}) instead of returning"
            else:
                said = f"the checker crashed: {status}"
            raise WorkerDied(Crashed(said)) from None
        self.answered += 1
        # (Its last answer says whether the checker may have left a process running.)
        self.left = bool(got) and got[-1] == LEFT
        if self.left:
            got.pop()
        return got


def _file_id(checker: LibChecker | FunctionChecker) -> tuple[int, ...] | None:
    """A library file's identity (None: a Python checker, a library found by the loader's
    search, or no such file)."""
    if not isinstance(checker, LibChecker) or "/" not in checker.library:
        return None
    try:
        st = os.stat(checker.library)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _setting() -> tuple[str, object]:
    """This process's current folder and environment (as bytes: no copy decoded)."""
    environ = getattr(os.environ, "_data", None)
    return os.getcwd(), dict(os.environ if environ is None else environ)


def _received(verdict: str | tuple[str, str] | None) -> str | None:
    """A verdict as a worker sent it (:func:`pmemsim.pmlog.serve._sent`)."""
    if isinstance(verdict, tuple):
        kind, text = verdict
        return TimedOut(text) if kind == TimedOut.kind else Crashed(text)
    return verdict


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


#: Workers kept for the next check with their checker, at most :data:`KEPT`: the one that
#: LibChecker.parse starts (it loads the library, to check it), and those done with a check
#: (:func:`keep`). A check that takes one has no process to start and no folder to make.
_SPARES: list[LibWorker] = []
KEPT = 4
#: The process whose workers those are (a forked child's copy of the list is its parent's).
_owner = os.getpid()
#: Held while the list is looked at or changed: checks may run in threads (a Dask worker's),
#: and a worker is taken by one check at a time.
_GUARD = threading.RLock()


def _spares() -> list[LibWorker]:
    global _owner
    if _owner != os.getpid():
        _SPARES.clear()  # (its parent's workers, whose pipes it shares: never used here)
        _owner = os.getpid()
    return _SPARES


def _spare_for(checker: LibChecker | FunctionChecker) -> LibWorker | None:
    """The kept worker for ``checker``, if one is fit for a check (:meth:`LibWorker.current`);
    one that is not is ended."""
    spares = _spares()
    for w in list(spares):
        if w.checker == checker:
            if w.current():
                return w
            spares.remove(w)
            w.close(wait=False)
    return None


def _add(worker: LibWorker) -> None:
    spares = _spares()
    spares.append(worker)
    while len(spares) > KEPT:
        spares.pop(0).close(wait=False)


def spare_worker(checker: LibChecker) -> None:
    """Have a worker ready for the next check with ``checker``: the one kept for an equal
    checker, else one started now (a new interpreter, or the one the command line started),
    which loads the library while this process reads and replays the log (a library that
    cannot be loaded is refused by the check, :meth:`LibWorker.ready`)."""
    with _GUARD:
        if _spare_for(checker) is not None:
            return
        worker = LibWorker(checker, early=True)
        _add(worker)
        # Its folder too, where a check's image files go unless its pools are huge, tried
        # for files as large as most checks' (a folder that cannot be made here, or whose
        # file system refuses such a file, is the check's to report or to try itself).
        with contextlib.suppress(PmemError):
            worker.folder(scratch_folder(0), PROBED_AHEAD)


def keep(worker: LibWorker) -> None:
    """Keep ``worker``, done with its check, for the next check with its checker (it
    removes its image files meanwhile: their pages are memory); one that is not idle, whose
    checker may have left a process running, or whose library was found by the loader's
    search, is ended (what else makes it fit, the check that takes it asks)."""
    idle = worker.pid and worker.sent == worker.answered and not worker.left
    if not idle or worker.library_id is None:
        worker.close(wait=False)
        return
    if not worker.released:
        worker.release()
    with _GUARD:
        spares = _spares()
        for w in [w for w in spares if w.checker == worker.checker]:
            spares.remove(w)
            w.close(wait=False)
        _add(worker)


def close_spares(checker: LibChecker | None = None) -> None:
    """End the kept workers (``checker``'s only, if given): their processes, their folders.
    At exit, every one."""
    with _GUARD:
        spares = _spares()
        for w in [w for w in spares if checker is None or w.checker == checker]:
            spares.remove(w)
            w.close(wait=False)


atexit.register(close_spares)


def _before_the_fork() -> None:
    """Make now what the replay of the check to come makes at its start (the simulator's
    crash-state class and the modules it imports): after a fork, with the worker alive,
    every page of memory this process writes is copied first, and importing writes many (a
    short check's replay took about 2 ms longer)."""
    from pmemsim_backends.sim import lint  # noqa: F401

    from .fastreplay import log_state_type

    log_state_type()


def spare_loaded(checker: LibChecker) -> None:
    """Wait until the spare worker for ``checker`` (started now if there is none) loaded
    the library: InvalidArgumentError, and no spare kept, when it cannot."""
    with _GUARD:  # (taken while it loads: no check uses it meanwhile)
        spare_worker(checker)
        worker = _spare_for(checker)
        assert worker is not None
        _spares().remove(worker)
    try:
        worker.ready()
    except BaseException:
        worker.close()
        raise
    with _GUARD:
        _add(worker)


def _take_spare(checker: LibChecker | FunctionChecker, timeout: float | None) -> LibWorker:
    with _GUARD:
        w = _spare_for(checker)
        if w is not None:
            _spares().remove(w)
    if w is None:
        return LibWorker(checker, (), timeout)
    w.timeout = timeout if timeout is not None else w.timeout
    return w


#: A queued item: a move, or an image with what to do with its verdicts.
_Item = tuple[Any, ...]


class _Slot:
    """What this process keeps of one worker."""

    def __init__(self, worker: LibWorker, folder: str | None) -> None:
        self.worker = worker
        #: Its image files' folder in the check's (None: the worker's own, LibWorker.folder).
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
    worker in batches (one message each way per batch; batches grow from 8 to 256 images,
    after a first batch of the first crash point's images, sent at once), two batches per
    worker at a time, so that a worker judges one while this process prepares the next (up
    to :data:`LOOKAHEAD` while it loads its checker)."""

    def __init__(
        self,
        checker: LibChecker | FunctionChecker,
        pools: list[Pool],
        jobs: int,
        *args: Any,
    ) -> None:
        super().__init__(*args)
        self.checker = checker
        self.pools = pools
        self.jobs = jobs
        self.timeout = getattr(checker, "timeout", None)
        self.python = isinstance(checker, FunctionChecker)
        # Where the workers' image files go: the pools' sizes (sparse where untouched), a
        # set per worker.
        sizes = [size for size, _, _ in pools]
        self.root = scratch_folder(sum(sizes) * jobs)
        self.largest = max(sizes, default=0)
        #: The check's folder, for the workers that have none of their own: made before
        #: they fork, so that they hold its lock too (:mod:`pmemsim.scratch`).
        self.shared: Scratch | None = None
        self.file_names = _file_names(self.names)
        self.slots: list[_Slot] = []
        self.depth = 8
        self.turn = 0
        self.filling: list[_Item] = []
        self.queued: list[Any] = []
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
            if jobs > 1 or self.python:
                self.shared = new_folder(self.root)
                probe(self.shared.path, self.largest)
            for k in range(jobs):
                # The first worker of a library checker is kept for the next check: a folder
                # of its own.
                own = not self.python and k == 0
                w = (
                    _take_spare(checker, self.timeout)
                    if own
                    else LibWorker(checker, self.names, self.timeout)
                )
                shared = self.shared
                slot = _Slot(w, None if shared is None or own else f"{shared.path}/worker-{k}")
                self.slots.append(slot)
                self._setup(slot)
        except BaseException:
            self.close()
            raise

    def _setup(self, slot: _Slot) -> None:
        # (A base image named by a Path from Python: marshal sends str.)
        pools = [(n, None if src is None else os.fspath(src), k) for n, src, k in self.pools]
        consistent = getattr(self.checker, "consistent", 1)
        folder = slot.folder or slot.worker.folder(self.root, self.largest)
        setup = (folder, list(self.file_names), pools, consistent, slot.worker.timeout)
        slot.worker.send(("setup", *setup))
        slot.worker.released = False
        slot.markers = None
        slot.info = None

    def _moved(self, lines: set[tuple[int, int]]) -> None:
        for slot in self.slots:
            slot.stale |= lines

    # -- sending -----------------------------------------------------------------------

    @property
    def simple(self) -> bool:
        """Every image is one run over every file: :meth:`images` applies."""
        return self.per_file is None

    def add(self, cand: Cand) -> None:
        runs, known = _runs(cand, self.per_file, len(self.pools))
        if known is not None or not runs:
            self.verdicts.add(cand, known)
            return
        images = [(cand.dev, cand.size[1], self.img.options(cand.dev))]
        self._queue(cand.point, cand.markers, cand.marker_ordinal, cand.seq, images, runs)

    def images(
        self, point: CrashPoint, markers: str, ordinal: int, seq: int, batch: list[Image]
    ) -> None:
        self._queue(point, markers, ordinal, seq, batch, self._all)

    def _queue(
        self,
        point: CrashPoint,
        markers: str,
        ordinal: int,
        seq: int,
        batch: list[Image],
        runs: Sequence[tuple[Sequence[int], int | None]],
    ) -> None:
        """Queue a crash point's images (numbered from ``seq``), each with these runs, for
        the next batches. What a batch holds per image until it is answered is kept to
        tuples of numbers and strings, which the garbage collector stops tracking: a batch's
        objects survive young collections, and tracked ones would lengthen every old one."""
        sent = self._every if runs is self._all else tuple(r for r, _ in runs)
        index = point.index
        info_of = (index, point.kind, tuple(point.markers)) if self.python else None
        self.verdicts.runs += len(runs) * len(batch)
        # (The batch's lists and the slot taken again after each flush, which starts new
        # lists and may turn to the next worker.)
        slot = self.slots[self.turn % self.jobs]
        items, queued, points = self.filling, self.queued, self.points
        for dev, lost, hits in batch:
            if not items:
                # A batch names its first image's markers and crash in full, so that it
                # means the same to a worker restarted after an earlier batch (see _again).
                slot.markers = slot.info = None
            if slot.stale:
                items.append(("M", self._contents(slot.stale)))
                slot.stale = set()
            changed = info = None
            if markers != slot.markers:
                changed = slot.markers = markers
            if info_of is not None and (slot.info is None or slot.info[0] != index):
                info = slot.info = info_of
            # The options themselves: an option in several images of a batch is sent once.
            items.append(("I", hits, sent, changed, info))
            if not points or points[-1] is not point:
                points.append(point)
            queued.append(
                (seq, dev, (len(dev), lost, index), markers, ordinal, len(points) - 1, runs)
            )
            seq += 1
            if len(queued) >= self.depth:
                self._flush()
                slot = self.slots[self.turn % self.jobs]
                items, queued, points = self.filling, self.queued, self.points
        if not self.turn:
            # A check's first images go at once: an idle worker judges them while the replay
            # goes on (a short check's images come at its one crash point, before its end).
            self._flush()

    def _contents(self, lines: set[tuple[int, int]]) -> list[tuple[int, int, bytes]]:
        buffer = self.img.buffer
        if len(lines) == 1:  # (an epoch of one store: one line a point, no sort)
            ((pool, line),) = lines
            return [(pool, line, buffer(pool)[line : line + 64])]
        return [(pool, line, buffer(pool)[line : line + 64]) for pool, line in sorted(lines)]

    def _flush(self) -> None:
        if not self.queued:
            return
        slot = self.slots[self.turn % self.jobs]
        self.turn += 1
        while len(slot.inflight) >= 2:
            if len(slot.inflight) < LOOKAHEAD and slot.worker.loading():
                break  # (it reads them once loaded; the replay goes on meanwhile)
            self._collect(slot)
        slot.worker.send(self.filling)
        slot.inflight.append((self.filling, self.queued, self.points))
        self.filling, self.queued, self.points = [], [], []
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

    def finish(self, unneeded: Callable[[], object] = lambda: None) -> None:
        self._flush()
        if not self.python:
            # Told now, it removes its files as soon as it answered, while this process
            # waits for the answer (a worker that is not kept after all is killed).
            self.slots[0].worker.release()
        # Every image is in a batch sent, its lines copied (a restart sends them again from
        # there): the buffers go while the workers judge, not after.
        unneeded()
        for slot in self.slots:
            slot.worker.ready()  # a checker that does not load, even where no image came
        for slot in self.slots:
            while slot.inflight:
                self._collect(slot)
        self.finished = True

    def close(self) -> None:
        self.img.listen(None)
        for k, slot in enumerate(self.slots):
            w = slot.worker
            if k == 0 and self.finished and not self.abandoned and not self.python:
                keep(w)  # (for the next check with this checker: see _take_spare)
                continue
            # After the last answer the worker only has to exit: no need to wait for it. One
            # that has answered nothing may still be making its image files (given no image,
            # or the check ended early): ended now, before its folder is removed.
            w.close(wait=not self.finished or not w.answered)
        if self.shared is not None:
            self.shared.remove()
