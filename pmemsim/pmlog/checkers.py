"""The programs and functions that judge one crash image of a log.

* :class:`ProgramChecker`: any program, as pmreorder runs it. The image's file path is
  appended as the last argument; ``PMREORDER_MARKERS`` is set (see
  :mod:`pmemsim.pmlog.check`). Exit status 0 means consistent.
* :class:`LibChecker`: ``int FUNCTION(const char *path)`` in a shared library, as pmreorder's
  library checker takes it: 1 means consistent, anything else inconsistent. It runs in a
  worker process (:mod:`pmemsim.pmlog.workers`), so a checker that crashes costs a restart,
  not the run.
* :class:`FunctionChecker`: a Python function called in this process (or in worker
  processes, with ``jobs`` > 1) with the image as a read-only memoryview, valid for the call
  only (``bytes(image)`` keeps a copy). Returning False or raising means inconsistent.
  :func:`pmemsim.current_crash` tells it the crash point and markers; ``PMREORDER_MARKERS``
  is set as for a program.

Several registered files: a checker judges each file's image (pmreorder's protocol: the image
is consistent when every file is), or, with ``all_files``, all of one image's files at once
(a program gets every file's path, in the order the log first registers them; a function a
dict from registered path to memoryview).

Every checker run has a time limit (``timeout``, :data:`DEFAULT_TIMEOUT` unless given;
None: none), so that a checker looping on a bad image costs the limit, not the check: a
program's process group is killed, a library's worker process ends itself, a Python function
is interrupted inside its run (:class:`CheckerStopped`, raised by
:class:`~pmemsim.explore.runtimer.RunTimer` as a recovery's ``run_timeout`` is). A verdict
that is not the checker's own answer, because its run ran out of time or crashed, is a
:class:`Fault` (a ``str`` whose ``kind`` says which): it counts as inconsistent, and reports
count those apart.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass
from ..errors import USER_FAILURES, ErrorCode, InvalidArgumentError
from .serve import TAIL as _TAIL
from .serve import library_spec

if TYPE_CHECKING:
    import subprocess

    from ..explore.runtimer import RunTimer

__all__ = [
    "DEFAULT_TIMEOUT",
    "CheckerStopped",
    "Fault",
    "FunctionChecker",
    "LibChecker",
    "ProgramChecker",
    "load_function",
    "recovery_checker",
]


#: Seconds a checker program, library function or Python function may take on one image
#: (per run) unless told otherwise: as long as a Python recovery's ``run_timeout``.
DEFAULT_TIMEOUT = 10.0


class Fault(str):
    """A verdict the checker did not give: its run ran out of time (``kind`` "timeout") or
    crashed ("crash"). It is inconsistent like any other."""

    __slots__ = ()
    kind = ""

    def relabel(self, text: str) -> Fault:
        """``text`` (this verdict, worded otherwise) as a fault of the same kind."""
        return type(self)(text)


class TimedOut(Fault):
    __slots__ = ()
    kind = "timeout"


class Crashed(Fault):
    __slots__ = ()
    kind = "crash"


def timed_out(seconds: float) -> TimedOut:
    """The verdict of a run stopped at its time limit: says so, and names the limit."""
    return TimedOut(f"timed out after {seconds:g} s (the time limit per checker run)")


def relabel(verdict: str, text: str) -> str:
    """``text`` standing for ``verdict``: a fault stays one (of the same kind)."""
    return verdict.relabel(text) if isinstance(verdict, Fault) else text


def check_timeout(timeout: float | None) -> None:
    """A time limit is None (none) or a positive, finite number of seconds."""
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"timeout={timeout!r}: expected a positive, finite number of seconds, or None",
        )


ImageFn = Callable[[Any], object]


@dataclass(frozen=True)
class FunctionChecker:
    """A Python function judging images.

    ``timeout``: seconds one call may take (:data:`DEFAULT_TIMEOUT` unless given; None: no
    limit). Past it the call is interrupted and the image's verdict is "timed out after T s
    (the time limit per checker run)", as a library's. In this process the judges time each
    call (:meth:`timer`: SIGALRM in the main thread, a watchdog thread elsewhere); in a
    worker process the worker ends itself. Calling the checker object itself sets no limit.
    """

    fn: ImageFn
    label: str
    all_files: bool = False
    timeout: float | None = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        check_timeout(self.timeout)

    def __call__(self, image: Any) -> str | None:
        """None when the image is consistent, else what the function said (no time limit:
        see :meth:`timer`)."""
        try:
            ok = self.fn(image)
        except USER_FAILURES as exc:  # the user's checker failed: that is the verdict
            return raised(exc)
        return "returned False" if ok is False else None

    def timer(self) -> RunTimer | None:
        """A timer for this checker's calls in this process (None: no limit): a call it
        interrupts raises :class:`CheckerStopped`, whose text is the timed-out verdict."""
        if self.timeout is None:
            return None
        global _run_timer, _last_message
        if _run_timer is None:
            from ..explore.runtimer import RunTimer

            _run_timer = RunTimer
        seconds, message = _last_message
        if seconds != self.timeout:
            message = str(timed_out(self.timeout))
            _last_message = (self.timeout, message)
        return _run_timer(self.timeout, message, CheckerStopped, frequent=True)


# (FunctionChecker.timer's: RunTimer once imported, and the last limit's timed-out message,
# made once, not per check: 14,000 of the 21,000 instructions of making a check's timer.)
_run_timer: type[RunTimer] | None = None
_last_message: tuple[float, str] = (0.0, "")


class CheckerStopped(BaseException):
    """Raised inside a Python checker's call that ran past its time limit; its text is the
    verdict. A BaseException, so that the checker's own ``except Exception`` lets it by
    (and it is raised again every 50 ms until the call ends)."""


class CheckerTimedOut(Exception):
    """A Python checker's run stopped at its time limit (a recovery's ``run_timeout``)."""


def raised(exc: BaseException) -> str:
    """A checker's exception as its verdict."""
    if isinstance(exc, CheckerStopped):
        return TimedOut(str(exc))
    if isinstance(exc, CheckerTimedOut):
        return TimedOut(f"timed out: {exc}")
    if isinstance(exc, SystemExit):  # (even sys.exit(0): a checker returns its verdict)
        return f"called sys.exit({exc.code!r}){_innermost(exc)}"
    return f"raised {type(exc).__name__}: {exc}{_innermost(exc)}"


def _innermost(exc: BaseException) -> str:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    code = last.tb_frame.f_code
    return f" (at {code.co_filename}:{last.tb_lineno} in {code.co_name})"


def _status(returncode: int) -> str:
    """How a process ended, in words."""
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"killed by signal {-returncode}{name}"
    return f"exit status {returncode}"


@dataclass(frozen=True)
class ProgramChecker:
    """A program judging images written to files."""

    argv: tuple[str, ...]
    timeout: float | None = DEFAULT_TIMEOUT
    all_files: bool = False

    def __post_init__(self) -> None:
        check_timeout(self.timeout)

    @property
    def label(self) -> str:
        import shlex

        return shlex.join(self.argv)

    def run(self, paths: Sequence[str] | str, markers: str | Sequence[str]) -> str | None:
        """None when the program exits 0 on the image file(s), else what happened.

        ``markers``: the value of PMREORDER_MARKERS (a sequence is ``|``-joined).
        """
        import subprocess  # a program checker's: not every check's start-up

        env = dict(os.environ)
        env["PMREORDER_MARKERS"] = markers if isinstance(markers, str) else "|".join(markers)
        files = [paths] if isinstance(paths, str) else list(paths)
        if _STOPPING.is_set():
            return "not run: stopping"
        try:
            proc = subprocess.Popen(
                [*self.argv, *files],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a timeout or Ctrl-C ends it all
            )
        except OSError as exc:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"cannot run the checker {self.argv[0]!r}: {exc.strerror}"
            ) from None
        with _LOCK:
            _RUNNING.add(proc)
        try:
            out = _until_exit(proc, self.timeout)
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            with _LOCK:
                _RUNNING.discard(proc)
        if out is None:
            assert self.timeout is not None
            return timed_out(self.timeout)
        if proc.returncode == 0:
            return None
        text = out.decode(errors="replace").strip()
        if len(text) > _TAIL:
            text = "..." + text[-_TAIL:]
        verdict = f"{_status(proc.returncode)}{': ' + text if text else ''}"
        # A signal is a crash (SIGSEGV, an assert's SIGABRT...): counted apart, still
        # inconsistent.
        return Crashed(verdict) if proc.returncode < 0 else verdict


#: Checker programs running now (in any thread), so that an interrupt ends them at once.
_RUNNING: set[subprocess.Popen[bytes]] = set()
_LOCK = threading.Lock()
_STOPPING = threading.Event()


def stop_programs() -> None:
    """Kill every checker program running, and start no more until :func:`resume_programs`
    (Ctrl-C or SIGTERM reached the main thread)."""
    _STOPPING.set()
    with _LOCK:
        running = list(_RUNNING)
    for proc in running:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def resume_programs() -> None:
    _STOPPING.clear()


def _until_exit(proc: subprocess.Popen[bytes], timeout: float | None) -> bytes | None:
    """The tail of what ``proc`` printed, once it exited; None when it ran past ``timeout``
    (its group killed). The verdict is its exit: a process it left in the background,
    holding the output pipe, neither delays the verdict (it was read as a timeout) nor
    outlives its image (it could read or write the next one), so its group is killed."""
    import select

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = bytearray()
    try:
        exited = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        exited = -1
    try:
        watch = select.poll()
        watch.register(fd, select.POLLIN)
        if exited >= 0:
            watch.register(exited, select.POLLIN)
        while proc.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                _kill_group(proc)
                return None
            ms = None if left is None else left * 1000
            if exited < 0:  # the exit polled for
                ms = 50 if ms is None else min(50, ms)
            for ready, _ in watch.poll(ms):
                if ready == fd and _drain(fd, tail):
                    watch.unregister(fd)  # EOF: only the exit is left to wait for
        _drain(fd, tail)
    finally:
        if exited >= 0:
            os.close(exited)
        proc.stdout.close()
    _kill_group(proc)  # what it left behind
    return bytes(tail)


def _drain(fd: int, tail: bytearray) -> bool:
    """Read what the pipe holds now into ``tail`` (its last bytes kept: a chatty checker's
    output is not held whole); True at end of file."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            return True
        tail += data
        if len(tail) > 4 * _TAIL:
            del tail[: len(tail) - 4 * _TAIL]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# -- library checkers ----------------------------------------------------------------------


@dataclass(frozen=True)
class LibChecker:
    """``int FUNCTION(const char *path)`` in the shared library ``library``; an image is
    consistent when it returns ``consistent`` (1, as pmreorder's code documents it; its
    manual and its comparison take 0)."""

    library: str
    function: str
    timeout: float | None = DEFAULT_TIMEOUT
    consistent: int = 1

    def __post_init__(self) -> None:
        check_timeout(self.timeout)
        if type(self.consistent) is not int or not -(2**31) <= self.consistent < 2**31:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{self.consistent!r}: a C int is what FUNCTION returns"
            )

    @property
    def label(self) -> str:
        return f"{self.library}:{self.function}"

    @property
    def all_files(self) -> bool:
        return False

    @classmethod
    def parse(
        cls, spec: str, timeout: float | None = DEFAULT_TIMEOUT, consistent: int = 1
    ) -> LibChecker:
        """``LIB.so:FUNCTION``. The library is loaded in a worker process started here and
        kept for the check (a library whose constructor crashes cannot take this one); it
        loads while this process reads and replays the log. A library that cannot be
        loaded (no such file, no such function) is refused by the check, or at once by
        :meth:`loaded`."""
        parsed = library_spec(spec)
        if parsed is None:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{spec!r}: expected LIBRARY.so:FUNCTION (a C function name)"
            )
        checker = cls(*parsed, timeout, consistent)
        from .workers import spare_worker

        spare_worker(checker)
        return checker

    def loaded(self) -> LibChecker:
        """This checker, once its library loaded in a worker: InvalidArgumentError if it
        cannot be (no such file, no such function, or its constructor crashed)."""
        from .workers import spare_loaded

        spare_loaded(self)
        return self

    def close(self) -> None:
        """End the worker kept for this checker (since :meth:`parse`, or since its last check:
        a later check with an equal checker takes it), its process and its folder. Those
        left are ended as this process exits."""
        workers = sys.modules.get(f"{__package__}.workers")
        if workers is not None:
            workers.close_spares(self)


# -- Python checkers -----------------------------------------------------------------------


def load_function(spec: str) -> ImageFn:
    """``MODULE:FUNCTION`` (an importable module, the current folder included) or
    ``FILE.py:FUNCTION``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION"
        )
    try:
        if where.endswith(".py") or os.sep in where:
            path = Path(where)
            mod_name = f"pmemsim_checker_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None or not path.is_file():
                raise InvalidArgumentError(ErrorCode.EINVAL, f"{where}: no such Python file")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        else:
            added = os.getcwd() not in sys.path
            if added:
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(where)
            finally:
                if added:
                    sys.path.remove(os.getcwd())
    except InvalidArgumentError:
        raise
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from an import, too
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{where}: importing it failed: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{where} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


def recovery_checker(check: Any) -> ImageFn:
    """A CrashCheck's recovery as an image checker: each image is mapped into a fresh set on
    the simulator and ``check.recover(view)`` runs on it, as the crash check itself runs it,
    under the check's ``run_timeout`` (past it: :class:`CheckerTimedOut`). That is its time
    limit: its :class:`FunctionChecker` takes ``timeout=None``."""
    from ..explore.runtimer import RunTimer
    from ..markers import CrashInfo, current_crash
    from ..snapshot import Snapshot

    page = 4096
    timer = RunTimer(check.run_timeout)

    def judge(image: memoryview) -> bool:
        from ..explore import CrashConsistencyError, run_recovery
        from ..explore.report import HANG_ERRORS

        data = bytes(image)
        pages = {i // page: data[i : i + page] for i in range(0, len(data), page)}
        snap = Snapshot("image", len(data), pages)
        info = current_crash() or CrashInfo(-1, "image", ())
        err = run_recovery(check.recover, snap, check.granularity, info, timer=timer)
        if type(err) is CrashConsistencyError:  # recovery returned False
            return False
        if isinstance(err, HANG_ERRORS):  # (a BaseException: it would end the check)
            raise CheckerTimedOut(str(err)) from None
        if err is not None:
            raise err  # keeps its traceback: the report names recovery's own line
        return True

    return judge
