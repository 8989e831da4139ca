"""Where in the user's code a store, flush or fence was issued.

Capturing must be cheap because it runs on every store: a *frame* is the pair
``(code object, instruction offset)`` of one Python frame (``f_lasti`` is much cheaper to read
than ``f_lineno``; the line is looked up only when something is reported), and a
*provenance* is a tuple of frames, innermost first. Stores and flushes keep one frame (the
caller of the public API); fences keep a short stack, because a fence is where a crash point
lies and the report shows its stack.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import CodeType, FrameType

__all__ = ["Frame", "Location", "Provenance", "capture_stack", "describe", "line_of", "locations"]

Frame = tuple[CodeType, int]
Provenance = tuple[Frame, ...]

#: How many frames a fence keeps; deep enough for a user's helper layers.
STACK_DEPTH = 12

_PACKAGE_DIRS = tuple(
    os.path.dirname(os.path.abspath(p))
    for p in (__file__, os.path.join(os.path.dirname(__file__), "..", "backends", "x"))
)


def _is_internal(code: CodeType) -> bool:
    return code.co_filename.startswith(_PACKAGE_DIRS)


def capture_stack(frame: FrameType | None, depth: int = STACK_DEPTH) -> Provenance:
    """Up to ``depth`` frames from ``frame`` outwards."""
    out: list[Frame] = []
    while frame is not None and len(out) < depth:
        out.append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    return tuple(out)


def caller_frame(depth: int = 2) -> Frame:
    """The frame ``depth`` levels above this call (2: the caller of the caller)."""
    f = sys._getframe(depth)
    return (f.f_code, f.f_lasti)


@functools.lru_cache(maxsize=4096)
def line_of(code: CodeType, lasti: int) -> int:
    """The source line of the instruction at byte offset ``lasti``."""
    line = code.co_firstlineno
    for start, end, lineno in code.co_lines():
        if start <= lasti < end:
            return lineno if lineno is not None else line
        if lineno is not None:
            line = lineno
    return line


@dataclass(frozen=True, slots=True)
class Location:
    """One frame made readable."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


def locations(prov: Provenance, *, user_only: bool = True) -> list[Location]:
    """Frames as locations, innermost first; pmemsim's own frames dropped when asked."""
    out = []
    for code, lasti in prov:
        if user_only and _is_internal(code):
            continue
        out.append(Location(code.co_filename, line_of(code, lasti), code.co_qualname))
    return out


def describe(prov: Provenance | Iterable[Frame]) -> str:
    """The innermost user frame as ``file:line in function`` (or ``<unknown>``)."""
    locs = locations(tuple(prov))
    return str(locs[0]) if locs else "<unknown>"
