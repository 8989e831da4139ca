"""Child processes of check-log (checker workers, the self-check's twin, a speculative
check), forked alike (a library checker's first worker spawned), and whether a long log is
worth forking for.

The predicates live here, not with what they fork, so that a short log's check imports
neither (start-up time)."""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .replay import Replay

__all__ = [
    "SPECULATE_FROM",
    "TWIN_ENV",
    "TWIN_FROM",
    "TWIN_NICE",
    "end_early",
    "end_group",
    "fork",
    "read_until_exit",
    "spawn_worker",
    "start_early",
    "take_early",
    "worker_pipes",
    "worth_a_twin",
    "worth_speculating",
]

#: Logs of fewer operations are self-checked in process: a fork costs a few milliseconds.
TWIN_FROM = 20_000
#: ``PMEMSIM_TWIN=0`` keeps the self-check in process whatever the log and the CPUs (many
#: checks run side by side, each expected to use one CPU).
TWIN_ENV = "PMEMSIM_TWIN"
#: How much lower the twin's priority is than its parent's: it takes the CPU time the check
#: leaves, never the check's own.
TWIN_NICE = 10
#: Logs of fewer operations go the careful way at once: the fork, and the second run when
#: an image is inconsistent, would cost more than the speculation saves.
SPECULATE_FROM = 20_000


def _alone() -> bool:
    """No other thread runs here (a fork copies only the caller's)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worth_a_twin(replay: Replay) -> bool:
    """Whether to self-check ``replay``'s crash points in a twin
    (:mod:`pmemsim.pmlog.twin`): the log is long, a second CPU is there, and
    ``PMEMSIM_TWIN`` is not 0. (Whether the caller allows a twin at all, check-log's
    ``--jobs`` given, is the caller's: ``record_log(twin=False)``.)"""
    # (The log's length first: a short log's check, the common one, asks nothing else.)
    if sum(replay.log.counts.values()) < TWIN_FROM:
        return False
    if os.environ.get(TWIN_ENV, "").strip() == "0" or not _alone():
        return False
    return _cpus() >= 2


def worth_speculating(replay: Replay, checker: object, jobs: int) -> bool:
    """Whether to run the check speculatively (:mod:`pmemsim.pmlog.speculate`): a library
    checker on a long log of one file, with one job, whose time limit ends a hang before a
    notice of the wait would be due (the speculative child calls the checker itself: no
    one watches it wait, :mod:`pmemsim.pmlog.waiting`)."""
    from .checkers import LibChecker

    if not (
        isinstance(checker, LibChecker)
        and checker.timeout is not None
        and jobs == 1
        and len(replay.pools) == 1
        and sum(replay.log.counts.values()) >= SPECULATE_FROM
        and _alone()
    ):
        return False
    from . import waiting  # (a short log's check needs it not)

    return checker.timeout <= waiting.FIRST


def fork(run: Callable[[], None], group: bool = False, background: bool = False) -> int:
    """Fork a child that runs ``run()``, removes the scratch folders it left, and exits
    (70, with a traceback, if it raised: pmemsim's own bug); returns the child's pid here.
    ``group``: the child leads a process group of its own, which :func:`end_group` ends
    with whatever the child started (a checker's fork, which would otherwise outlive the
    check, holding its pipes).
    ``background``: the child never takes this process's CPU when it wakes (SCHED_BATCH):
    a worker woken by a batch, or by its end, runs on a free CPU or at the scheduler's next
    tick, not at once in this process's place (a short check waited a millisecond on the
    exit of its worker, where Linux ran it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid and background:
        with contextlib.suppress(OSError, AttributeError):  # (not Linux: no such policy)
            os.sched_setscheduler(pid, os.SCHED_BATCH, os.sched_param(0))
    if pid:
        if group:  # here too: the group exists before this process may have to end it
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
        return pid
    code = 0
    try:
        if group:
            os.setpgid(0, 0)
        # A profiler or tracer (coverage, cProfile) of this process does not survive into
        # a forked child: stop it there.
        sys.setprofile(None)
        sys.settrace(None)
        # A crash in the child (a checker's) is reported by this process: no Python
        # traceback for it.
        import faulthandler

        faulthandler.disable()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # this process decides
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        try:
            # The scratch folders the child made (a Python checker's calls into pmemsim):
            # os._exit runs no atexit, so they stayed until a later run reclaimed them.
            # Its own only (its parent's stay: Scratch.remove checks the maker), and only
            # if imported: a child that made none loads nothing.
            scratch = sys.modules.get("pmemsim.scratch")
            if scratch is not None:
                scratch.remove_left()
        finally:
            os._exit(code)


def worker_pipes() -> tuple[int, int, int, int]:
    """A checker worker's two pipes: (its end, this process's end) of the one to it, (this
    process's end, its end) of the one from it. The one to it has room for the two batches
    a worker is given at a time (the default 64 KiB holds one: this process would wait on
    the worker to take the second)."""
    from ..explore import frames

    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    frames.widen(w1)
    return r1, w1, r2, w2


def spawn_worker(library: str, function: str) -> tuple[int, int, int, mmap.mmap] | None:
    """A library checker's worker as a new interpreter running
    :func:`pmemsim.pmlog.serve.spawned`, leading its own process group: its pid, the ends
    of its pipes here (to it, from it), and its judging word. None where one cannot be
    started so (fork one then).

    Not a fork: pmemsim forked a worker while it starts, and then every page it wrote was a
    fault first (a short check's run took about 4 ms longer, most of its worker's cost);
    posix_spawn shares nothing to copy. The new interpreter takes 10 ms or so to load the
    library, on another CPU, while this one reads and replays the log."""
    if not _spawnable():
        return None
    from . import serve

    r1, w1, r2, w2 = worker_pipes()
    word = os.memfd_create("pmemsim-judging", os.MFD_CLOEXEC)
    judging = None
    try:
        os.ftruncate(word, serve.WORD)
        judging = mmap.mmap(word, serve.WORD)
        package = os.path.dirname(os.path.dirname(os.path.abspath(serve.__file__)))
        # No site: not even the packages a venv adds are needed. Unbuffered: a checker's
        # stdout is then written as it prints, in order with its stderr, where a fully
        # buffered stdout (not a terminal) would put every line of stderr first.
        options = ["-E", "-S", "-u"]
        if sys.flags.dont_write_bytecode:
            options.append("-B")
        if sys.pycache_prefix:
            options += ["-X", f"pycache_prefix={sys.pycache_prefix}"]
        argv = [sys.executable, *options, "-c", serve.BOOT, package]
        argv += [str(r1), str(w2), str(word), library, function]
        # dup2 onto itself clears close-on-exec: these three, and no other, are inherited.
        keep = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in (r1, w2, word)]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=keep, setpgroup=0)
    except OSError:
        os.close(w1)
        os.close(r2)
        if judging is not None:
            judging.close()
        return None
    finally:
        for fd in (r1, w2, word):
            os.close(fd)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(pid, os.SCHED_BATCH, os.sched_param(0))  # as fork(background)
    return pid, w1, r2, judging


def _spawnable() -> bool:
    """Whether :func:`spawn_worker` can start a worker: posix_spawn, an interpreter to run
    (not a frozen application's executable), one that finds its library without PYTHONHOME
    (``-E`` ignores it), and a C library whose posix_spawn clears close-on-exec of a
    descriptor dup2'd onto itself (glibc 2.29 and later)."""
    if not (hasattr(os, "posix_spawn") and hasattr(os, "memfd_create") and sys.executable):
        return False
    if "PYTHONHOME" in os.environ or getattr(sys, "frozen", False):  # (frozen: no python)
        return False
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
        major, minor = (int(x) for x in version.split(".")[:2])
    except (AttributeError, OSError, ValueError):
        return False
    return name == "glibc" and (major, minor) >= (2, 29)


#: Workers started before the command line was parsed (:func:`start_early`), by library and
#: function, until the check takes one.
_EARLY: dict[tuple[str, str], tuple[int, int, int, mmap.mmap]] = {}


def start_early(spec: str) -> None:
    """Spawn the worker of the library checker ``spec`` (``LIB.so:FUNCTION``) now, at the
    start of the command: it loads the library while this process imports and parses (a
    worker started once the checker is parsed made a short check wait for it). A spec the
    check never takes is ended by :func:`end_early`."""
    from .serve import library_spec

    parsed = library_spec(spec)
    if parsed is not None and parsed not in _EARLY:
        started = spawn_worker(*parsed)
        if started is not None:
            _EARLY[parsed] = started


def take_early(library: str, function: str) -> tuple[int, int, int, mmap.mmap] | None:
    return _EARLY.pop((library, function), None)


def end_early() -> None:
    """End the workers :func:`start_early` started that no check took."""
    while _EARLY:
        _, (pid, to, answers, judging) = _EARLY.popitem()
        end_group(pid)
        for fd in (to, answers):
            with contextlib.suppress(OSError):
                os.close(fd)
        judging.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def end_group(pid: int) -> None:
    """Kill the process group a child forked with ``group=True`` leads (before the child is
    reaped: until then its pid names no other group)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def read_until_exit(pid: int, fd: int) -> bytes:
    """What the child ``pid`` writes to ``fd`` until it exits: a process it started that
    holds the pipe's other end would keep end-of-file from ever coming."""
    import select

    data = bytearray()
    try:
        exited = os.pidfd_open(pid)
    except (AttributeError, OSError):
        exited = -1  # (no pidfd: end-of-file alone ends the reading)
    try:
        os.set_blocking(fd, False)
        watch = select.poll()
        watch.register(fd, select.POLLIN)
        if exited >= 0:
            watch.register(exited, select.POLLIN)
        while True:
            ready = {f for f, _ in watch.poll()}
            at_end = _drain(fd, data)
            if at_end or exited in ready:
                if not at_end:
                    _drain(fd, data)
                return bytes(data)
    finally:
        if exited >= 0:
            os.close(exited)


def _drain(fd: int, data: bytearray) -> bool:
    """Read what ``fd`` holds now into ``data``; True at end of file."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        data += chunk
