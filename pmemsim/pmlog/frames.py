"""pmemcheck's stack frames, read: where in the C program a store was made.

A frame reads ``0x109557: append_record (append.c:57)`` (a function with debug information),
``0x484E91B: ??? (in /usr/lib/x86_64-linux-gnu/libpmem2.so.1.0.0)`` (a library without it)
or ``append_record (append.c:57)`` (as export-log writes them).
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable
from typing import Any

from .._records import NamedTuple

__all__ = ["SourceLine", "source_line", "source_of", "trampoline"]

_SOURCE = re.compile(r"^(?:0x[0-9A-Fa-f]+: )?(?P<fn>.+?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


class SourceLine(NamedTuple):
    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line} in {self.function}"


def source_line(frames: tuple[str, ...]) -> SourceLine | None:
    """The first frame that names a source line of the program's own, or None.

    Frames inside libraries without debug information (``??? (in libpmem2.so.1)``) name no
    source line; frames inside the C library's own code (a memcpy in assembly, an internal
    ``__memcpy_avx_unaligned_erms``) are skipped too when a later frame names the caller.
    """
    fallback = None
    for f in frames:
        m = _SOURCE.match(f)
        if m is None:
            continue
        where = SourceLine(m["fn"], m["file"], int(m["line"]))
        if m["file"].endswith((".S", ".s")) or m["fn"].startswith("__"):
            fallback = fallback or where
            continue
        return where
    return fallback


def source_of(frames: tuple[str, ...]) -> str | None:
    """``append.c:57 in append_record``, or None (see :func:`source_line`)."""
    where = source_line(frames)
    return None if where is None else str(where)


def _call(fn: Any, a: Any, b: Any) -> None:
    fn(a, b)


_TRAMPOLINES: dict[SourceLine, Callable[[Any, Any, Any], None]] = {}


def trampoline(where: SourceLine) -> Callable[[Any, Any, Any], None]:
    """A function calling ``fn(a, b)`` from a frame that *is* the C source line: its code
    object has the C file, line and function, so the simulator's provenance (lint findings,
    reports) names the C line a store came from, with no change to the simulator."""
    hit = _TRAMPOLINES.get(where)
    if hit is None:
        name = where.function if where.function.isidentifier() else "c_function"
        code = _call.__code__.replace(
            co_filename=where.file,
            co_name=name,
            co_qualname=where.function,
            co_firstlineno=where.line - 1,  # the call is on the line after the def
        )
        hit = types.FunctionType(code, {})
        if len(_TRAMPOLINES) < 65536:
            _TRAMPOLINES[where] = hit
    return hit
