"""The pmemcheck / pmreorder store log: read it, check it, write it.

* :func:`parse_log` / :func:`read_log`: the log as records (:class:`LogFormatError` names
  the record and its position when it is malformed).
* :class:`Replay` / :func:`check_log`: replay a log on the simulator and judge every
  distinct crash image with a program (:class:`ProgramChecker`, as pmreorder runs one), a C
  function in a shared library (:class:`LibChecker`) or a Python function
  (:class:`FunctionChecker`).
* :func:`export_log`: a recorded workload written as a log, for pmreorder or check-log.

``pmemsim check-log`` and ``pmemsim export-log`` are the command-line faces of these; see
docs/check-log.md.
"""

from typing import TYPE_CHECKING

from .._lazy import first_use

if TYPE_CHECKING:
    from .check import LogCheckResult, LogFailure, LostPiece, check_log, replay_crash
    from .checkers import (
        FunctionChecker,
        LibChecker,
        ProgramChecker,
        load_function,
        recovery_checker,
    )
    from .export import DEFAULT_BASE, export_log, format_log
    from .grammar import (
        DeepSync,
        Fence,
        Flush,
        Log,
        LogFormatError,
        Marker,
        RegisterFile,
        Store,
        parse_log,
        read_log,
    )
    from .lint import LogFinding
    from .replay import LogPool, Replay

#: Each public name's module: the package imports none of them itself, so that a command
#: importing one submodule (check-log imports what a check needs) pays for only that.
_LAZY = {
    "LogCheckResult": ".check",
    "LogFailure": ".check",
    "LostPiece": ".check",
    "check_log": ".check",
    "replay_crash": ".check",
    "FunctionChecker": ".checkers",
    "LibChecker": ".checkers",
    "ProgramChecker": ".checkers",
    "load_function": ".checkers",
    "recovery_checker": ".checkers",
    "DEFAULT_BASE": ".export",
    "export_log": ".export",
    "format_log": ".export",
    "DeepSync": ".grammar",
    "Fence": ".grammar",
    "Flush": ".grammar",
    "Log": ".grammar",
    "LogFormatError": ".grammar",
    "Marker": ".grammar",
    "RegisterFile": ".grammar",
    "Store": ".grammar",
    "parse_log": ".grammar",
    "read_log": ".grammar",
    "LogFinding": ".lint",
    "LogPool": ".replay",
    "Replay": ".replay",
}

__all__ = [
    "DEFAULT_BASE",
    "DeepSync",
    "Fence",
    "Flush",
    "FunctionChecker",
    "Log",
    "LogCheckResult",
    "LogFailure",
    "LogFinding",
    "LogFormatError",
    "LibChecker",
    "LogPool",
    "LostPiece",
    "Marker",
    "ProgramChecker",
    "RegisterFile",
    "Replay",
    "Store",
    "check_log",
    "export_log",
    "format_log",
    "load_function",
    "parse_log",
    "read_log",
    "recovery_checker",
    "replay_crash",
]

__getattr__ = first_use(__name__, _LAZY)
