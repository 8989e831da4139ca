"""The ``pmemsim`` command. Each subcommand lives in its own module with a ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import PmemError
from .check import load_checks
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageProblem

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageProblem", "load_checks", "main"]

#: Subcommand modules, in the order ``pmemsim --help`` lists them.
COMMANDS = ("check", "info", "validate", "log")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pmemsim",
        description="Crash-consistency testing for persistent-memory programs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UsageProblem as exc:
        print(f"pmemsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PmemError as exc:
        print(f"pmemsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
