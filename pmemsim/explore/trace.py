"""Recording a workload once on the simulator: its crash points, each with a frozen crash state.

Crash points (docs/persistency.md, "Where pmemsim crashes, and why that is enough"):

* ``"barriers"`` (the default): just before every barrier (fence, clflush, msync, deep flush)
  that follows a store, and at the end of the run. Between two such barriers nothing
  becomes guaranteed and stores only add choices, so this covers every reachable state at
  CACHE_LINE and PAGE granularity. At BYTE granularity (eADR) a store is durable once
  visible, so there a crash point also follows every store.
* ``"operations"``: after every store and before every flush, fence and deep flush (a
  superset, for people who want to see it).
* ``"markers"``: at every boundary of a marked operation (:func:`pmemsim.marker`), and at
  the end.

Consecutive crash points with nothing in between share one state object, so the explorer
can skip them without re-deriving images.

Recording keeps every point (``Trace.points``) unless the caller streams them: with
``on_point=fn`` each point goes to ``fn`` as soon as it is captured and the recorder keeps
only the last one, so memory follows the pool's touched pages and what is in flight, not the
length of the run. ``fn`` runs inside the workload (at the barrier, before it takes effect);
the recorder's marker sink is suspended meanwhile, so recovery run there may use markers.
With ``states=fn``, a point's crash state is captured only if ``fn(index)`` says so (the
point is still counted and streamed, its ``state`` None): a recording that repeats one
made elsewhere, such as an exploration worker's, which explores some of the points only;
from the first point it leaves out, it is not self-checked (the first recording was).
Raising :class:`StopRecording` in ``fn`` ends the recording early; any other exception
aborts it and comes out of :func:`record` (carried through the workload as a
``BaseException``, so the workload's own ``except Exception`` cannot swallow it).
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from .._dataclass import dataclass, field
from .._records import NamedTuple
from ..enums import Granularity
from ..errors import ErrorCode, InvalidArgumentError
from ..markers import reset_sink, set_sink
from ..provenance import STACK_DEPTH, Provenance, capture_stack, locations
from ..snapshot import Snapshot
from .durability import DurabilityModel

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState, Finding, Op, SimBackend

    from ..view import View

__all__ = [
    "CRASH_POINT_MODES",
    "CrashPoint",
    "MarkerOp",
    "OnPoint",
    "StopRecording",
    "Trace",
    "record",
    "record_run",
]

CrashPointMode = Literal["barriers", "operations", "markers"]
CRASH_POINT_MODES: tuple[str, ...] = ("barriers", "operations", "markers")

Workload = Callable[["View"], object]
#: Hears each crash point as it is captured (see the module docstring).
OnPoint = Callable[["CrashPoint"], object]
#: Whether to capture crash point N's state (see the module docstring).
States = Callable[[int], bool]
#: The state of a point whose state was not captured (``states``).
_UNCAPTURED: Any = None


class StopRecording(Exception):
    """Raise in an ``on_point`` callback to end the recording at that point."""


class _Unwind(BaseException):
    """Carries a stop or a callback's exception out through the user's workload."""


class MarkerOp(NamedTuple):
    """A marker boundary as it appears among the recorded operations."""

    name: str
    begin: bool
    provenance: Provenance
    kind: str = "marker"


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """A moment at which the run may lose power, with what a crash there could leave."""

    index: int
    #: What the crash is next to: a barrier kind ("fence", "clflush", "msync",
    #: "deep_flush"), an operation ("store", "flush"), "marker" or "end".
    kind: str
    #: "before" or "after" that operation.
    position: str
    #: How many operations (stores, flushes, fences, deep flushes) ran before the crash.
    operation: int
    #: Marked operations under way, outermost first.
    markers: tuple[str, ...]
    #: The user's stack at the operation (innermost first); empty at the end of the run.
    provenance: Provenance
    state: CrashState = field(repr=False, compare=False)
    #: The same moment with ADR failing too (recorded only when asked for).
    unsafe_state: CrashState | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        where = locations(self.provenance)
        if self.kind == "end":
            text = "at the end of the run"
        elif self.kind == "marker":
            text = f"at a marker boundary{f' at {where[0]}' if where else ''}"
        else:
            text = f"{self.position} the {self.kind}{f' at {where[0]}' if where else ''}"
        inside = f" (inside {' > '.join(self.markers)})" if self.markers else ""
        return f"crash point {self.index}, {text}{inside}"


@dataclass
class Trace:
    """One recorded run: its crash points and, when asked for, its operations."""

    size: int
    granularity: Granularity
    mode: str
    #: Every crash point, in order; empty when they were streamed (``on_point``).
    points: list[CrashPoint]
    #: Stores, flushes, fences, deep flushes and marker boundaries in program order
    #: (only when recorded with ``keep_ops=True``).
    ops: list[Op | MarkerOp]
    findings: list[Finding]
    #: Every persistence unit that had something in flight at some crash point, as
    #: ``(medium index, unit offset)``, sorted: the alphabet of a crash's lost lines.
    lines: list[tuple[int, int]]
    #: The simulator the run used (for its media; keep it for as long as the trace).
    backend: SimBackend = field(repr=False)
    #: How many crash points the run had (streamed or kept).
    point_count: int = 0
    #: Whether an ``on_point`` callback stopped the recording (StopRecording).
    stopped: bool = False


class _Recorder:
    def __init__(
        self,
        sim: SimBackend,
        mode: str,
        keep_ops: bool,
        unsafe: bool,
        on_point: OnPoint | None,
        states: States | None = None,
    ) -> None:
        self.sim = sim
        self.unsafe = unsafe
        self.mode = mode
        self.keep_ops = keep_ops
        self.on_point = on_point
        #: Every point, unless they are streamed to ``on_point``.
        self.points: list[CrashPoint] = []
        self.last: CrashPoint | None = None
        self.count = 0
        #: ``(medium index, unit offset)`` of every unit in flight at some point.
        self.lines: set[tuple[int, int]] = set()
        self.ops: list[Any] = []
        self.markers: list[str] = []
        self.operations = 0
        #: Whether anything that can change a crash state happened since the last capture.
        self.changed = True
        self.byte = sim.granularity == Granularity.BYTE
        self.states = states
        self.model: DurabilityModel | None = DurabilityModel(
            sim.granularity, clflush=sim.flush_instruction == "clflush"
        )
        #: Set once the callback stopped the run (True) or raised (its exception).
        self.stopped = False
        self.error: BaseException | None = None

    def capture(self, kind: str, position: str, provenance: Provenance) -> None:
        if self.stopped:
            return  # the run is unwinding: whatever it still does is not recorded
        last = self.last
        fresh = self.changed or last is None
        if fresh and self.states is not None and not self.states(self.count):
            state = unsafe = _UNCAPTURED
            self.model = None  # not self-checked from here on (what it repeats was)
        elif fresh:
            state = self.sim.crash_state()
            unsafe = self.sim.crash_state(mode="unsafe_shutdown") if self.unsafe else None
            if self.model is not None:
                self.model.verify(
                    state, f"crash point {self.count}", before_barrier=position == "before"
                )
            for st in (state, unsafe):
                if st is not None:
                    self.lines.update((u.medium_index, u.offset) for u in st.units)
        else:
            assert last is not None
            state, unsafe = last.state, last.unsafe_state
        self.changed = state is None  # (uncaptured: the next point captures its own)
        point = CrashPoint(
            self.count,
            kind,
            position,
            self.operations,
            tuple(self.markers),
            provenance,
            state,
            unsafe,
        )
        self.count += 1
        self.last = point
        if self.on_point is None:
            self.points.append(point)
            return
        token = set_sink(None)
        try:
            self.on_point(point)
        except StopRecording:
            self.stopped = True
            raise _Unwind() from None
        except BaseException as exc:
            self.stopped = True
            self.error = exc
            raise _Unwind() from exc
        finally:
            reset_sink(token)

    def on_barrier(self, barrier: Any) -> None:
        if self.mode != "markers" and (barrier.after_store or self.mode == "operations"):
            self.capture(barrier.kind, "before", barrier.provenance)
        self.changed = True  # the barrier is about to make something guaranteed
        if self.model is not None:
            self.model.settle()

    def on_op(self, op: Any) -> None:
        if self.model is not None:
            self.model.on_op(op)
        if op.kind == "erase":  # a cleared bad block: no operation of the program's
            self.changed = True
            return
        self.operations += 1
        if self.keep_ops:
            self.ops.append(op)
        if op.kind == "store":
            self.changed = True
            if self.mode == "operations" or (self.mode == "barriers" and self.byte):
                self.capture("store", "after", op.provenance)
        elif self.mode == "operations" and op.kind == "flush":
            self.capture("flush", "before", op.provenance)

    def on_marker(self, name: str, begin: bool, caller: FrameType) -> None:
        prov = capture_stack(caller)
        if self.keep_ops:
            self.ops.append(MarkerOp(name, begin, prov))
        if begin:
            self.markers.append(name)
        if self.mode == "markers":
            self.capture("marker", "at", prov)
        if not begin:
            if not self.markers or self.markers[-1] != name:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, f"marker {name!r} ends while {self.markers} are open"
                )
            self.markers.pop()


def record_run(
    run: Callable[[SimBackend, Callable[[], None]], object],
    sim: SimBackend,
    *,
    crash_points: str = "barriers",
    keep_ops: bool = False,
    unsafe_shutdown: bool = False,
    size: int = 0,
    on_point: OnPoint | None = None,
    states: States | None = None,
) -> Trace:
    """Record ``run(sim, end)``: anything a program does on the simulator ``sim`` (which must
    be fresh), over any number of sets and sources. ``run`` calls ``end()`` where its run
    ends, before it unmaps what it mapped (otherwise the end is where it returns).
    ``on_point`` streams the crash points instead of keeping them, ``states`` says which
    points' states to capture (module docstring).
    :func:`record` is the one-pool case."""
    if crash_points not in CRASH_POINT_MODES:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"crash_points must be one of {', '.join(CRASH_POINT_MODES)}, not {crash_points!r}",
        )
    rec = _Recorder(sim, crash_points, keep_ops, unsafe_shutdown, on_point, states)
    sim.on_barrier(rec.on_barrier)
    sim.set_tap(rec.on_op)
    # Only kept operations and crash points after a store report an operation's stack.
    if not keep_ops and not (crash_points == "operations" or rec.byte):
        sim.machine.tap_depth = 0
    token = set_sink(rec.on_marker)
    ended: list[bool] = []
    findings: list[Finding] = []

    def end() -> None:
        if ended:
            raise InvalidArgumentError(ErrorCode.EINVAL, "the run ended twice")
        if rec.stopped:
            ended.append(True)
            return
        if rec.markers:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"the workload ended with markers open: {rec.markers}"
            )
        # Before the run unmaps anything: stores still in flight are findings too.
        findings.extend(sim.lint())
        ended.append(True)
        rec.capture("end", "at", ())

    try:
        try:
            run(sim, end)
            if not ended:
                end()
        except _Unwind:
            pass
    finally:
        reset_sink(token)
        sim.set_tap(None)
        sim.machine.tap_depth = STACK_DEPTH
        sim.remove_barrier_observer(rec.on_barrier)
    if rec.error is not None:  # even if the workload swallowed the unwinding
        raise rec.error
    return Trace(
        size,
        sim.granularity,
        crash_points,
        rec.points,
        rec.ops,
        findings,
        sorted(rec.lines),
        sim,
        rec.count,
        rec.stopped,
    )


def record(
    workload: Workload,
    *,
    size: int = 4096,
    granularity: Granularity = Granularity.CACHE_LINE,
    crash_points: str = "barriers",
    base: Snapshot | bytes | None = None,
    keep_ops: bool = False,
    backend: SimBackend | None = None,
    unsafe_shutdown: bool = False,
    on_point: OnPoint | None = None,
    states: States | None = None,
) -> Trace:
    """Run ``workload(view)`` once on a fresh simulated pool and record its crash points.

    The pool is ``size`` zero bytes, or ``base`` (bytes or a Snapshot, e.g. a crash image:
    that is how recovery itself is crashed). ``backend`` lets a caller configure the
    simulator (clflush mode, page tearing, ...); it must be fresh. ``unsafe_shutdown``
    also records, at every crash point, the state an unsafe shutdown would leave.
    ``on_point`` streams the points instead of keeping them, ``states`` says which points'
    states to capture (see the module docstring).
    """
    from pmemsim_backends.sim import SimBackend

    # The set layer is imported here, not with this module: check-log reads crash points
    # (CrashPoint) without ever running a workload on a set.
    from ..config import Config
    from ..part import Part
    from ..set import Set
    from ..source import Source

    if isinstance(base, bytes | bytearray):
        from ..snapshot import _PAGE

        data = bytes(base)
        pages = {i // _PAGE: data[i : i + _PAGE] for i in range(0, len(data), _PAGE)}
        base = Snapshot("pool", len(data), pages)
    sim = backend if backend is not None else SimBackend(granularity)
    pool = base

    def run(sim: SimBackend, end: Callable[[], None]) -> None:
        source: Source | None = None
        try:
            with Set(Config(granularity=granularity, backend=sim)) as s:
                source = Source.anonymous(size) if pool is None else Source.from_image(pool)
                d = s.map(Part(source))
                workload(s.view(d))
                end()
        finally:
            # Closed here, with its set: left to the collector (its handles refer back to
            # it), a workload's exception kept it open for as long as its traceback lived,
            # and it was closed whenever that went, maybe inside a later run.
            if source is not None:
                source.close()

    return record_run(
        run,
        sim,
        crash_points=crash_points,
        keep_ops=keep_ops,
        unsafe_shutdown=unsafe_shutdown,
        size=size if base is None else base.size,
        on_point=on_point,
        states=states,
    )
