"""Where in the user's code a store, flush or fence was issued.

Capturing must be cheap because it runs on every store: a *frame* is the pair
``(code object, instruction offset)`` of one Python frame (``f_lasti`` is much cheaper to read
than ``f_lineno``; the line is looked up only when something is reported), and a
*provenance* is a tuple of frames, innermost first. Stores and flushes keep one frame (the
caller of the public API); fences keep a short stack, because a fence is where a crash point
lies and the report shows its stack.

Stores made inside small helper functions (an accessor, a ``store_u64`` wrapper) would all be
blamed on the helper. :func:`helper` marks such functions, or whole modules and packages: a
store, flush or fence issued from marked code is blamed on the first frame outside it (up to
:func:`set_helper_depth` frames up), and reports skip marked frames in stacks. Unmarked code
pays one attribute test per operation.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from types import CodeType, FrameType, ModuleType
from typing import TypeVar

from ._records import NamedTuple

__all__ = [
    "Frame",
    "Location",
    "Provenance",
    "blamed",
    "capture_stack",
    "clear_helpers",
    "describe",
    "helper",
    "line_of",
    "locations",
    "set_helper_depth",
]

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


# -- helpers -----------------------------------------------------------------------------


class _Helpers:
    """What the user marked as helper code."""

    __slots__ = ("active", "codes", "depth", "files", "packages", "verdicts")

    def __init__(self) -> None:
        #: Anything marked at all (the one test an unmarked program pays per operation).
        self.active = False
        self.codes: set[CodeType] = set()
        self.files: set[str] = set()
        #: Package directories, each ending in a separator.
        self.packages: tuple[str, ...] = ()
        #: How many frames a store may climb out of helpers.
        self.depth = 8
        self.verdicts: dict[CodeType, bool] = {}

    def is_helper(self, code: CodeType) -> bool:
        hit = self.verdicts.get(code)
        if hit is None:
            name = code.co_filename
            hit = self.verdicts[code] = (
                code in self.codes or name in self.files or name.startswith(self.packages)
            )
        return hit


HELPERS = _Helpers()

T = TypeVar("T")


def _codes(code: CodeType) -> list[CodeType]:
    """A code object and those nested in it (lambdas, comprehensions, inner functions)."""
    out = [code]
    for const in code.co_consts:
        if isinstance(const, CodeType):
            out += _codes(const)
    return out


def helper(target: T) -> T:
    """Mark helper code: a store it makes is blamed on the first frame outside helpers.

    ``target`` is a function or method (use it as a decorator), or a module or package (an
    imported module object, or its name): everything defined in it. Returns ``target``.
    """
    h = HELPERS
    fn = getattr(target, "__func__", target)  # staticmethod, classmethod, bound method
    if isinstance(target, property):
        for f in (target.fget, target.fset, target.fdel):
            if f is not None:
                helper(f)
        return target
    if isinstance(fn, str | ModuleType):
        module = sys.modules.get(fn) if isinstance(fn, str) else fn
        if module is None:
            import importlib

            module = importlib.import_module(fn)  # type: ignore[arg-type]
        path = getattr(module, "__file__", None)
        if not path:
            raise TypeError(f"{module!r} has no source file to mark as helper code")
        path = os.path.abspath(path)
        if os.path.basename(path) == "__init__.py":
            h.packages = (*h.packages, os.path.dirname(path) + os.sep)
        h.files.add(path)
        h.files.add(module.__file__ or path)
    else:
        code = getattr(fn, "__code__", None)
        while code is None and hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
            code = getattr(fn, "__code__", None)
        if not isinstance(code, CodeType):
            raise TypeError(f"{target!r} is neither a function nor a module")
        h.codes.update(_codes(code))
    h.verdicts.clear()
    h.active = True
    return target


def clear_helpers() -> None:
    """Forget every mark (tests and benchmarks that mark helpers clean up with this)."""
    h = HELPERS
    h.codes.clear()
    h.files.clear()
    h.packages = ()
    h.verdicts.clear()
    h.active = False


def set_helper_depth(depth: int) -> int:
    """How many frames a store may climb out of helper code (default 8); returns the old."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"the helper depth is an int >= 1, not {depth!r}")
    old, HELPERS.depth = HELPERS.depth, depth
    return old


def blamed(frame: FrameType) -> FrameType:
    """The frame an operation issued from ``frame`` is blamed on: the first one outside
    helper code (at most the helper depth up; the last one looked at if all are helpers)."""
    h = HELPERS
    if h.verdicts.get(frame.f_code) is False:  # the common case: the caller is no helper
        return frame
    for _ in range(h.depth):
        if not h.is_helper(frame.f_code):
            return frame
        up = frame.f_back
        if up is None:
            return frame
        frame = up
    return frame


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


class Location(NamedTuple):
    """One frame made readable."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


def locations(prov: Provenance, *, user_only: bool = True) -> list[Location]:
    """Frames as locations, innermost first; pmemsim's own frames and helper frames (unless
    there is nothing else) dropped when asked."""
    frames = list(prov)
    if user_only:
        frames = [f for f in frames if not _is_internal(f[0])]
        if HELPERS.active:
            outside = [f for f in frames if not HELPERS.is_helper(f[0])]
            frames = outside or frames
    return [Location(c.co_filename, line_of(c, lasti), c.co_qualname) for c, lasti in frames]


def describe(prov: Provenance | Iterable[Frame]) -> str:
    """The innermost user frame as ``file:line in function`` (or ``<unknown>``)."""
    locs = locations(tuple(prov))
    return str(locs[0]) if locs else "<unknown>"
