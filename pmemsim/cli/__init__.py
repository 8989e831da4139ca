"""The ``pmemsim`` command. Each subcommand lives in its own module with a ``register``.

Exit statuses everywhere (docs/cli.md): 0 every verdict as expected; 1 a verdict differs or
a check errored; 2 bad input or usage, with a message; 130 / 143 stopped by SIGINT /
SIGTERM. A traceback only for pmemsim's own bugs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import PmemError
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    UsageProblem,
    restored_imports,
    stop_on_sigterm,
)
from .terminal import columns

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageProblem", "load_checks", "main", "run"]

#: Subcommand modules, in the order ``pmemsim --help`` lists them.
COMMANDS = ("check", "info", "validate", "log", "record")
#: Each subcommand's module: a command registers only its own (start-up time; ``pmemsim
#: --help`` and mistakes register them all).
MODULE_OF = {
    "check": "check",
    "replay": "check",
    "info": "info",
    "validate": "validate",
    "check-log": "log",
    "export-log": "log",
    "record": "record",
    "check-program": "record",
}


def __getattr__(name: str) -> object:
    if name == "load_checks":  # re-exported; its module is imported only when used
        from .check import load_checks

        return load_checks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked (importlib.metadata
    costs milliseconds every other command would pay)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            mine = version("pmemsim")
        except PackageNotFoundError:  # pragma: no cover - run from a checkout, not installed
            mine = "unknown"
        print(f"pmemsim {mine} (Python {sys.version.split()[0]})")
        parser.exit()


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the width: argparse asks shutil, whose import (bz2 and
    lzma with it) is 1.5 ms of every command's start-up, help or not."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=columns() - 2)


class _Parser(argparse.ArgumentParser):
    # (Subcommands' parsers are made of the parent's class.)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or (``command``) of that one's module only."""
    parser = _Parser(
        prog="pmemsim",
        description="Crash-consistency testing for persistent-memory programs.",
        epilog="Exit status: 0 every verdict as expected, 1 a verdict differs or a check "
        "errored, 2 bad input or usage (docs/cli.md).",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    only = MODULE_OF.get(command or "")
    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        with stop_on_sigterm(), restored_imports():
            return int(args.func(args))
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UsageProblem as exc:
        print(f"pmemsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PmemError as exc:
        print(f"pmemsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        # A check file's error (CheckFileError) comes from cli.check, if it was imported.
        check = sys.modules.get(f"{__name__}.check")
        if check is None or not isinstance(exc, check.CheckFileError):
            raise
        print(f"pmemsim: ERROR {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        # Every finally on the way here ran: worker pools and temporary folders are gone,
        # but for a folder whose finally the signal came before (or in).
        scratch = sys.modules.get("pmemsim.scratch")  # (not imported: no folder made)
        if scratch is not None:
            scratch.remove_left()
        terminated = isinstance(exc, Terminated)
        sys.stdout.flush()
        print(f"\npmemsim: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _c_checker(argv: list[str]) -> tuple[str | None, bool]:
    """For a check-log whose checker is C code (a ``--checker-lib`` function or a program
    after ``--``): the library's spec if there is one, and True (no code of the user's
    runs in this process). Read before the arguments are parsed, in their plain spellings
    only: the only other checkers, ``--checker-py`` and ``--recovery``, cannot be given
    with these, so a wrong True is a usage error anyway."""
    if not argv or argv[0] != "check-log":
        return None, False
    spec = None
    for i, arg in enumerate(argv):
        if arg == "--":  # a checker program's own arguments from here
            return spec, True
        if arg == "--checker-lib" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith("--checker-lib="):
            spec = arg.partition("=")[2]
    return spec, spec is not None


def run() -> NoReturn:
    """The command line (``pmemsim``, ``python -m pmemsim``): :func:`main`, then exit with
    its status without waiting for threads the checked code left running. A recovery that
    starts a thread and never ends it would otherwise hold the process open after its
    report, forever for an endless one (a CI job then runs into its own time limit)."""
    import gc
    import threading

    # A young collection every 10,000 allocations, not 700: pmemsim's start-up makes some
    # 15,000 objects for the collector, nearly all living to the end, and the default ran 35
    # collections over them (2% of a short check's instructions). Garbage cycles are still
    # collected young.
    gc.set_threshold(10_000, 10, 10)
    library, c_only = _c_checker(sys.argv[1:])
    if library is not None:
        # Its worker loads the library (a new interpreter's 10 ms or so) on another CPU
        # while this process imports and parses; the check takes it if it names the same.
        from ..pmlog.forked import start_early

        start_early(library)
    try:
        code = main()
    finally:
        if library is not None:
            from ..pmlog.forked import end_early

            end_early()
    # Python's collections at exit walk every object left, pmemsim's modules' included: about
    # 7 ms of CPU in a 45 ms check-log run. Frozen objects are skipped: freed as ever when
    # their modules go, or, in reference cycles, not at all (Python promises no finalizer then).
    gc.freeze()
    left = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if left:
        names = ", ".join(sorted({t.name for t in left}))
        print(
            f"pmemsim: not waiting for {len(left)} thread(s) that the checked code left "
            f"running ({names})",
            file=sys.stderr,
        )
    elif not c_only:
        sys.exit(code)
    # Without tearing the interpreter down: the threads left would hold it; and where the
    # checker is C code, only pmemsim's objects are left, none with a file of the user's to
    # flush, and freeing them took 1.3 ms of a 40 ms check.
    import atexit

    atexit._run_exitfuncs()  # (pmemsim's own: sources closed, their files written back)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
