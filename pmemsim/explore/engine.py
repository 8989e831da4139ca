"""Crash exploration: record a workload, cover the images of each crash point, report.

The run is deterministic: crash points come in program order; at each, either the lazy
explorer walks the point's read paths (:mod:`pmemsim.explore.lazy`, the default) or a
strategy plans images, deduplicated by content across the whole run; random strategies
draw from a generator derived from the seed and the point. Work is split into runs of
consecutive crash points that an executor (:mod:`pmemsim.explore.executor`) explores inline
or in worker processes; the parent merges the points' reports in order, keeps the minimal
failure of each distinct bug, and re-runs those itself (so the report holds the user's live
exception). So the report does not depend on the executor or on ``jobs``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..config import Config
from ..enums import Granularity
from ..errors import ErrorCode, InvalidArgumentError, PmemError
from ..events import BadBlock
from ..markers import CrashInfo, reset_crash, set_crash
from ..part import Part
from ..set import Set
from ..snapshot import Snapshot
from ..source import Source
from ..view import View
from .budget import Cuts, RunTimer
from .checks import FAULTS, BaseCheck, CrashCheck, Recovery, Workload
from .crash import Crash
from .harness import PoolHarness
from .lazy import (
    LazyExplorer,
    NondeterministicRecovery,
    Observation,
    ObservedInfo,
    OpaqueRecovery,
    Outcome,
    StateAlternatives,
    Verdict,
    Walk,
)
from .report import (
    FAILING_KEPT,
    HANG_ERRORS,
    CheckResult,
    CrashConsistencyError,
    FailedCrash,
    Failure,
    LineOutcome,
    LostStore,
    Progress,
    RecoveryCrashFailure,
    RecoveryHang,
)
from .strategy import Exhaustive, PointContext, Strategy, strategy_named
from .trace import CrashPoint, Trace, record

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

    from .executor import Executor
    from .files import FileCrashCheck

__all__ = ["FAULTS", "CrashCheck", "Recovery", "Workload", "check", "replay", "run_recovery"]

ProgressCallback = Callable[[Progress], None]
#: Bad blocks are injected in sectors, the unit Linux reports them in.
SECTOR = 512

Deviations = tuple[tuple[int, int], ...]


def validate_check(c: object) -> None:
    """``c`` is a check this engine runs (its fields were checked when it was made)."""
    if not isinstance(c, BaseCheck):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{c!r} is not a CrashCheck or a FileCrashCheck"
        )


# -- images --------------------------------------------------------------------------------


_MOD = 1 << 128
#: Page digests kept (with their pages, 4 KiB each): the pages of the last state or two are
#: all that carrying a sum over needs, and keeping more would keep old states' pages alive.
PAGE_SUMS_KEPT = 1 << 10


class _PageSums:
    """Content keys of one pool's images that cost the lines an image changes.

    A key is the sum, modulo 2^128, of a digest of (line address, 64 bytes) over every line
    of the pages the image holds. A state's all-persisted sum is carried over from the
    previous state through the pages that changed between them (a page's digest is the sum
    of its lines', computed once per page object); an image adds, per unit it deviates in,
    the difference of the unit's two contents. Equal content (held the same way), equal key.
    """

    def __init__(self) -> None:
        self._pages: dict[int, tuple[object, int]] = {}
        self._units: dict[tuple[int, int], int] = {}
        self._state: CrashState | None = None
        self._sum = 0

    @staticmethod
    def _lines(offset: int, data: bytes | bytearray) -> int:
        total = 0
        for k in range(0, len(data), 64):
            h = hashlib.blake2b((offset + k).to_bytes(8, "little"), digest_size=16)
            h.update(data[k : k + 64])
            total += int.from_bytes(h.digest(), "little")
        return total

    def _page(self, p: int, page: bytes | bytearray | None) -> int:
        if page is None:
            return 0
        hit = self._pages.get(id(page))
        if hit is not None and hit[0] is page:
            return hit[1]
        d = self._lines(p << 12, page)
        if len(self._pages) >= PAGE_SUMS_KEPT:
            self._pages.clear()
        self._pages[id(page)] = (page, d)
        return d

    def base(self, state: CrashState) -> int:
        if state is self._state:
            return self._sum
        prev = self._state
        if prev is None or prev.media[0] is not state.media[0]:
            total = sum(self._page(p, state.persisted_page(p)) for p in state.changed_pages(None))
        else:
            total = self._sum
            for p in state.changed_pages(prev):
                total += self._page(p, state.persisted_page(p)) - self._page(
                    p, prev.persisted_page(p)
                )
        self._state, self._sum = state, total % _MOD
        self._units.clear()
        return self._sum

    def key(self, state: CrashState, alts: StateAlternatives, deviations: Deviations) -> bytes:
        total = self.base(state)
        for i, o in deviations:
            total += self._unit(state, alts, i, o) - self._unit(state, alts, i, 0)
        return (total % _MOD).to_bytes(16, "little")

    def _unit(self, state: CrashState, alts: StateAlternatives, i: int, o: int) -> int:
        d = self._units.get((i, o))
        if d is None:
            d = self._units[(i, o)] = self._lines(state.units[i].offset, alts.content(i, o))
        return d


def lost_of(
    state: CrashState, deviations: Deviations
) -> tuple[tuple[LineOutcome, ...], tuple[LostStore, ...]]:
    lines = []
    stores = []
    for i, o in deviations:
        u = state.units[i]
        option = state.option(i, o)
        atoms = u.lost_atoms(option)
        in_flight = len(u.wb) + sum(len(g) for g in u.nt_groups)
        lines.append(LineOutcome(u.medium_index, u.offset, in_flight, len(atoms), option.reverted))
        stores += [LostStore(u.medium_index, a.offset, len(a.data), (a.frame,)) for a in atoms]
    return tuple(lines), tuple(stores)


def crash_for(
    point: CrashPoint,
    deviations: Deviations,
    state: CrashState | None = None,
) -> Crash:
    units = (state or point.state).units
    return Crash(
        point.index,
        tuple(sorted((units[i].medium_index, units[i].offset, o) for i, o in deviations)),
    )


def deviations_for(state: CrashState, crash: Crash, *, strict: bool = False) -> Deviations:
    """The deviations a crash means at a state. By default values are clamped and lines not
    in flight are ignored (so every shrink of a crash is a crash); ``strict`` refuses both
    (a replay token names exactly one image)."""
    index = {(u.medium_index, u.offset): i for i, u in enumerate(state.units)}
    out = []
    for m, off, alt in crash.lines:
        i = index.get((m, off))
        if i is None:
            if strict:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL,
                    f"crash {crash}: line {m}.{off:x} has nothing in flight at crash point "
                    f"{crash.point}",
                )
            continue
        n = len(state.units[i].options(state.base(i)))
        if strict and not 0 <= alt < n:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"crash {crash}: line {m}.{off:x} has alternatives 0 to {n - 1}, not {alt}",
            )
        alt = min(max(alt, 0), n - 1)
        if alt:
            out.append((i, alt))
    return tuple(sorted(dict(out).items()))


# -- recovery ------------------------------------------------------------------------------


def _clear_badblocks(s: Set, event: object, arg: object) -> None:
    from ..events import BadBlockEvent

    if isinstance(event, BadBlockEvent):
        event.source.clear_badblock(event.badblock)


def run_recovery(
    recover: Recovery,
    snapshot: Snapshot,
    granularity: Granularity,
    info: CrashInfo,
    read_tap: Callable[[Any, int, int], None] | None = None,
    badblock_policy: str = "clear",
    *,
    observation: Observation | None = None,
    timer: RunTimer | None = None,
    harness: PoolHarness | None = None,
) -> BaseException | None:
    """Recovery's verdict on one image: None when consistent, else the exception.

    An image with bad blocks is mapped with bad-block detection on; ``badblock_policy``
    "clear" clears each block from the BADBLOCK event (its content is lost), "keep" leaves
    them (the map fails with IO_FAIL, which is then recovery's verdict). ``observation``
    hears every read and store (lazy exploration, step budgets); ``timer`` interrupts a run
    that overstays (the verdict is then a :class:`RecoveryHang`); ``harness`` maps the image
    into a set kept from one run to the next when it can (see :mod:`.harness`).
    """
    reads, ops = read_tap, None
    if observation is not None:
        reads, ops = observation.on_read, observation.on_op
        info = ObservedInfo(info, observation)
    if harness is not None and harness.fits(snapshot):
        return _on_harness(recover, snapshot, info, reads, ops, timer, harness)
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(granularity, lint=False)
    if reads is not None:
        sim.set_read_tap(reads)
    if ops is not None:
        sim.set_tap(ops)
        sim.machine.tap_depth = 0  # the observation needs what was stored where, not the stack
    token = set_crash(info)
    callback = _clear_badblocks if snapshot.badblocks and badblock_policy == "clear" else None
    config = Config(granularity=granularity, backend=sim, event_callback=callback)
    try:
        with timer.running() if timer is not None else nullcontext(), Set(config) as s:
            source = Source.from_image(snapshot)
            if snapshot.badblocks:
                source.badblock_detection = True
            try:
                d = s.map(Part(source))
            except PmemError as exc:  # e.g. IO_FAIL: bad blocks left in the pool
                return exc
            try:
                ok = recover(s.view(d))
            except Exception as exc:  # the user's recovery failed: that is the verdict
                return exc
    except HANG_ERRORS as exc:
        if timer is not None:
            timer.disarm()  # again: the interruption may have come before the first
        return exc
    finally:
        reset_crash(token)
    if ok is False:
        return CrashConsistencyError("recovery returned False")
    return None


def _on_harness(
    recover: Recovery,
    snapshot: Snapshot,
    info: CrashInfo,
    reads: Callable[[Any, int, int], None] | None,
    ops: Callable[[Any], None] | None,
    timer: RunTimer | None,
    harness: PoolHarness,
) -> BaseException | None:
    view = harness.load(snapshot)
    harness.taps(reads, ops)
    token = set_crash(info)
    try:
        if timer is not None:
            timer.arm()
        try:
            ok = recover(view)
        except Exception as exc:  # the user's recovery failed: that is the verdict
            return exc
        finally:
            if timer is not None:
                timer.disarm()
    except HANG_ERRORS as exc:
        if timer is not None:
            timer.disarm()  # again: the interruption may have come before the first
        return exc
    finally:
        reset_crash(token)
        harness.taps(None, None)
        harness.check()
    if ok is False:
        return CrashConsistencyError("recovery returned False")
    return None


# -- kinds of checks -----------------------------------------------------------------------


class Judge(Protocol):
    """What one kind of check does with crash states: build the thing its recovery runs on
    (a pool snapshot for CrashCheck, a directory of files for FileCrashCheck), key it by
    content, add bad blocks, and run recovery. The exploration itself is shared."""

    #: The run limits (set by the engine before exploring).
    timer: RunTimer | None
    steps: int | None

    def image(self, state: CrashState, deviations: Deviations) -> Any:
        """What recovery gets for one crash image of ``state``."""

    def key(self, image: Any, state: CrashState, deviations: Deviations) -> bytes:
        """A digest of the image's content (equal content, equal key)."""

    def badblocks(self, image: Any) -> list[tuple[str, Any]]:
        """``(fault, image with it)``: a bad block in each sector recovery reads."""

    def with_badblock(self, image: Any, fault: str) -> Any:
        """The image with the bad block a ``badblock...`` fault names (from a token)."""

    def verdict(self, image: Any, info: CrashInfo) -> BaseException | None:
        """Recovery's outcome on the image: None when consistent."""

    def observed(self, state: CrashState, deviations: Deviations, info: CrashInfo) -> Outcome:
        """Recovery's outcome on an image, with what it observed (lazy exploration)."""

    def context(self, state: CrashState, faults: tuple[str, ...]) -> object:
        """States with one context share lazy runs: recovery sees nothing else differ."""

    def probe(self, state: CrashState) -> set[int]:
        """Units of ``state`` that recovery reads on its all-persisted image."""

    def sources(self, state: CrashState) -> tuple[str, ...]:
        """Names of the state's media, by index, for reports (empty: one anonymous pool)."""


class _PoolJudge:
    """CrashCheck's judge: recovery maps a snapshot of the one pool."""

    def __init__(self, c: CrashCheck) -> None:
        self.c = c
        self.sums = _PageSums()
        self._alts: StateAlternatives | None = None
        self.timer: RunTimer | None = None
        self.steps: int | None = None
        self.harness = PoolHarness(c.granularity, c.size)

    def _images(self, state: CrashState) -> StateAlternatives:
        if self._alts is None or self._alts.state is not state:
            self._alts = StateAlternatives(state)
        return self._alts

    def image(self, state: CrashState, deviations: Deviations) -> Snapshot:
        return self._images(state).snapshot(deviations)

    def key(self, image: Snapshot, state: CrashState, deviations: Deviations) -> bytes:
        return self.sums.key(state, self._images(state), deviations)

    def badblocks(self, image: Snapshot) -> list[tuple[str, Snapshot]]:
        sectors: set[int] = set()

        def tap(medium: Any, off: int, n: int) -> None:
            sectors.update(range(off - off % SECTOR, off + n, SECTOR))

        info = CrashInfo(-1, "probe", ())
        run_recovery(self.c.recover, image, self.c.granularity, info, tap, timer=self.timer)
        return [
            (f"badblock.{s:x}", self.with_badblock(image, f"badblock.{s:x}"))
            for s in sorted(sectors)
            if s < image.size
        ]

    def with_badblock(self, image: Snapshot, fault: str) -> Snapshot:
        try:
            sector = int(fault.split(".", 1)[1], 16)
        except (IndexError, ValueError):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"malformed fault {fault!r}") from None
        return dataclasses.replace(image, badblocks=(*image.badblocks, BadBlock(sector, SECTOR)))

    def _steps(self) -> Observation | None:
        if self.steps is None:
            return None
        return Observation((64,), lambda m: None, steps=self.steps)

    def verdict(self, image: Snapshot, info: CrashInfo) -> BaseException | None:
        return self._verdict(image, info, self._steps())

    def _verdict(
        self, image: Snapshot, info: CrashInfo, observation: Observation | None
    ) -> BaseException | None:
        c = self.c
        err = run_recovery(
            c.recover,
            image,
            c.granularity,
            info,
            None,
            c.badblock_policy,
            observation=observation,
            timer=self.timer,
            harness=self.harness,
        )
        if err is None and c.recovery_crash_depth:
            # Recovery crashed and run again may ask about the crash too: still observed.
            seen = info if observation is None else ObservedInfo(info, observation)
            return _crash_recovery(
                c,
                _cleared(image),
                c.recovery_crash_depth,
                seen,
                observation=observation,
                timer=self.timer,
            )
        return err

    def observed(self, state: CrashState, deviations: Deviations, info: CrashInfo) -> Outcome:
        unit = state.media[0].unit if state.media else 64
        # Writes are followed within one run; crashed recovery runs again on images its own
        # stores shaped, where every byte read is counted as the crash image's (sound: it
        # only branches more).
        obs = Observation(
            (unit,),
            lambda m: 0,
            track_writes=not self.c.recovery_crash_depth,
            steps=self.steps,
        )
        err = self._verdict(self.image(state, deviations), info, obs)
        return Outcome(Verdict.of(err), obs.events, obs.values, err)

    def context(self, state: CrashState, faults: tuple[str, ...]) -> object:
        return faults

    def probe(self, state: CrashState) -> set[int]:
        read: set[tuple[int, int]] = set()
        size = state.units[0].size if state.units else 64  # one pool: one unit size

        def tap(medium: Any, off: int, n: int) -> None:
            for idx in range(off // size, (off + n - 1) // size + 1):
                read.add((0, idx * size))

        run_recovery(
            self.c.recover,
            state.image(()).snapshot(),
            self.c.granularity,
            CrashInfo(-1, "probe", ()),
            tap,
            timer=self.timer,
        )
        return {i for i, u in enumerate(state.units) if (u.medium_index, u.offset) in read}

    def sources(self, state: CrashState) -> tuple[str, ...]:
        return ()


def _cleared(image: Snapshot) -> Snapshot:
    """The image as recovery left it after clearing its bad blocks (policy "clear": the
    kernel reallocates a cleared block, which reads as zeros): what recovery, crashed and
    run again, starts from."""
    if not image.badblocks:
        return image
    patched: dict[int, bytes | bytearray] = {}
    for bb in image.badblocks:
        for off in range(bb.offset, min(bb.offset + bb.length, image.size)):
            p = off // 4096
            if p not in patched:
                patched[p] = bytearray(image.page(p))
            patched[p][off % 4096] = 0  # type: ignore[index]
    pages = collections.ChainMap(patched, image.pages)  # type: ignore[arg-type]  # read only
    return dataclasses.replace(image, pages=pages, badblocks=())


def _recovery_as_workload(c: CrashCheck, info: CrashInfo) -> Workload:
    """Recovery, run as a workload to be crashed, seeing the crash it recovers from."""

    def workload(view: View) -> None:
        token = set_crash(info)
        try:
            c.recover(view)
        finally:
            reset_crash(token)

    return workload


def _crash_recovery(
    c: CrashCheck,
    snapshot: Snapshot,
    depth: int,
    info: CrashInfo,
    *,
    observation: Observation | None = None,
    timer: RunTimer | None = None,
) -> BaseException | None:
    """Crash recovery itself (running on ``snapshot``) at each of its crash points and run
    recovery again on every image that leaves, to ``depth`` levels."""
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(c.granularity)
    if observation is not None:
        sim.set_read_tap(observation.on_read)
    try:
        with timer.running() if timer is not None else nullcontext():
            trace = record(
                _recovery_as_workload(c, info),
                granularity=c.granularity,
                base=snapshot,
                backend=sim,
            )
    except HANG_ERRORS as exc:
        if timer is not None:
            timer.disarm()
        return exc
    except Exception as exc:  # recovery failed as a recorded workload: that is its verdict
        return exc
    sums = _PageSums()
    seen: set[bytes] = set()
    strategy = strategy_named(c.strategy)
    for point in trace.points:
        plan = strategy.plan(point.state, PointContext(point.index, c.seed, c.max_images))
        images = StateAlternatives(point.state)
        for dev in plan.images:
            snap = images.snapshot(dev)
            key = sums.key(point.state, images, dev)
            if key in seen:
                continue
            seen.add(key)
            inner = CrashInfo(point.index, point.kind, point.markers)
            err = run_recovery(
                c.recover, snap, c.granularity, inner, observation=observation, timer=timer
            )
            crash = crash_for(point, dev)
            if err is None and depth > 1:
                err = _crash_recovery(
                    c, snap, depth - 1, inner, observation=observation, timer=timer
                )
                if isinstance(err, RecoveryCrashFailure):
                    return RecoveryCrashFailure((crash, *err.chain), err.error)
            if err is not None:
                return RecoveryCrashFailure((crash,), err)
    return None


# -- exploring crash points ------------------------------------------------------------------


def strategy_for(
    point: CrashPoint, default: Strategy, by_marker: Mapping[str, Strategy]
) -> Strategy:
    for name in reversed(point.markers):
        s = by_marker.get(name)
        if s is not None:
            return s
    return default


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
    #: Crash points before this one were explored already (while recording): no work left.
    first: int = 0

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
        if i < self.first:
            return 0, False
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
        for i in range(max(first, s.first), last):
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
        for i in range(max(first, self.s.first), last):
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


# -- merging reports into a result -------------------------------------------------------------


@dataclass
class _Candidate:
    size: tuple[int, int, int, str]
    point: int
    faults: tuple[str, ...]
    deviations: Deviations
    strategy: str
    verdict: Verdict
    error: BaseException | None
    #: The crash point and state the failure is at (kept for the report; a streamed check
    #: keeps no other point).
    crash_point: CrashPoint
    state: CrashState


class _Merge:
    """Folds state reports, in point order, into the result: counts, global dedupe of
    planned images, and the minimal failure of each distinct bug."""

    def __init__(self, session: Session, result: CheckResult) -> None:
        self.s = session
        self.r = result
        self.seen: set[bytes] = set()
        self.best: dict[tuple[str, str], _Candidate] = {}
        self.last_covered: dict[tuple[str, ...], int] = {}
        self.points_done = -1
        #: The failing crashes of the current crash point, by state: a point cut into
        #: slices arrives slice by slice, each with both states, and ``failing`` lists them
        #: state by state whatever the slicing.
        self.point_failing: dict[tuple[str, ...], list[FailedCrash]] = {}

    def _flush_failing(self) -> None:
        # States in Session.states' order: the power failure's, then the unsafe shutdown's.
        for _, listed in sorted(self.point_failing.items(), key=lambda kv: len(kv[0])):
            self.r.failing += listed[: FAILING_KEPT - len(self.r.failing)]
        self.point_failing.clear()

    def add(self, rep: StateReport) -> None:
        r = self.r
        if rep.point != self.points_done:
            self._flush_failing()
        if rep.note and rep.note not in r.notes:
            r.notes.append(rep.note)
        r.images_possible += rep.possible
        if rep.part:  # another slice of the state before
            r.images_covered += rep.covered
            self.last_covered[rep.faults] += rep.covered
        elif rep.possible or rep.faults not in self.last_covered:
            r.images_covered += rep.covered
            self.last_covered[rep.faults] = rep.covered
        else:  # the same state again, another strategy: count what it added, if anything
            r.images_covered += max(0, rep.covered - self.last_covered[rep.faults])
            self.last_covered[rep.faults] = max(rep.covered, self.last_covered[rep.faults])
        self.points_done = max(self.points_done, rep.point)
        r.recovery_runs += rep.runs
        new: set[bytes] = set()
        for k in rep.judged:
            if k not in self.seen:
                self.seen.add(k)
                new.add(k)
        r.images_checked += len(new)
        if rep.lazy:
            r.read_paths += len(new)
        errors = rep.errors or [None] * len(rep.failing)
        for note, err in zip(rep.failing, errors, strict=True):
            if note.key in new:
                r.inconsistent += 1
                r.hangs += note.verdict.kind == "hang"
                listed = self.point_failing.setdefault(rep.faults, [])
                if len(r.failing) + len(listed) < FAILING_KEPT:
                    listed.append(self._failed(rep, note, self._crash(rep, note)))
            elif not rep.lazy:
                continue  # judged at an earlier point: the same image, the same verdict
            # A read path met again may stand for a smaller crash here: consider it.
            self._consider(rep, note, err)

    def _failed(self, rep: StateReport, note: FailNote, crash: Crash) -> FailedCrash:
        v = note.verdict
        lines, lost = lost_of(self._state(rep.point, rep.faults), note.deviations)
        return FailedCrash(crash, lines, lost, v.kind, v.signature, v.message)

    def _crash(self, rep: StateReport, note: FailNote) -> Crash:
        state = self._state(rep.point, rep.faults)
        crash = crash_for(self.s.points[rep.point], note.deviations, state)
        return dataclasses.replace(crash, faults=(*rep.faults, *note.extra))

    def _consider(self, rep: StateReport, note: FailNote, err: BaseException | None) -> None:
        sig = note.verdict.signature
        cur = self.best.get(sig)
        lines = len(note.deviations)
        if cur is not None and lines > cur.size[0]:
            return  # cannot be smaller: spare working out what it lost
        state = self._state(rep.point, rep.faults)
        lost = sum(len(state.units[i].lost_atoms(state.option(i, o))) for i, o in note.deviations)
        if cur is not None and (lines, lost, rep.point) > cur.size[:3]:
            return
        crash = self._crash(rep, note)
        size = (lines, lost, rep.point, str(crash))
        if cur is None or size < cur.size:
            self.best[sig] = _Candidate(
                size,
                rep.point,
                crash.faults,
                note.deviations,
                rep.strategy,
                note.verdict,
                err,
                self.s.points[rep.point],
                state,
            )

    def _state(self, point: int, faults: tuple[str, ...]) -> CrashState:
        p = self.s.points[point]
        if "unsafe_shutdown" in faults:
            assert p.unsafe_state is not None
            return p.unsafe_state
        return p.state

    def finish(self) -> None:
        """The minimal failure of each bug, with the user's live exception (re-run here when
        it was found elsewhere: a worker, or a run shared with an earlier crash point)."""
        self._flush_failing()
        judge = self.s.judge
        for cand in sorted(self.best.values(), key=lambda c: c.size):
            point, state = cand.crash_point, cand.state
            err = cand.error
            if err is None:
                image = judge.image(state, cand.deviations)
                for fault in cand.faults:
                    if fault.startswith("badblock."):
                        image = judge.with_badblock(image, fault)
                info = CrashInfo(point.index, point.kind, point.markers, cand.faults)
                err = judge.verdict(image, info)
                if Verdict.of(err) != cand.verdict:
                    raise NondeterministicRecovery(
                        f"recovery gave two verdicts on one image ({_token(cand)}): "
                        f"{_says(cand.verdict)}, then {_says(Verdict.of(err))}"
                    )
                assert err is not None
            self.r.failures.append(_failure(self.r.name, judge, cand, point, state, err))


def _says(v: Verdict) -> str:
    return "consistent" if not v.failed else f"{v.kind}: {v.signature[0]} {v.message}"


def _token(cand: _Candidate) -> str:
    return cand.size[3]


def _failure(
    name: str,
    judge: Judge,
    cand: _Candidate,
    point: CrashPoint,
    state: CrashState,
    err: BaseException,
) -> Failure:
    chain: tuple[Crash, ...] = ()
    if isinstance(err, RecoveryCrashFailure):
        chain, err = err.chain, err.error
    lines, lost = lost_of(state, cand.deviations)
    crash = dataclasses.replace(crash_for(point, cand.deviations, state), faults=cand.faults)
    return Failure(name, crash, point, cand.strategy, lines, lost, err, chain, judge.sources(state))


# -- progress ------------------------------------------------------------------------------


def _progress_bar() -> Callable[[int, int], None] | None:
    """A ``(done, total)`` bar on stderr when it is a terminal (check-log uses it)."""
    if not sys.stderr.isatty():
        return None
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images, {rate:,.0f}/s"
        )
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def progress_line() -> ProgressCallback | None:
    """One live, labelled line on stderr when it is a terminal (None otherwise)."""
    if not sys.stderr.isatty():
        return None

    def show(p: Progress) -> None:
        end = "\n" if p.point >= p.points else ""
        on = f" on {p.workers} workers" if p.workers > 1 else ""
        sys.stderr.write(
            f"\r\x1b[K{p.check}: crash point {p.point}/{p.points}, {p.images:,} of "
            f"{p.planned:,} images covered, {p.runs:,} runs, {p.rate:,.0f} images/s{on}{end}"
        )
        sys.stderr.flush()

    return show


# -- check ---------------------------------------------------------------------------------


@contextmanager
def _recorded(c: Any, unsafe_shutdown: bool) -> Iterator[tuple[Trace, Judge]]:
    """The check's workload recorded once, and the judge of its crash images."""
    from .files import FileCrashCheck, recorded_files

    if isinstance(c, FileCrashCheck):
        with recorded_files(c, unsafe_shutdown) as recorded:
            yield recorded
        return
    trace = record(
        c.workload,
        size=c.size,
        granularity=c.granularity,
        crash_points=c.crash_points,
        unsafe_shutdown=unsafe_shutdown,
    )
    yield trace, _PoolJudge(c)


#: Below this much work (images to run; a lazy crash point counts one) a check runs inline
#: whatever ``jobs`` says: starting, feeding and stopping two workers costs about 10-20 ms,
#: which two free cores win back from about 3,000 images of a trivial recovery
#: (bench/bench_explore.py, jobs). A streamed check (:func:`_streamed`) explores this much
#: inline before it keeps points for workers, and forks only if they hold this much again.
PARALLEL_FROM = 5_000


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
    worker processes (the report is the same), or pass an ``executor``; ``progress`` is
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
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"jobs must be an int >= 1, not {jobs!r}")
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

    def workers() -> int:
        return exploring[0].workers if exploring else 1

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
        with timer.installed():
            trace = _streamed(c, result, timer, deadline, take, jobs)
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

    def __enter__(self) -> Session:
        from .files import FileCrashCheck

        c = self._c
        unsafe_shutdown = "unsafe_shutdown" in c.faults
        judge: Judge
        if isinstance(c, FileCrashCheck):
            self._files = _recorded(c, unsafe_shutdown)
            trace, judge = self._files.__enter__()
        else:
            trace = record(
                c.workload,
                size=c.size,
                granularity=c.granularity,
                crash_points=c.crash_points,
                unsafe_shutdown=unsafe_shutdown,
            )
            judge = _PoolJudge(c)
        judge.timer = self._timer
        judge.steps = c.run_steps
        return _session(c, trace, judge, self._timer, self._deadline)

    def __exit__(self, *exc: Any) -> bool | None:
        files, self._files = self._files, None
        return files.__exit__(*exc) if files is not None else None


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
    the one before it (whose state tells whether this point's is new)."""

    def __init__(self) -> None:
        self._kept: dict[int, CrashPoint] = {}
        self._count = 0

    def add(self, point: CrashPoint) -> None:
        self._kept[point.index] = point
        self._count = point.index + 1
        self._kept.pop(point.index - 2, None)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> CrashPoint:  # type: ignore[override]
        return self._kept[i]


def _streamed(
    c: CrashCheck,
    result: CheckResult,
    timer: RunTimer,
    deadline: float | None,
    take: Callable[[_Merge, StateReport, int], None],
    jobs: int = 1,
) -> Trace:
    """Record ``c`` and explore each crash point as the recording reaches it (inline), so
    memory holds the state being explored and the failures to report, not every point.

    With ``jobs`` > 1, once the work done and the next point's reach :data:`PARALLEL_FROM`
    images, the points from there on are kept instead; after the recording they go to
    ``jobs`` worker processes if they hold that much work again, else they are explored
    here. A check below the threshold is explored exactly as with ``jobs=1``."""
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(c.granularity)
    judge = _PoolJudge(c)
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
    #: Points from the one where the work reached the threshold (jobs > 1).
    kept: list[CrashPoint] = []

    def on_point(point: CrashPoint) -> None:
        nonlocal work
        result.crash_points = point.index + 1
        if kept:
            kept.append(point)
            return
        window.add(point)
        if jobs > 1:
            work += session.weight(point.index)[0]
            if work >= PARALLEL_FROM:
                kept.append(point)
                return
        for rep in explorer.points(point.index, point.index + 1, seen=seen):
            take(merge, rep, 0)

    trace = record(
        c.workload,
        size=c.size,
        granularity=c.granularity,
        crash_points=c.crash_points,
        unsafe_shutdown="unsafe_shutdown" in c.faults,
        backend=sim,
        on_point=on_point,
    )
    session.trace = trace
    result.findings = trace.findings
    result.crash_points = trace.point_count
    if kept:
        _explore_kept(session, explorer, kept, jobs, merge, take, seen)
    merge.finish()
    return trace


def _explore_kept(
    session: Session,
    explorer: Explorer,
    kept: list[CrashPoint],
    jobs: int,
    merge: _Merge,
    take: Callable[[_Merge, StateReport, int], None],
    seen: set[bytes],
) -> None:
    """The crash points a streamed check kept (``kept[0]`` on): in worker processes when
    they hold :data:`PARALLEL_FROM` images of work or more, else here."""
    from .executor import LocalProcesses

    first = kept[0].index
    # Points before ``first`` were explored; only the one just before it is read (whether
    # ``first``'s state is new), the others are stand-ins that no one reads.
    before = [session.points[first - 1]] * first if first else []
    session.trace = dataclasses.replace(session.trace, points=before + kept)
    session.window = None
    session.first = first
    last = len(session.trace.points)
    if sum(session.weight(i)[0] for i in range(first, last)) >= PARALLEL_FROM:
        for rep in LocalProcesses(jobs).explore(session):
            take(merge, rep, 0)
    else:
        for rep in explorer.points(first, last, seen=seen):
            take(merge, rep, 0)


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


# -- replay --------------------------------------------------------------------------------


def _split_token(c: Any, token: str) -> tuple[Crash, list[Crash]]:
    if not isinstance(token, str):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"a replay token is a string, not {token!r}")
    who, at, crash_part = token.rpartition("@")
    if at and who and who != c.name and who.rpartition("::")[2] != c.name:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"replay token {token!r} is for check {who!r}, not {c.name!r}"
        )
    first, *chain = crash_part.split(">")
    crashes = [Crash.parse(first), *(Crash.parse(x) for x in chain)]
    if chain and not isinstance(c, CrashCheck):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{c.name}: recovery is never crashed")
    return crashes[0], crashes[1:]


def _fault_image(
    trace: Trace, judge: Judge, crash: Crash, what: str = "the workload"
) -> tuple[Any, CrashInfo, CrashPoint, CrashState]:
    """The image a crash names in a recorded trace, with its faults applied (strictly: a
    point out of range or a line not in flight is an error, never clamped)."""
    if not 0 <= crash.point < len(trace.points):
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"crash {crash}: {what} has crash points 0 to {len(trace.points) - 1}, "
            f"not {crash.point}",
        )
    point = trace.points[crash.point]
    state = point.state
    if "unsafe_shutdown" in crash.faults:
        if point.unsafe_state is None:
            raise InvalidArgumentError(ErrorCode.EINVAL, "no unsafe-shutdown state recorded")
        state = point.unsafe_state
    image = judge.image(state, deviations_for(state, crash, strict=True))
    for fault in crash.faults:
        if fault.startswith("badblock."):
            image = judge.with_badblock(image, fault)
        elif fault != "unsafe_shutdown":
            raise InvalidArgumentError(ErrorCode.EINVAL, f"unknown fault {fault!r} in the crash")
    return image, CrashInfo(point.index, point.kind, point.markers, crash.faults), point, state


def replay(c: CrashCheck | FileCrashCheck, token: str) -> BaseException | None:
    """Rebuild the image a replay token names and run recovery on it again.

    ``token`` is a failure's token (``name@crash[>recovery crash...]``) or just the crash
    part. Returns recovery's exception (None if the image is consistent now). A token that
    names another check, a crash point the run does not have, or a line with nothing in
    flight there is an error.
    """
    validate_check(c)
    err = _replay(c, token)[0]
    return err.error if isinstance(err, RecoveryCrashFailure) else err


def _replay(c: Any, token: str) -> tuple[BaseException | None, Crash, CrashPoint, Any, Any]:
    timer = RunTimer(c.run_timeout)
    with timer.installed():
        return _replay_with(c, token, timer)


def _replay_with(
    c: Any, token: str, timer: RunTimer
) -> tuple[BaseException | None, Crash, CrashPoint, Any, Any]:
    crash, chain = _split_token(c, token)
    with _recorded(c, "unsafe_shutdown" in crash.faults) as (trace, judge):
        judge.timer = timer
        image, info, point, state = _fault_image(trace, judge, crash)
        if not isinstance(c, CrashCheck):
            return judge.verdict(image, info), crash, point, state, judge
    pool_judge = _PoolJudge(c)
    for link in chain:
        try:
            with timer.running():
                t = record(_recovery_as_workload(c, info), granularity=c.granularity, base=image)
        except HANG_ERRORS as exc:
            timer.disarm()
            return exc, crash, point, state, judge
        except Exception as exc:  # recovery failed as a recorded workload: its verdict
            return exc, crash, point, state, judge
        image, info, _, _ = _fault_image(t, pool_judge, link, "recovery")
    err = run_recovery(c.recover, image, c.granularity, info, None, c.badblock_policy, timer=timer)
    if err is not None and chain:
        err = RecoveryCrashFailure(tuple(chain), err)
    return err, crash, point, state, judge


def _replayed(c: Any, token: str) -> CheckResult:
    """``check(c, replay=token)``: the one crash a token names, as a result."""
    started = time.perf_counter()
    result = CheckResult(c.name, c.expect, "replay", c.seed, crash_points=1, check=c)
    err, crash, point, state, judge = _replay(c, token)
    result.images_possible = result.images_checked = result.images_covered = 1
    result.recovery_runs = 1
    if err is not None:
        deviations = deviations_for(state, crash, strict=True)
        cand = _Candidate(
            (len(deviations), 0, crash.point, str(crash)),
            crash.point,
            crash.faults,
            deviations,
            "replay",
            Verdict.of(err),
            err,
            point,
            state,
        )
        result.inconsistent = 1
        exact = dataclasses.replace(crash_for(point, deviations, state), faults=crash.faults)
        lines, lost = lost_of(state, deviations)
        v = Verdict.of(err)
        result.failing.append(FailedCrash(exact, lines, lost, v.kind, v.signature, v.message))
        result.hangs = int(isinstance(err, RecoveryHang))
        result.failures.append(_failure(c.name, judge, cand, point, state, err))
    result.seconds = time.perf_counter() - started
    return result
