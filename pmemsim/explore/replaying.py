"""One crash of a recorded trace: its image, and the user's recovery run on it.

These are the pieces a property test needs once it holds a :class:`Trace` and a
:class:`Crash` (drawn with :func:`pmemsim.hypothesis.crashes`, parsed from a token, or
written by hand): :func:`normalize` says what a crash means at its point,
:func:`crash_snapshot` builds its image, and :func:`check_crash` runs recovery on it and
re-raises the user's own exception with the crash as notes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..errors import ErrorCode, InvalidArgumentError
from ..events import BadBlock
from ..markers import CrashInfo
from ..snapshot import Snapshot
from .crash import Crash
from .engine import SECTOR, Recovery, crash_for, deviations_for, lost_of, run_recovery
from .report import Failure
from .trace import CrashPoint, Trace

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashImage, CrashState

__all__ = ["check_crash", "crash_image", "crash_point", "crash_snapshot", "normalize"]


def _validated(trace: Trace, crash: Crash) -> None:
    if not isinstance(trace, Trace):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{trace!r} is not a recorded Trace")
    if not isinstance(crash, Crash):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{crash!r} is not a Crash")
    if not trace.points:  # pragma: no cover - record() always captures the end of the run
        raise InvalidArgumentError(ErrorCode.EINVAL, "the trace has no crash points")
    for fault in crash.faults:
        if fault == "unsafe_shutdown":
            if trace.points[0].unsafe_state is None:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL,
                    f"crash {crash} adds an unsafe shutdown: record the trace with "
                    "record(..., unsafe_shutdown=True)",
                )
        elif _sector(fault) is None:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"crash {crash}: fault {fault!r} is neither unsafe_shutdown nor "
                "badblock.OFFSET (a 512-byte sector, in hex)",
            )


def _sector(fault: str) -> int | None:
    kind, _, where = fault.partition(".")
    if kind != "badblock":
        return None
    try:
        return int(where, 16) // SECTOR * SECTOR
    except ValueError:
        return None


def crash_point(trace: Trace, crash: Crash) -> CrashPoint:
    """The crash point a crash happens at (its index clamped into the trace's range)."""
    _validated(trace, crash)
    return trace.points[min(max(crash.point, 0), len(trace.points) - 1)]


def _state(point: CrashPoint, crash: Crash) -> CrashState:
    if "unsafe_shutdown" in crash.faults and point.unsafe_state is not None:
        return point.unsafe_state
    return point.state


def normalize(trace: Trace, crash: Crash) -> Crash:
    """The crash as evaluation reads it: point and alternatives clamped into range, lines
    that were not in flight at the point or that lose nothing left out. Two crashes with
    one normal form give one image."""
    point = crash_point(trace, crash)
    state = _state(point, crash)
    normal = crash_for(point, deviations_for(state, crash), state)
    return dataclasses.replace(normal, faults=crash.faults)


def crash_image(trace: Trace, crash: Crash) -> CrashImage:
    """The simulator's crash image for ``crash`` (clamped, see :func:`normalize`; bad blocks
    are not part of it: see :func:`crash_snapshot`)."""
    point = crash_point(trace, crash)
    state = _state(point, crash)
    return state.image(deviations_for(state, crash))


def crash_snapshot(trace: Trace, crash: Crash) -> Snapshot:
    """The pool after ``crash``, as a snapshot a fresh set can map (``Source.from_image``),
    with the crash's bad blocks."""
    snapshot: Snapshot = crash_image(trace, crash).snapshot()
    blocks = tuple(BadBlock(s, SECTOR) for f in crash.faults if (s := _sector(f)) is not None)
    if blocks:
        snapshot = dataclasses.replace(snapshot, badblocks=(*snapshot.badblocks, *blocks))
    return snapshot


def check_crash(
    trace: Trace,
    crash: Crash,
    recover: Recovery,
    *,
    name: str = "trace",
    badblock_policy: str = "clear",
) -> None:
    """Run ``recover(view)`` on a fresh set mapping the image of ``crash``.

    Like :func:`pmemsim.explore.check` it runs on the simulator at the trace's granularity,
    with :func:`pmemsim.current_crash` answering. When recovery raises or returns False, its
    exception (a :class:`CrashConsistencyError` for False) is raised again with notes: the
    crash point with the user's stack, the lines that lost stores and where each lost store
    was issued, and the crash token that rebuilds this image. ``name`` labels the notes.
    Faults on top of the power failure work as for a CrashCheck: an unsafe shutdown (the
    trace must be recorded with ``unsafe_shutdown=True``) and bad blocks, which recovery's
    set clears at map time or keeps (``badblock_policy``).
    """
    point = crash_point(trace, crash)
    state = _state(point, crash)
    deviations = deviations_for(state, crash)
    snapshot = crash_snapshot(trace, crash)
    info = CrashInfo(point.index, point.kind, point.markers, crash.faults)
    err = run_recovery(recover, snapshot, trace.granularity, info, None, badblock_policy)
    if err is None:
        return
    lines, lost = lost_of(state, deviations)
    exact = normalize(trace, crash)
    failure = Failure(name, exact, point, "given", lines, lost, err)
    # The command line cannot rebuild a trace recorded inside a test; the token can.
    replay = (
        "replay: pmemsim.explore.replaying.check_crash("
        f"trace, Crash.parse({str(exact)!r}), recover)"
    )
    err.add_note(f"pmemsim: {name} is inconsistent after this crash:")
    err.add_note(failure.describe(replay))
    raise err
