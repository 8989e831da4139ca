"""One crash of a recorded trace: its image, and the user's recovery run on it.

These are the pieces a property test needs once it holds a :class:`Trace` and a
:class:`Crash` (drawn with :func:`pmemsim.hypothesis.crashes`, parsed from a token, or
written by hand): :func:`normalize` says what a crash means at its point,
:func:`crash_snapshot` builds its image, and :func:`check_crash` runs recovery on it and
re-raises the user's own exception with the crash as notes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ErrorCode, InvalidArgumentError
from ..markers import CrashInfo
from ..snapshot import Snapshot
from .crash import Crash
from .engine import Recovery, crash_for, deviations_for, lost_of, run_recovery
from .report import Failure
from .trace import CrashPoint, Trace

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashImage

__all__ = ["check_crash", "crash_image", "crash_point", "crash_snapshot", "normalize"]


def _validated(trace: Trace, crash: Crash) -> None:
    if not isinstance(trace, Trace):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{trace!r} is not a recorded Trace")
    if not isinstance(crash, Crash):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{crash!r} is not a Crash")
    if crash.faults:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"crash {crash} adds faults ({', '.join(crash.faults)}); only plain power "
            "failures can be replayed on a trace",
        )
    if not trace.points:  # pragma: no cover - record() always captures the end of the run
        raise InvalidArgumentError(ErrorCode.EINVAL, "the trace has no crash points")


def crash_point(trace: Trace, crash: Crash) -> CrashPoint:
    """The crash point a crash happens at (its index clamped into the trace's range)."""
    _validated(trace, crash)
    return trace.points[min(max(crash.point, 0), len(trace.points) - 1)]


def normalize(trace: Trace, crash: Crash) -> Crash:
    """The crash as evaluation reads it: point and alternatives clamped into range, lines
    that were not in flight at the point or that lose nothing left out. Two crashes with
    one normal form give one image."""
    point = crash_point(trace, crash)
    return crash_for(point, deviations_for(point.state, crash))


def crash_image(trace: Trace, crash: Crash) -> CrashImage:
    """The simulator's crash image for ``crash`` (clamped, see :func:`normalize`)."""
    point = crash_point(trace, crash)
    return point.state.image(deviations_for(point.state, crash))


def crash_snapshot(trace: Trace, crash: Crash) -> Snapshot:
    """The pool after ``crash``, as a snapshot a fresh set can map (``Source.from_image``)."""
    snapshot: Snapshot = crash_image(trace, crash).snapshot()
    return snapshot


def check_crash(trace: Trace, crash: Crash, recover: Recovery, *, name: str = "trace") -> None:
    """Run ``recover(view)`` on a fresh set mapping the image of ``crash``.

    Like :func:`pmemsim.explore.check` it runs on the simulator at the trace's granularity,
    with :func:`pmemsim.current_crash` answering. When recovery raises or returns False, its
    exception (a :class:`CrashConsistencyError` for False) is raised again with notes: the
    crash point with the user's stack, the lines that lost stores and where each lost store
    was issued, and the crash token that rebuilds this image. ``name`` labels the notes.
    """
    point = crash_point(trace, crash)
    deviations = deviations_for(point.state, crash)
    snapshot: Snapshot = point.state.image(deviations).snapshot()
    info = CrashInfo(point.index, point.kind, point.markers)
    err = run_recovery(recover, snapshot, trace.granularity, info)
    if err is None:
        return
    lines, lost = lost_of(point.state, deviations)
    exact = crash_for(point, deviations)
    failure = Failure(name, exact, point, "given", lines, lost, err)
    # The command line cannot rebuild a trace recorded inside a test; the token can.
    replay = (
        "replay: pmemsim.explore.replaying.check_crash("
        f"trace, Crash.parse({str(exact)!r}), recover)"
    )
    err.add_note(f"pmemsim: {name} is inconsistent after this crash:")
    err.add_note(failure.describe(replay))
    raise err
