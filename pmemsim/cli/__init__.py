"""The ``pmemsim`` command. Each subcommand lives in its own module with a ``register``.

Exit statuses everywhere (docs/cli.md): 0 every verdict as expected; 1 a verdict differs or
a check errored; 2 bad input or usage, with a message; 130 / 143 stopped by SIGINT /
SIGTERM. A traceback only for pmemsim's own bugs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import PmemError
from .check import CheckFileError, load_checks
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    UsageProblem,
    stop_on_sigterm,
)
from .discover import restored_imports

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageProblem", "load_checks", "main"]

#: Subcommand modules, in the order ``pmemsim --help`` lists them.
COMMANDS = ("check", "info", "validate", "log", "record")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pmemsim",
        description="Crash-consistency testing for persistent-memory programs.",
        epilog="Exit status: 0 every verdict as expected, 1 a verdict differs or a check "
        "errored, 2 bad input or usage (docs/cli.md).",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_sigterm(), restored_imports():
            return int(args.func(args))
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UsageProblem as exc:
        print(f"pmemsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CheckFileError as exc:
        print(f"pmemsim: ERROR {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PmemError as exc:
        print(f"pmemsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        # Every finally on the way here ran: worker pools and temporary folders are gone.
        terminated = isinstance(exc, Terminated)
        sys.stdout.flush()
        print(f"\npmemsim: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
