"""Hypothesis strategies for crashes of a recorded run (the only pmemsim module importing it).

:func:`crashes` draws a :class:`~pmemsim.explore.Crash` over a :class:`~pmemsim.explore.Trace`
as choices that shrink toward the minimal crash (persistency.md, last section):

1. the crash point, an index into ``trace.points`` (shrinks toward the earliest point);
2. a list of ``(index into trace.lines, alternative >= 1)``: each names a line that was in
   flight somewhere in the run and how many steps from "everything persisted" it falls
   (alternatives are ordered by how many stores they lose). The empty list is "everything
   visible persisted"; shrinking deletes entries, then lowers indexes and alternatives.

Nothing is filtered: every draw is turned into a legal crash by clamping (a point past the
end is the last point, an alternative past a line's last is its last, a line not in flight
at the point is ignored), so every step of a shrink is still a crash. The value a test sees
is already in that normal form, so the example Hypothesis prints is the crash that was
checked. Hypothesis' shrink order is shortlex over those choices: fewest lines first, then
the earliest point, then the lowest line and the fewest stores lost.

Importing this module registers :data:`pmemsim.explore.seeding.generator` with
``hypothesis.register_random`` (see :mod:`pmemsim.explore.seeding`).
"""

from __future__ import annotations

from hypothesis import strategies as st

from .errors import ErrorCode, InvalidArgumentError
from .explore.crash import Crash
from .explore.replaying import check_crash, normalize
from .explore.seeding import register_with_hypothesis
from .explore.trace import Trace

__all__ = ["check_crash", "crashes"]

register_with_hypothesis()


def _alternatives_bound(trace: Trace) -> int:
    """The most alternatives beyond "everything persisted" any line has at any point."""
    states = {id(p.state): p.state for p in trace.points}.values()
    return max((line.images - 1 for s in states for line in s.lines()), default=0)


def crashes(trace: Trace, *, max_lines: int | None = None) -> st.SearchStrategy[Crash]:
    """Crashes of ``trace``, shrinking toward the fewest lines losing the fewest stores at
    the earliest crash point. ``max_lines`` caps how many lines one crash makes lose
    something (default: every line of the run).

    Use it with ``data.draw(crashes(trace))`` after recording a drawn workload, or with
    ``@given(crashes(trace))`` over a fixed one; run recovery with
    :func:`pmemsim.explore.replaying.check_crash` (re-exported here).
    """
    if not isinstance(trace, Trace):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"crashes() needs a Trace from pmemsim.explore.record, not {trace!r}"
        )
    if max_lines is not None and (
        isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 0
    ):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"max_lines must be an int >= 0 or None, not {max_lines!r}"
        )
    points = st.integers(0, len(trace.points) - 1)
    bound = _alternatives_bound(trace)
    cap = len(trace.lines) if max_lines is None else min(max_lines, len(trace.lines))
    if bound < 1 or cap == 0:
        return points.map(lambda p: normalize(trace, Crash(p)))
    entries = st.lists(
        st.tuples(st.integers(0, len(trace.lines) - 1), st.integers(1, bound)), max_size=cap
    )

    def build(draw: st.DrawFn) -> Crash:
        point = draw(points)
        # A repeated line takes its last alternative (as Crash evaluation does).
        chosen = {trace.lines[i]: alt for i, alt in draw(entries)}
        lines = tuple(sorted((m, off, alt) for (m, off), alt in chosen.items()))
        return normalize(trace, Crash(point, lines))

    return st.composite(build)()
