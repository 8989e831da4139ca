"""Hypothesis strategies for crashes of a recorded run (the only pmemsim module importing it).

:func:`crashes` draws a :class:`~pmemsim.explore.Crash` over a :class:`~pmemsim.explore.Trace`
as choices that shrink toward the minimal crash (docs/persistency.md, "A crash, written
down"):

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

With ``faults``, a crash may add an unsafe shutdown (a boolean, shrinking toward none) and
a bad block in one 512-byte sector of the pool (shrinking toward none, then the first sector).

:class:`CrashCheckedMachine` is a ``RuleBasedStateMachine`` whose steps run on persistent
memory and are crash-checked one by one.

Importing this module registers :data:`pmemsim.explore.seeding.generator` with
``hypothesis.register_random`` (see :mod:`pmemsim.explore.seeding`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant

from .enums import Granularity
from .errors import ErrorCode, InvalidArgumentError
from .explore.crash import Crash
from .explore.replaying import check_crash, normalize
from .explore.seeding import register_with_hypothesis
from .explore.trace import Trace
from .view import View

__all__ = ["CrashCheckedMachine", "check_crash", "crashes"]

register_with_hypothesis()

T = TypeVar("T")
FAULTS = ("unsafe_shutdown", "badblock")
_SECTOR = 512


def _alternatives_bound(trace: Trace) -> int:
    """The most alternatives beyond "everything persisted" any line has at any point."""
    states = {id(s): s for p in trace.points for s in (p.state, p.unsafe_state) if s}.values()
    return max((line.images - 1 for s in states for line in s.lines()), default=0)


def _faults(trace: Trace, faults: Sequence[str]) -> tuple[str, ...]:
    if isinstance(faults, str) or not all(isinstance(f, str) for f in faults):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"faults are a sequence of {', '.join(FAULTS)}; not {faults!r}"
        )
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"unknown fault(s) {', '.join(map(repr, unknown))}; known: {', '.join(FAULTS)}",
        )
    if "unsafe_shutdown" in faults and trace.points[0].unsafe_state is None:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            "crashes(faults=('unsafe_shutdown',)) needs a trace recorded with "
            "record(..., unsafe_shutdown=True)",
        )
    return tuple(f for f in FAULTS if f in faults)


def crashes(
    trace: Trace, *, max_lines: int | None = None, faults: Sequence[str] = ()
) -> st.SearchStrategy[Crash]:
    """Crashes of ``trace``, shrinking toward the fewest lines losing the fewest stores at
    the earliest crash point. ``max_lines`` caps how many lines one crash makes lose
    something (default: every line of the run). ``faults`` (``"unsafe_shutdown"``,
    ``"badblock"``) lets a crash add them, as CrashCheck's faults do.

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
    wanted = _faults(trace, faults)
    points = st.integers(0, len(trace.points) - 1)
    bound = _alternatives_bound(trace)
    cap = len(trace.lines) if max_lines is None else min(max_lines, len(trace.lines))
    sectors = max(1, trace.points[0].state.snapshots[0].size // _SECTOR)
    entries = st.lists(
        st.tuples(st.integers(0, len(trace.lines) - 1), st.integers(1, max(bound, 1))),
        max_size=cap if bound >= 1 else 0,
    )

    def build(draw: st.DrawFn) -> Crash:
        point = draw(points)
        # A repeated line takes its last alternative (as Crash evaluation does).
        chosen = {trace.lines[i]: alt for i, alt in draw(entries)} if bound and cap else {}
        lines = tuple(sorted((m, off, alt) for (m, off), alt in chosen.items()))
        added: list[str] = []
        if "unsafe_shutdown" in wanted and draw(st.booleans()):
            added.append("unsafe_shutdown")
        if "badblock" in wanted:
            sector = draw(st.none() | st.integers(0, sectors - 1))
            if sector is not None:
                added.append(f"badblock.{sector * _SECTOR:x}")
        return normalize(trace, Crash(point, lines, tuple(added)))

    if (bound < 1 or cap == 0) and not wanted:
        return points.map(lambda p: normalize(trace, Crash(p)))
    return st.composite(build)()


# -- state machines ------------------------------------------------------------------------

#: The marker around the steps before the one being checked (their crash points were
#: checked when they were the last step).
_EARLIER = "pmemsim-earlier-steps"


class CrashCheckedMachine(RuleBasedStateMachine):
    """A Hypothesis state machine over a persistent-memory program, every step crash-checked.

    Rules run operations with :meth:`execute` (a function of a :class:`pmemsim.View`): it
    runs on the machine's pool (``self.view``, on the simulator) and returns its result, so
    rules and invariants can check the program as usual. After each step (a rule or an
    initialize), the step is crash-checked: the steps so far are recorded on a fresh pool,
    and at every crash point *of this step* (earlier steps' were checked when they ran),
    :meth:`recover` runs on every distinct crash image with ``before`` and ``after``, the
    values of :meth:`model_state` before the step and after it. A failure raises the
    user's exception with the crash as notes, and Hypothesis shrinks the steps.

    Class attributes configure the checks: :attr:`size`, :attr:`granularity`,
    :attr:`strategy`, :attr:`faults` (as for :class:`pmemsim.explore.CrashCheck`).
    """

    size: ClassVar[int] = 4096
    granularity: ClassVar[Granularity] = Granularity.CACHE_LINE
    #: None: CrashCheck's default.
    strategy: ClassVar[str | None] = None
    faults: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        from pmemsim_backends.sim import SimBackend

        from .config import Config
        from .part import Part
        from .set import Set
        from .source import Source

        self._ops: list[Callable[[View], object]] = []
        self._done = 0
        self._before: Any = None
        sim = SimBackend(self.granularity, lint=False)
        self._set = Set(Config(granularity=self.granularity, backend=sim))
        self._source = Source.anonymous(self.size)
        self.view = self._set.view(self._set.map(Part(self._source)))

    def model_state(self) -> Any:
        """The model's value, as recovery may compare with it (copied after every step);
        None by default."""
        return None

    def recover(self, view: View, before: Any, after: Any) -> object:
        """Recovery on one crash image of the last step: raise (or return False) when the
        image is neither an acceptable result of the steps before it (``before``) nor of
        the step itself (``after``)."""
        raise NotImplementedError("a CrashCheckedMachine defines recover(view, before, after)")

    def execute(self, operation: Callable[[View], T]) -> T:
        """Run ``operation(view)`` as (part of) this step, and return its result."""
        if len(self._ops) == self._done:
            self._before = copy.deepcopy(self.model_state())
        self._ops.append(operation)
        return operation(self.view)

    @invariant()
    def crash_check_the_step(self) -> None:
        if len(self._ops) == self._done:
            return
        from .explore import CrashCheck, check
        from .markers import marker

        earlier, now = self._ops[: self._done], self._ops[self._done :]
        self._done = len(self._ops)
        before, after = self._before, copy.deepcopy(self.model_state())
        step = len(earlier)

        def workload(v: View) -> None:
            with marker(_EARLIER):
                for op in earlier:
                    op(v)
            for op in now:
                op(v)

        def recover(v: View) -> object:
            return self.recover(v, before, after)

        c = CrashCheck(
            f"{type(self).__name__}, step {step + 1}",
            workload,
            recover,
            size=self.size,
            granularity=self.granularity,
            markers={_EARLIER: "none"},
            faults=self.faults,
        )
        check(c, strategy=self.strategy, progress=None).raise_failures(
            replay=lambda f: f"crash token: {f.crash_token} (in step {step + 1})"
        )

    def teardown(self) -> None:
        self._set.close()
        self._source.close()
