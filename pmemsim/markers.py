"""Named operation boundaries a workload marks, and what recovery may ask about a crash.

``with pmemsim.marker("insert"):`` brackets one logical operation (pmreorder's
``NAME.BEGIN`` / ``NAME.END``). Outside crash exploration it costs one context-variable
lookup and does nothing, so programs keep their markers on the real backend too. During
exploration the recorder hears each boundary: markers can be crash points, can choose the
strategy of the crash points inside them, and are written to exported logs.

Recovery code running on a crash image can call :func:`current_crash` to learn which marked
operations were under way when the power failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType

from ._dataclass import dataclass

__all__ = ["CrashInfo", "current_crash", "marker"]

#: (name, begin?, caller frame); set by a recorder while it runs a workload.
MarkerSink = Callable[[str, bool, FrameType], None]

_sink: ContextVar[MarkerSink | None] = ContextVar("pmemsim_marker_sink", default=None)
_crash: ContextVar[CrashInfo | None] = ContextVar("pmemsim_crash", default=None)


@contextmanager
def marker(name: str) -> Iterator[None]:
    """Mark the enclosed code as the operation ``name`` (markers nest)."""
    if not isinstance(name, str) or not name or "|" in name or ";" in name or "." in name:
        # The log format separates records with | and fields with ; and ends names in .BEGIN
        raise ValueError(f"a marker name is a non-empty string without '|', ';' or '.': {name!r}")
    sink = _sink.get()
    if sink is None:
        yield
        return
    caller = sys._getframe(2)
    sink(name, True, caller)
    try:
        yield
    finally:
        sink(name, False, caller)


@dataclass(frozen=True, slots=True)
class CrashInfo:
    """The crash whose image recovery is looking at."""

    #: Index of the crash point in the recorded run.
    point: int
    #: What the crash preceded or followed ("fence", "store", "end", ...).
    kind: str
    #: Marked operations under way at the crash, outermost first.
    markers: tuple[str, ...]
    #: Faults combined with the power failure (e.g. "unsafe_shutdown"), if any.
    faults: tuple[str, ...] = ()


def current_crash() -> CrashInfo | None:
    """The crash being recovered from, or None outside crash exploration."""
    return _crash.get()


def set_sink(sink: MarkerSink | None) -> object:
    return _sink.set(sink)


def reset_sink(token: object) -> None:
    _sink.reset(token)  # type: ignore[arg-type]


def set_crash(info: CrashInfo | None) -> object:
    return _crash.set(info)


def reset_crash(token: object) -> None:
    _crash.reset(token)  # type: ignore[arg-type]
