"""The programs and functions that judge one crash image of a log.

* :class:`ProgramChecker`: any program, as pmreorder runs it. The image is written to a fresh
  temporary file whose path is appended as the last argument; ``PMREORDER_MARKERS`` holds the
  markers under way at the crash, ``|``-joined. Exit status 0 means consistent.
* :class:`FunctionChecker`: a Python function called in this process with the image as a
  read-only memoryview, valid for the call only (``bytes(image)`` keeps a copy). Returning
  False or raising means inconsistent. :func:`pmemsim.current_crash` tells it the crash
  point and markers; ``PMREORDER_MARKERS`` is set as for a program.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ErrorCode, InvalidArgumentError

__all__ = ["FunctionChecker", "ProgramChecker", "load_function", "recovery_checker"]

#: How much of a failing program's output a report keeps.
_TAIL = 2000

ImageFn = Callable[[memoryview], object]


@dataclass(frozen=True)
class FunctionChecker:
    """A Python function judging images in this process."""

    fn: ImageFn
    label: str

    def __call__(self, image: memoryview) -> str | None:
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


@dataclass(frozen=True)
class ProgramChecker:
    """A program judging images written to files."""

    argv: tuple[str, ...]
    timeout: float | None = None

    @property
    def label(self) -> str:
        import shlex

        return shlex.join(self.argv)

    def run(self, path: str, markers: Sequence[str]) -> str | None:
        """None when the program exits 0 on the image at ``path``, else what happened."""
        env = dict(os.environ)
        env["PMREORDER_MARKERS"] = "|".join(markers)
        try:
            done = subprocess.run(
                [*self.argv, path],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {self.timeout} s"
        except OSError as exc:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"cannot run the checker {self.argv[0]!r}: {exc.strerror}"
            ) from None
        if done.returncode == 0:
            return None
        status = (
            f"killed by signal {-done.returncode}"
            if done.returncode < 0
            else f"exit status {done.returncode}"
        )
        out = done.stdout.decode(errors="replace").strip()
        if len(out) > _TAIL:
            out = "..." + out[-_TAIL:]
        return f"{status}{': ' + out if out else ''}"


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
    except Exception as exc:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{where}: importing it failed: {type(exc).__name__}: {exc}"
        ) from exc
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
