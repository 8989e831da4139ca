"""Crash exploration: record a workload, cover the images of each crash point, report.

The run is deterministic: crash points come in program order; at each, either the lazy
explorer walks the point's read paths (:mod:`pmemsim.explore.lazy`, the default) or a
strategy plans images, deduplicated by content across the whole run; random strategies
draw from a generator derived from the seed and the point. A crash check is explored as it
is recorded; with ``jobs`` > 1 its points are shared, from where the work is worth it, with
workers forked there (:mod:`pmemsim.explore.shares`). A recorded trace is split into runs of
consecutive crash points that an executor (:mod:`pmemsim.explore.executor`) explores inline
or in worker processes. Either way the parent merges the points' reports in order, keeps the
minimal failure of each distinct bug, and re-runs those itself (so the report holds the
user's live exception). So the report does not depend on the executor or on ``jobs``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..markers import CrashInfo
from .budget import Cuts
from .checks import CrashCheck, validate_check
from .images import Deviations
from .jobs import check_jobs
from .judges import Judge, _PoolJudge, _recorded
from .lazy import LazyExplorer, OpaqueRecovery, Outcome, StateAlternatives, Verdict, Walk
from .merge import _Merge
from .progress import ProgressCallback, progress_line
from .replaying import _replayed
from .report import CheckResult, Progress
from .runtimer import RunTimer
from .strategy import Exhaustive, PointContext, Strategy, strategy_for, strategy_named
from .trace import CrashPoint, Trace, record
from .workdir import keeps_workdir

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

    from .executor import Executor
    from .files import FileCrashCheck
    from .shares import Shares

__all__ = ["check"]


# -- exploring crash points ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailNote:
    """An inconsistent image (planned) or read path (lazy) of one crash state, in a form that
    travels between processes: the parent rebuilds everything else from the trace."""

    #: The image's content key (planned strategies) or the read path's leaf (lazy).
    key: bytes | None
    deviations: Deviations
    verdict: Verdict
    #: Faults beyond the state's own (a bad block).
    extra: tuple[str, ...] = ()


@dataclass
class StateReport:
    """What exploring one crash state of one crash point found."""

    point: int
    faults: tuple[str, ...]
    strategy: str
    #: Images of the state, when this is the first point with it (else 0).
    possible: int = 0
    covered: int = 0
    #: Keys of the images judged (planned strategies: first occurrences within the work
    #: item) or leaves of the read paths walked (lazy), in order.
    judged: list[bytes] = field(default_factory=list)
    #: Lazy exploration: whether ``judged`` holds read paths.
    lazy: bool = False
    runs: int = 0
    failing: list[FailNote] = field(default_factory=list)
    #: What cut it short: "" (nothing), "time" (the point's budget), "count" (max_images).
    cut: str = ""
    #: The check's budget had run out: not explored at all.
    dropped: bool = False
    #: Which slice of the state's images this is (0 when the state was not sliced).
    part: int = 0
    #: Something the report should say about how the state was explored.
    note: str = ""
    #: Live exceptions of ``failing`` (only in the process that ran them; never shipped).
    errors: list[BaseException | None] = field(default_factory=list)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["errors"] = []
        return state


def _record(c: CrashCheck, **how: Any) -> Trace:
    """The check's workload recorded as it asks (``how``: how the recording is kept)."""
    return record(
        c.workload,
        size=c.size,
        granularity=c.granularity,
        crash_points=c.crash_points,
        unsafe_shutdown="unsafe_shutdown" in c.faults,
        **how,
    )


@dataclass
class Session:
    """One recorded check, everything exploring its crash points needs. Worker processes
    get it once (fork); a distributed executor would rebuild it by recording again."""

    check: Any
    trace: Trace
    judge: Judge
    default: Strategy
    by_marker: dict[str, Strategy]
    timer: RunTimer
    #: ``time.monotonic()`` past which no new work starts (None: no limit).
    deadline: float | None
    point_budget: float | None
    #: A streamed check's crash points: the few still kept, by index (see :class:`_Recent`).
    window: Sequence[CrashPoint] | None = None

    @property
    def points(self) -> Sequence[CrashPoint]:
        """The crash points by index: the trace's, or the window of a streamed check."""
        return self.trace.points if self.window is None else self.window

    def states(self, i: int) -> list[tuple[CrashState, tuple[str, ...], bool]]:
        """``(state, faults, first point with it)`` of crash point ``i``."""
        points = self.points
        point = points[i]
        prev = points[i - 1] if i else None
        out: list[tuple[CrashState, tuple[str, ...], bool]] = [
            (point.state, (), prev is None or prev.state is not point.state)
        ]
        if point.unsafe_state is not None:
            first = prev is None or prev.unsafe_state is not point.unsafe_state
            out.append((point.unsafe_state, ("unsafe_shutdown",), first))
        return out

    def strategy(self, i: int) -> Strategy:
        return strategy_for(self.points[i], self.default, self.by_marker)

    def weight(self, i: int) -> tuple[int, bool]:
        """About how much work crash point ``i`` is (images to run; a lazy point counts 1),
        and whether its states can be sliced."""
        strategy = self.strategy(i)
        if strategy.lazy:
            return 1, False
        images = sum(st.image_count() for st, _, new in self.states(i) if new)
        return images, _sliceable(strategy, self.check)


class Explorer:
    """Explores crash points of a session, one state at a time. Keeps the lazy decision
    trees for as long as it lives (a worker process keeps one for all its work)."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.lazy = LazyExplorer()
        #: Recovery read the image where lazy exploration cannot see: explore exhaustively.
        self.opaque = False

    def points(
        self,
        first: int,
        last: int,
        part: int = 0,
        parts: int = 1,
        *,
        seen: set[bytes] | None = None,
    ) -> Iterator[StateReport]:
        """The reports of crash points ``[first, last)``; with ``parts`` > 1 (one point),
        only slice ``part`` of the images of each state that can be sliced (exhaustive),
        the others whole in slice 0. ``seen``: content keys of images judged by earlier
        calls, which are not run again (a streamed check explores one point per call)."""
        s = self.s
        if seen is None:
            seen = set()
        for i in range(first, last):
            strategy = s.strategy(i)
            prev = s.strategy(i - 1) if i else None
            for state, faults, new in s.states(i):
                if not new and prev is not None and prev.name == strategy.name:
                    continue  # the previous point explored the same state the same way
                sliced = parts > 1 and _sliceable(strategy, s.check)
                if parts > 1 and not sliced and part:
                    continue
                name = "exhaustive" if strategy.lazy and self.opaque else strategy.name
                rep = StateReport(i, faults, name, part=part if sliced else 0)
                if new and not part:
                    rep.possible = state.image_count()
                if s.deadline is not None and time.monotonic() > s.deadline:
                    rep.dropped = True
                    yield rep
                    continue
                ends = [d for d in (s.deadline,) if d is not None]
                if s.point_budget is not None:
                    ends.append(time.monotonic() + s.point_budget)
                deadline = min(ends) if ends else None
                if strategy.lazy and not self.opaque:
                    try:
                        self._lazy(rep, state, faults, deadline)
                    except OpaqueRecovery:
                        self.opaque = True
                        rep = StateReport(i, faults, "exhaustive", possible=rep.possible)
                        rep.note = (
                            f"recovery opened a file of the image with plain file I/O at crash "
                            f"point {i}, which lazy exploration cannot follow: the check was "
                            "explored exhaustively from there"
                        )
                if rep.strategy == "exhaustive" and strategy.lazy:
                    self._planned(rep, state, faults, _EXHAUSTIVE, deadline, seen)
                elif not strategy.lazy:
                    where = (part, parts) if sliced else None
                    self._planned(rep, state, faults, strategy, deadline, seen, where)
                last_slice = not sliced or part == parts - 1
                bad = "badblock" in s.check.faults and strategy.name != "none"
                if bad and last_slice and not rep.cut:
                    self._badblocks(rep, state, faults, seen)
                yield rep

    def dropped(self, first: int, last: int) -> Iterator[StateReport]:
        """Reports of crash points ``[first, last)`` left out: what they had, none covered."""
        for i in range(first, last):
            strategy = self.s.strategy(i)
            for state, faults, new in self.s.states(i):
                rep = StateReport(i, faults, strategy.name, dropped=True)
                rep.possible = state.image_count() if new else 0
                yield rep

    def _info(self, i: int, faults: tuple[str, ...]) -> CrashInfo:
        p = self.s.points[i]
        return CrashInfo(p.index, p.kind, p.markers, faults)

    def _lazy(
        self, rep: StateReport, state: CrashState, faults: tuple[str, ...], deadline: float | None
    ) -> None:
        judge = self.s.judge
        info = self._info(rep.point, faults)
        walk = Walk()

        def run(dev: Deviations) -> Outcome:
            return judge.observed(state, dev, info)

        for path in self.lazy.explore(
            StateAlternatives(state),
            info,
            run,
            context=judge.context(state, faults),
            deadline=deadline,
            limit=self.s.check.max_images,
            walk=walk,
        ):
            rep.judged.append(path.leaf)
            if path.verdict.failed:
                rep.failing.append(FailNote(path.leaf, path.deviations, path.verdict))
                rep.errors.append(path.error)
        rep.lazy = True
        rep.runs = walk.runs
        rep.covered = walk.covered
        if not walk.complete:
            rep.cut = "count" if walk.limited else "time"

    def _planned(
        self,
        rep: StateReport,
        state: CrashState,
        faults: tuple[str, ...],
        strategy: Strategy,
        deadline: float | None,
        seen: set[bytes],
        where: tuple[int, int] | None = None,
    ) -> None:
        s = self.s
        judge = s.judge
        if where is not None:
            images: Iterable[Deviations] = _every_slice(state, *where)
        else:
            ctx = PointContext(rep.point, s.check.seed, s.check.max_images, judge.probe)
            images = strategy.plan(state, ctx).images
        info = self._info(rep.point, faults)
        tag = b"U" if faults else b"P"
        for n, dev in enumerate(images):
            if deadline is not None and n and time.monotonic() > deadline:
                rep.cut = "time"
                break
            rep.covered += 1
            image = judge.image(state, dev)
            key = judge.key(image, state, dev) + tag
            if key in seen:
                continue
            seen.add(key)
            rep.judged.append(key)
            rep.runs += 1
            err = judge.verdict(image, info)
            if err is not None:
                rep.failing.append(FailNote(key, dev, Verdict.of(err)))
                rep.errors.append(err)

    def _badblocks(
        self, rep: StateReport, state: CrashState, faults: tuple[str, ...], seen: set[bytes]
    ) -> None:
        """A bad block in each sector recovery reads of the state's all-persisted image."""
        judge = self.s.judge
        image = judge.image(state, ())
        base = judge.key(image, state, ()) + (b"U" if faults else b"P")
        for fault, bad in judge.badblocks(image):
            key = base + fault.encode()
            rep.possible += 1
            rep.covered += 1
            if key in seen:
                continue
            seen.add(key)
            rep.judged.append(key)
            rep.runs += 1
            err = judge.verdict(bad, self._info(rep.point, (*faults, fault)))
            if err is not None:
                rep.failing.append(FailNote(key, (), Verdict.of(err), (fault,)))
                rep.errors.append(err)


_EXHAUSTIVE = Exhaustive()


def _sliceable(strategy: Strategy, c: Any) -> bool:
    """Whether a state's images can be cut into slices explored apart (every image, in the
    exhaustive order)."""
    return type(strategy) is Exhaustive and c.max_images is None


def _every_slice(state: CrashState, part: int, parts: int) -> Iterator[Deviations]:
    """Slice ``part`` of ``parts`` of every image of the state, in the exhaustive order
    (the last unit varies fastest)."""
    counts = [len(state.units[i].options(state.base(i))) for i in range(len(state.units))]
    live = [i for i, c in enumerate(counts) if c > 1]
    radix = [counts[i] for i in live]
    total = math.prod(radix)
    start, stop = total * part // parts, total * (part + 1) // parts
    digits = []
    rest = start
    for r in reversed(radix):
        digits.append(rest % r)
        rest //= r
    digits.reverse()
    for _ in range(start, stop):
        yield tuple((i, d) for i, d in zip(live, digits, strict=True) if d)
        k = len(digits) - 1
        while k >= 0:
            digits[k] += 1
            if digits[k] < radix[k]:
                break
            digits[k] = 0
            k -= 1


# -- check ---------------------------------------------------------------------------------


#: Below this much work (images to run; a lazy crash point counts one) a check runs inline
#: whatever ``jobs`` says: starting, feeding and stopping two workers costs about 10-20 ms,
#: which two free cores win back from about 3,000 images of a trivial recovery
#: (bench/bench_explore.py, jobs). A streamed check (:func:`_streamed`) counts the recovery
#: runs it made inline (a lazy point's are known once explored) and forks its workers where
#: those and the next point's images reach this many.
PARALLEL_FROM = 5_000


@keeps_workdir
def check(
    c: CrashCheck | FileCrashCheck,
    *,
    strategy: str | Strategy | None = None,
    seed: int | None = None,
    jobs: int = 1,
    progress: ProgressCallback | Literal["auto"] | None = "auto",
    name: str | None = None,
    replay: str | None = None,
    executor: Executor | None = None,
) -> CheckResult:
    """Run ``c`` (a CrashCheck or a FileCrashCheck) and return what it found (see
    :class:`CheckResult`).

    ``strategy`` and ``seed`` override the check's own; ``jobs`` > 1 explores in that many
    processes, this one and ``jobs - 1`` forked workers (a FileCrashCheck: ``jobs``
    workers; the report is the same), or pass an ``executor``; ``progress`` is
    called with a :class:`Progress` a few times a second ("auto": one live line on stderr
    when it is a terminal); ``name`` is the check's name in replay tokens (the command line
    uses ``path::name``). ``replay`` (a token from a report) checks only the crash it names:
    the result holds its failure if recovery still fails there.
    """
    validate_check(c)
    overrides: dict[str, Any] = {}
    if strategy is not None:
        overrides["strategy"] = strategy
    if seed is not None:
        overrides["seed"] = seed
    if name is not None:
        overrides["name"] = name
    if overrides:
        c = dataclasses.replace(c, **overrides)
    check_jobs(jobs)
    if replay is not None:
        return _replayed(c, replay)
    started = time.perf_counter()
    result = CheckResult(c.name, c.expect, str(strategy_named(c.strategy)), c.seed, check=c)
    show = progress_line() if progress == "auto" else progress
    timer = RunTimer(c.run_timeout)
    cuts = Cuts(c.time_budget, c.point_budget, c.max_images)
    # The check's budget counts from here, recording included (a streamed check records
    # and explores at once).
    deadline = None if c.time_budget is None else time.monotonic() + c.time_budget
    progress_at = [0.0]
    exploring: list[Executor] = []  # who explores (asked for its workers at each line)
    forked: list[int] = []  # a streamed check's processes, once it forked

    def workers() -> int:
        return exploring[0].workers if exploring else (forked[0] if forked else 1)

    def take(merge: _Merge, rep: StateReport, planned: int) -> None:
        merge.add(rep)
        if rep.cut == "time":
            cuts.timed_out.append(rep.point)
        elif rep.cut == "count":
            cuts.counted.append(rep.point)
        if rep.dropped and cuts.check_ran_out_at is None:
            cuts.check_ran_out_at = rep.point
        now = time.perf_counter()
        if show is not None and now - progress_at[0] > 0.2:
            progress_at[0] = now
            planned = max(planned, result.images_possible)
            show(_progress(result, merge.points_done + 1, planned, now - started, workers()))

    if executor is None and isinstance(c, CrashCheck):
        judge = _PoolJudge(c)
        try:
            with timer.installed():
                trace = _streamed(c, judge, result, timer, deadline, take, jobs, forked.append)
        finally:
            # Closed as the check ends however it ends (the merge ran recovery last), the
            # timer stopped, not left to the collector, which closed the judge's source
            # whenever it ran, maybe inside a later run. (A forked worker's copy goes with
            # its process.)
            judge.close()
        planned = result.images_possible
    else:
        with recorded_session(c, timer, deadline) as session:
            trace = session.trace
            result.findings = trace.findings
            result.crash_points = len(trace.points)
            planned = _possible(trace)
            ex = executor if executor is not None else _executor_for(jobs, session)
            exploring.append(ex)
            merge = _Merge(session, result)
            with timer.installed():
                for rep in ex.explore(session):
                    take(merge, rep, planned)
                merge.finish()
    result.images_skipped = max(0, result.images_possible - result.images_covered)
    result.limits = cuts.notes(result.crash_points)
    if c.crash_points == "markers":
        # Marker boundaries are some of the barriers: the states between them go unseen.
        result.limits.append("crash points at marker boundaries only")
    result.exact = result.images_covered >= result.images_possible and not result.limits
    result.seconds = time.perf_counter() - started
    if show is not None:
        show(_progress(result, result.crash_points, planned, result.seconds, workers()))
    return result


def recorded_session(
    c: Any, timer: RunTimer | None = None, deadline: float | None = None
) -> AbstractContextManager[Session]:
    """The check's workload recorded, and everything exploring it needs (``deadline``:
    the check's, from its start; None: its time budget from now). A distributed executor
    opens one on each worker from the check itself: recording is deterministic."""
    if timer is None:
        timer = RunTimer(c.run_timeout)
    if deadline is None and c.time_budget is not None:
        deadline = time.monotonic() + c.time_budget
    return _Recording(c, timer, deadline)


class _Recording(AbstractContextManager["Session"]):
    """:func:`recorded_session`. A class, not a generator: a crash check's workload is then
    recorded from pmemsim's own frames only, as a streamed check's is, so the stacks of its
    stores (which reach past the workload into its caller's frames) read the same whatever
    the executor (a generator adds contextlib's frames)."""

    def __init__(self, c: Any, timer: RunTimer, deadline: float | None) -> None:
        self._c, self._timer, self._deadline = c, timer, deadline
        self._files: AbstractContextManager[tuple[Trace, Judge]] | None = None
        self._pool: _PoolJudge | None = None

    def __enter__(self) -> Session:
        from .files import FileCrashCheck

        c = self._c
        unsafe_shutdown = "unsafe_shutdown" in c.faults
        judge: Judge
        if isinstance(c, FileCrashCheck):
            self._files = _recorded(c, unsafe_shutdown)
            trace, judge = self._files.__enter__()
        else:
            trace = _record(c)
            judge = self._pool = _PoolJudge(c)
        try:
            judge.timer = self._timer
            judge.steps = c.run_steps
            return _session(c, trace, judge, self._timer, self._deadline)
        except BaseException as exc:  # no __exit__ then: what was opened is closed here
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def __exit__(self, *exc: Any) -> bool | None:
        files, self._files = self._files, None
        pool, self._pool = self._pool, None
        try:
            return files.__exit__(*exc) if files is not None else None
        finally:
            # Closed as the session ends, not left to the collector, which closed the
            # judge's source whenever it ran, maybe inside a later run.
            if pool is not None:
                pool.close()


def _session(
    c: Any, trace: Trace, judge: Judge, timer: RunTimer, deadline: float | None
) -> Session:
    return Session(
        c,
        trace,
        judge,
        strategy_named(c.strategy),
        {k: strategy_named(v) for k, v in c.markers.items()},
        timer,
        deadline,
        c.point_budget,
    )


class _Recent(Sequence[CrashPoint]):
    """The crash points a streamed check still keeps, by index: the one being explored and
    the one before it (whose state tells whether this point's is new), and from
    :attr:`hold` on (points whose reports are still to come from worker processes)."""

    def __init__(self) -> None:
        self._kept: deque[CrashPoint] = deque()
        self._count = 0
        #: Keep the points from this index on, and the one before it (None: none held).
        self.hold: int | None = None

    def add(self, point: CrashPoint) -> None:
        self._kept.append(point)
        self._count = point.index + 1
        self._drop()

    def keep_from(self, first: int | None) -> None:
        self.hold = first
        self._drop()

    def _drop(self) -> None:
        floor = self._count - 2
        if self.hold is not None:
            floor = min(floor, self.hold - 1)
        kept = self._kept
        while kept and kept[0].index < floor:
            kept.popleft()

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> CrashPoint:  # type: ignore[override]
        kept = self._kept
        at = i - kept[0].index if kept else -1
        if not 0 <= at < len(kept):
            raise KeyError(i)
        return kept[at]


def _streamed(
    c: CrashCheck,
    judge: _PoolJudge,
    result: CheckResult,
    timer: RunTimer,
    deadline: float | None,
    take: Callable[[_Merge, StateReport, int], None],
    jobs: int = 1,
    forked: Callable[[int], None] = lambda jobs: None,
) -> Trace:
    """Record ``c`` and explore each crash point as the recording reaches it (inline), so
    memory holds the state being explored and the failures to report, not every point.
    ``judge`` (``c``'s) runs recovery; the caller closes it.

    With ``jobs`` > 1, once the recovery runs made and the next point's images (a lazy point
    counts none before it is explored) reach :data:`PARALLEL_FROM`, this process forks
    ``jobs - 1`` workers there, each going on with the recording, and the points from there
    on are shared among them (:mod:`pmemsim.explore.shares`; ``forked(jobs)`` is told). A
    check below the threshold (a lazy one whose runs are shared by its points) is explored
    exactly as with ``jobs=1``."""
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(c.granularity)
    judge.timer = timer
    judge.steps = c.run_steps
    placeholder = Trace(c.size, c.granularity, c.crash_points, [], [], [], [], sim)
    window = _Recent()
    session = _session(c, placeholder, judge, timer, deadline)
    session.window = window
    merge = _Merge(session, result)
    explorer = Explorer(session)
    seen: set[bytes] = set()
    work = 0
    shares: list[Shares] = []  # once forked

    def merged(rep: StateReport) -> None:
        take(merge, rep, 0)

    def on_point(point: CrashPoint) -> None:
        nonlocal work
        result.crash_points = point.index + 1
        window.add(point)
        if not shares and jobs > 1:
            ahead = 0 if session.strategy(point.index).lazy else session.weight(point.index)[0]
            if work + ahead >= PARALLEL_FROM:
                from .shares import Shares

                shares.append(Shares(jobs, session, window, explorer, seen, merged))
                shares[0].start()
                if not shares[0].worker:
                    forked(jobs)
        if shares:
            shares[0].point(point)
            return
        for rep in explorer.points(point.index, point.index + 1, seen=seen):
            work += rep.runs
            merged(rep)

    try:
        trace = _record(
            c,
            backend=sim,
            on_point=on_point,
            states=(lambda i: not shares or shares[0].wants(i)) if jobs > 1 else None,
        )
        if shares and shares[0].worker:  # pragma: no cover - a worker ends here
            shares[0].exit(trace.point_count, None)
        if shares:
            shares[0].finish(trace.point_count)
    except BaseException as exc:
        if shares and shares[0].worker:  # pragma: no cover
            shares[0].exit(0, exc)
        raise
    finally:
        if shares:
            shares[0].stop()
    session.trace = trace
    result.findings = trace.findings
    result.crash_points = trace.point_count
    merge.finish()
    return trace


def _progress(
    r: CheckResult, point: int, planned: int, seconds: float, workers: int = 1
) -> Progress:
    rate = r.images_covered / seconds if seconds > 0 else 0.0
    return Progress(
        r.name,
        point,
        r.crash_points,
        r.images_covered,
        planned,
        r.recovery_runs,
        rate,
        seconds,
        workers,
    )


def _possible(trace: Trace) -> int:
    """Images possible over all crash points (an estimate of the work: bad blocks add a few)."""
    total = 0
    prev: CrashPoint | None = None
    for p in trace.points:
        if prev is None or prev.state is not p.state:
            total += p.state.image_count()
        if p.unsafe_state is not None and (prev is None or prev.unsafe_state is not p.unsafe_state):
            total += p.unsafe_state.image_count()
        prev = p
    return total


def _executor_for(jobs: int, session: Session) -> Executor:
    from .executor import Inline, LocalProcesses

    if jobs > 1:
        work = sum(session.weight(i)[0] for i in range(len(session.trace.points)))
        if work >= PARALLEL_FROM:
            return LocalProcesses(jobs)
    return Inline()
