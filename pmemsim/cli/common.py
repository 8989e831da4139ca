"""What every ``pmemsim`` subcommand shares: exit statuses, the bad-input exception, argument
types that reject bad values before any work, and how signals stop a run.

Exit statuses (docs/cli.md): 0 every verdict as expected; 1 a verdict differs or a check
errored; 2 bad input or usage; 130 / 143 interrupted by SIGINT / SIGTERM (after cleaning up).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "UsageProblem",
    "count",
    "finite_seconds",
    "plural",
    "stop_on_sigterm",
    "writable_file",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The shell's convention: 128 + the signal number.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class UsageProblem(Exception):
    """Bad input to the command line: reported with exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every ``finally`` (temporary
    folders, worker pools) runs on the way out."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the duration (the default
    action would end the process without running any cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 check``, ``2 checks``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def count(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least`` (and at most ``most``); the
    message names the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is less than {least}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{value} is more than {most}")
        return value

    parse.__name__ = f"integer >= {least}" if most is None else f"integer {least}..{most}"
    return parse


def finite_seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds (not nan, not inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive, finite number")
    return value


def writable_file(path: str, option: str, inputs: Mapping[str, str] | None = None) -> Path:
    """``path`` as a file this process can create or overwrite, checked by opening it before
    any work is done (the work would otherwise be lost at the end; permission bits do not
    tell root the truth). Nothing is left behind: a file created to try is removed, an
    existing one is opened for appending and closed untouched. UsageProblem otherwise, and
    for a path that is one of ``inputs`` (see :func:`not_an_input`). Returned absolute: the
    user's code may change the working directory before the output is written (a check
    file that ``os.chdir``s as it is imported)."""
    p = Path(path)
    if p.is_dir():
        raise UsageProblem(f"{option} {path}: is a folder")
    not_an_input(path, option, inputs or {})
    existed = p.exists()
    flags = os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if existed else os.O_CREAT | os.O_EXCL)
    try:
        os.close(os.open(p, flags, 0o644))
    except OSError as exc:
        raise UsageProblem(f"{option} {path}: cannot write it: {exc.strerror}") from None
    if not existed:
        p.unlink()
    return p.absolute()


def not_an_input(path: str, option: str, inputs: Mapping[str, str]) -> None:
    """UsageProblem when the output ``path`` is the same file as one of ``inputs`` (what it
    is -> its path): a mistyped or tab-completed ``--json`` would overwrite the log that
    took an hour to record, or the checker's source."""
    for what, other in inputs.items():
        try:
            same = os.path.samefile(path, other)
        except (OSError, ValueError):
            continue  # one of them does not exist (yet): not the same file
        if same:
            raise UsageProblem(f"{option} {path}: is {what}, which it would overwrite")


def write_output(path: str | Path, data: str | bytes, option: str) -> Path:
    """Write what ``option`` asked for to ``path``, whole or not at all
    (:mod:`pmemsim.reportfile`); a path that cannot take it is the user's problem (exit 2),
    not a traceback."""
    from ..reportfile import write_file

    try:
        return write_file(path, data)
    except OSError as exc:
        raise UsageProblem(f"{option} {path}: cannot write it: {exc.strerror or exc}") from None


def _internal_dirs() -> tuple[str, ...]:
    from ..provenance import _PACKAGE_DIRS

    prefixes = {os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix)}
    return (*_PACKAGE_DIRS, *sorted(prefixes))


def user_frame(exc: BaseException) -> str | None:
    """``FILE:LINE in FUNCTION`` of the innermost frame of ``exc``'s traceback that is the
    user's (not pmemsim's, not the standard library's or an installed package's); for a
    SyntaxError, where the bad line is."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    internal = _internal_dirs()
    found = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        name = code.co_filename
        if not name.startswith("<") and not os.path.abspath(name).startswith(internal):
            found = f"{name}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return found


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line (SystemExit says what it exited with)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the code called sys.exit({exc.code!r})"
    first = str(exc).split("\n", 1)[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


#: Module names of check files outside packages (never a name the user could import).
_PRIVATE = "pmemsim_check_"


@contextmanager
def restored_imports() -> Iterator[None]:
    """Put ``sys.path`` back afterwards, and forget the modules imported meanwhile from the
    folders that were added to it (check files and the user's modules: a later run in this
    process, a test's, imports them afresh); pmemsim's own and installed modules stay.
    (Here, not in discover.py: every command runs inside it, most never discover.)"""
    path = list(sys.path)
    before = set(sys.modules)
    try:
        yield
    finally:
        added = tuple(os.path.abspath(p) + os.sep for p in set(sys.path) - set(path) if p)
        internal = _internal_dirs()
        sys.path[:] = path
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            where = os.path.abspath(getattr(module, "__file__", None) or "/")
            if name.startswith(_PRIVATE) or (
                added and where.startswith(added) and not where.startswith(internal)
            ):
                del sys.modules[name]
