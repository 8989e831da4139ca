"""The programs and functions that judge one crash image of a log.

* :class:`ProgramChecker`: any program, as pmreorder runs it. The image's file path is
  appended as the last argument; ``PMREORDER_MARKERS`` is set (see
  :mod:`pmemsim.pmlog.check`). Exit status 0 means consistent.
* :class:`LibChecker`: ``int FUNCTION(const char *path)`` in a shared library, as pmreorder's
  library checker takes it: 1 means consistent, anything else inconsistent. It runs in a
  worker process (:class:`LibWorker`), so a checker that crashes costs a restart, not the run.
* :class:`FunctionChecker`: a Python function called in this process with the image as a
  read-only memoryview, valid for the call only (``bytes(image)`` keeps a copy). Returning
  False or raising means inconsistent. :func:`pmemsim.current_crash` tells it the crash
  point and markers; ``PMREORDER_MARKERS`` is set as for a program.

Several registered files: a checker judges each file's image (pmreorder's protocol: the image
is consistent when every file is), or, with ``all_files``, all of one image's files at once
(a program gets every file's path, in the order the log first registers them; a function a
dict from registered path to memoryview).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ErrorCode, InvalidArgumentError

__all__ = [
    "FunctionChecker",
    "LibChecker",
    "LibWorker",
    "ProgramChecker",
    "load_function",
    "recovery_checker",
]

#: How much of a failing program's output a report keeps.
_TAIL = 2000

ImageFn = Callable[[Any], object]


@dataclass(frozen=True)
class FunctionChecker:
    """A Python function judging images in this process."""

    fn: ImageFn
    label: str
    all_files: bool = False

    def __call__(self, image: Any) -> str | None:
        """None when the image is consistent, else what the function said."""
        try:
            ok = self.fn(image)
        except Exception as exc:  # the user's checker failed: that is the verdict
            where = _innermost(exc)
            return f"raised {type(exc).__name__}: {exc}{where}"
        return "returned False" if ok is False else None


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
    timeout: float | None = None
    all_files: bool = False

    @property
    def label(self) -> str:
        import shlex

        return shlex.join(self.argv)

    def run(self, paths: Sequence[str] | str, markers: str | Sequence[str]) -> str | None:
        """None when the program exits 0 on the image file(s), else what happened.

        ``markers``: the value of PMREORDER_MARKERS (a sequence is ``|``-joined).
        """
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
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return f"timed out after {self.timeout} s"
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            with _LOCK:
                _RUNNING.discard(proc)
        if proc.returncode == 0:
            return None
        text = out.decode(errors="replace").strip()
        if len(text) > _TAIL:
            text = "..." + text[-_TAIL:]
        return f"{_status(proc.returncode)}{': ' + text if text else ''}"


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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# -- library checkers ----------------------------------------------------------------------


@dataclass(frozen=True)
class LibChecker:
    """``int FUNCTION(const char *path)`` in the shared library ``library``."""

    library: str
    function: str
    timeout: float | None = None

    @property
    def label(self) -> str:
        return f"{self.library}:{self.function}"

    @property
    def all_files(self) -> bool:
        return False

    @classmethod
    def parse(cls, spec: str, timeout: float | None = None) -> LibChecker:
        """``LIB.so:FUNCTION``; checks that the library loads and has the function (in a
        throwaway process: a library whose constructor crashes cannot take this one)."""
        lib, sep, fn = spec.rpartition(":")
        if not sep or not lib or not fn or not fn.isidentifier():
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{spec!r}: expected LIBRARY.so:FUNCTION (a C function name)"
            )
        if os.sep not in lib:
            lib = os.path.join(".", lib) if os.path.exists(lib) else lib
        checker = cls(lib, fn, timeout)
        LibWorker(checker).close()
        return checker


_LEN = struct.Struct("<I")


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class _Reader:
    """Length-prefixed pickles from a pipe, with a deadline per message."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def _fill(self, n: int, deadline: float | None) -> bool:
        while len(self.buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def get(self, deadline: float | None = None) -> object:
        """The next message; EOFError when the other end is gone."""
        if not self._fill(_LEN.size, deadline):
            raise EOFError
        (n,) = _LEN.unpack_from(self.buf)
        if not self._fill(_LEN.size + n, deadline):
            raise EOFError
        data = bytes(self.buf[_LEN.size : _LEN.size + n])
        del self.buf[: _LEN.size + n]
        return pickle.loads(data)


def _serve(load: Callable[[], Callable[[Any], object]], rfd: int, wfd: int) -> None:
    """A worker's loop: ``(path(s), markers, crash info)`` in, a verdict out, until EOF."""
    from ..markers import set_crash

    try:
        judge = load()
    except InvalidArgumentError as exc:
        _send(wfd, ("error", exc.message))
        return
    except Exception as exc:
        _send(wfd, ("error", f"{type(exc).__name__}: {exc}"))
        return
    _send(wfd, ("ready", ""))
    from ..markers import reset_crash

    reader = _Reader(rfd)
    last_markers: str | None = None
    token: object = None
    last_info: object = None
    try:
        while True:
            try:
                batch: Any = reader.get()
            except EOFError:
                return
            verdicts = []
            for files, markers, info in batch:
                if markers != last_markers:
                    os.environ["PMREORDER_MARKERS"] = last_markers = markers
                if info != last_info:  # the crash info, for Python checkers
                    if token is not None:
                        reset_crash(token)
                    token, last_info = set_crash(info), info
                verdicts.append(judge(files))
            _send(wfd, verdicts)
    finally:
        if token is not None:
            reset_crash(token)


#: One image for a worker: its file(s), PMREORDER_MARKERS, the crash info.
Request = tuple[list[str], str, object]


class LibWorker:
    """One worker process judging image files with a checker, restarted when it dies.

    For a :class:`LibChecker` the worker calls the C function on each file it is sent; for a
    :class:`FunctionChecker` it maps the files read-only and calls the function on them (a
    dict from registered path, ``names``, to memoryview when the checker takes all files).
    """

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
        self.starts = 0
        self._inflight: deque[list[Request]] = deque()
        self._start()

    def _load(self) -> Callable[[Any], object]:
        checker = self.checker
        if isinstance(checker, LibChecker):
            return _c_judge(checker)
        return _python_judge(checker, self.names)

    def _start(self) -> None:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                # A profiler or tracer (coverage, cProfile) of this process does not
                # survive into a forked child: stop it there.
                sys.setprofile(None)
                sys.settrace(None)
                # A crash of the checker is the checker's, reported by the parent: no
                # Python traceback for it.
                import faulthandler

                faulthandler.disable()
                os.close(w1)
                os.close(r2)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _serve(self._load, r1, w2)
            except BaseException:  # pmemsim's own bug: say what it was
                import traceback

                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        os.close(r1)
        os.close(w2)
        self.pid, self._to, self._from = pid, w1, _Reader(r2)
        self.starts += 1
        try:
            first: Any = self._from.get(time.monotonic() + 60)
            kind, text = first
        except (EOFError, TimeoutError):
            status = self._reap()
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"the checker {self.checker.label} failed to load: {status}"
            ) from None
        if kind != "ready":
            self.close()
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"cannot load the checker {self.checker.label}: {text}"
            )

    def _reap(self, kill: bool = False) -> str:
        if not self.pid:
            return "not running"
        if kill:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        for fd in (self._to, self._from.fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        code = os.waitstatus_to_exitcode(status)
        return _status(code)

    def close(self) -> None:
        if self.pid:
            with contextlib.suppress(OSError):
                os.close(self._to)
            self._to = -1
            self._reap(kill=True)

    def submit(self, batch: list[Request]) -> None:
        """Queue images for judging, as one message (answers come back by batch, oldest
        first: :meth:`collect`)."""
        self._inflight.append(batch)
        with contextlib.suppress(BrokenPipeError):  # it died: collect() says how
            _send(self._to, batch)

    @property
    def pending(self) -> int:
        """Batches submitted and not collected."""
        return len(self._inflight)

    def collect(self) -> list[str | None]:
        """The verdicts of the oldest batch submitted.

        When the worker dies or runs past its time on a batch, it is restarted and the
        batch is judged again an image at a time, so that the image that crashed or hung
        the checker is the one that gets that verdict; later batches are submitted again.
        """
        batch = self._inflight[0]
        per = self.timeout
        deadline = None if per is None else time.monotonic() + per * len(batch)
        try:
            verdicts: Any = self._from.get(deadline)
        except (EOFError, TimeoutError):
            self._reap(kill=True)
            self._start()
            verdicts = [self._alone(r) for r in batch]
            for later in list(self._inflight)[1:]:
                with contextlib.suppress(BrokenPipeError):
                    _send(self._to, later)
        self._inflight.popleft()
        return verdicts  # type: ignore[no-any-return]

    def _alone(self, request: Request) -> str | None:
        with contextlib.suppress(BrokenPipeError):
            _send(self._to, [request])
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            answer: Any = self._from.get(deadline)
        except TimeoutError:
            self._reap(kill=True)
            self._start()
            return f"timed out after {self.timeout} s"
        except EOFError:
            status = self._reap()
            self._start()
            return f"the checker crashed: {status}"
        return answer[0]  # type: ignore[no-any-return]


def _c_judge(checker: LibChecker) -> Callable[[Any], object]:
    """Loads the library in the worker, through cffi in ABI mode."""
    try:
        import cffi  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, "--checker-lib needs cffi (pip install 'pmemsim[real]')"
        ) from None
    ffi = cffi.FFI()
    ffi.cdef(f"int {checker.function}(const char *path);")
    try:
        lib = ffi.dlopen(checker.library)
    except OSError as exc:
        # cffi's message adds a guess of ctypes' that says nothing more.
        text = str(exc).split("  Additionally")[0].rstrip(".")
        raise InvalidArgumentError(ErrorCode.EINVAL, text) from None
    try:
        fn = getattr(lib, checker.function)
    except AttributeError:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{checker.library} has no function {checker.function!r}"
        ) from None

    def judge(files: list[str]) -> str | None:
        got = fn(os.fsencode(files[0]))
        return None if got == 1 else f"returned {got}"

    return judge


def _python_judge(checker: FunctionChecker, names: list[str]) -> Callable[[Any], object]:
    import mmap

    def judge(files: list[str]) -> str | None:
        maps: list[mmap.mmap] = []
        views: list[memoryview] = []
        try:
            for path in files:
                with open(path, "rb") as f:
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                maps.append(m)
                views.append(memoryview(m))
            arg: Any = dict(zip(names, views, strict=True)) if checker.all_files else views[0]
            return checker(arg)
        finally:
            for v in views:
                v.release()
            for m in maps:
                with contextlib.suppress(BufferError):
                    m.close()

    return judge


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
    the simulator and ``check.recover(view)`` runs on it, as the crash check itself runs it."""
    from ..markers import CrashInfo, current_crash
    from ..snapshot import Snapshot

    page = 4096

    def judge(image: memoryview) -> bool:
        from ..explore import CrashConsistencyError, run_recovery

        data = bytes(image)
        pages = {i // page: data[i : i + page] for i in range(0, len(data), page)}
        snap = Snapshot("image", len(data), pages)
        info = current_crash() or CrashInfo(-1, "image", ())
        err = run_recovery(check.recover, snap, check.granularity, info)
        if type(err) is CrashConsistencyError:  # recovery returned False
            return False
        if err is not None:
            raise err  # keeps its traceback: the report names recovery's own line
        return True

    return judge
