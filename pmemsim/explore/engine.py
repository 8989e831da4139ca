"""Crash exploration: record a workload, pick images per crash point, run recovery on each.

The run is deterministic: crash points come in program order, each strategy orders its
images, images are deduplicated by content in that order, and random strategies draw from
a generator derived from the seed and the point. Worker processes only run recovery on
images the parent already chose, and the parent re-runs the failing ones itself (so the
report holds the user's live exception), so results do not depend on ``jobs``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from .crash import Crash
from .report import CheckResult, CrashConsistencyError, Failure, LineOutcome, LostStore
from .strategy import PointContext, Strategy, strategy_named
from .trace import CRASH_POINT_MODES, CrashPoint, Trace, record

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

    from .files import FileCrashCheck

__all__ = ["CrashCheck", "check", "replay"]

Workload = Callable[[View], object]
Recovery = Callable[[View], object]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CrashCheck:
    """A workload, the recovery check for its crash images, and the expected verdict.

    ``workload(view)`` runs on a fresh pool of ``size`` zero bytes on a simulated platform of
    ``granularity``. ``recover(view)`` runs on a fresh set mapping one crash image (it may
    call :func:`pmemsim.current_crash`); returning False or raising means inconsistent.
    """

    name: str
    workload: Workload
    recover: Recovery
    size: int = 4096
    granularity: Granularity = Granularity.CACHE_LINE
    expect: Literal["consistent", "inconsistent"] = "consistent"
    description: str = ""
    #: Above this many distinct images at one crash point, an exact strategy falls back
    #: (and the result says what it skipped).
    max_images: int = 4096
    #: "barriers" (exact, the default), "operations" or "markers" (see trace.py).
    crash_points: str = "barriers"
    #: The strategy for crash points (a name or a Strategy; see strategy.py).
    strategy: str | Strategy = "exhaustive"
    #: Strategy per marker name, for crash points inside that marked operation (the
    #: innermost marker with an entry wins; "none" skips its crash points).
    markers: Mapping[str, str | Strategy] = field(default_factory=dict)
    #: Crash recovery too, to this depth: recovery must survive its own power failures.
    recovery_crash_depth: int = 0
    seed: int = 0
    #: Faults to combine with power failures (docs/faults.md): "unsafe_shutdown" (ADR
    #: fails too: data fenced but not deep-flushed may be lost), "badblock" (a 512-byte
    #: bad block in each sector that recovery reads of each crash point's image).
    faults: Sequence[str] = ()
    #: What recovery's set does with a bad block at map time: "clear" it (its content
    #: reads as zeros, as after the kernel reallocates it) or "keep" it (loads of it raise
    #: PoisonError; the map itself refuses with IO_FAIL when detection is on).
    badblock_policy: Literal["clear", "keep"] = "clear"


def _validate(c: CrashCheck) -> None:
    if not isinstance(c, CrashCheck):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{c!r} is not a CrashCheck")
    validate_common(c)
    if not isinstance(c.recovery_crash_depth, int) or c.recovery_crash_depth < 0:
        raise InvalidArgumentError(ErrorCode.EINVAL, "recovery_crash_depth must be an int >= 0")
    if c.badblock_policy not in ("clear", "keep"):
        raise InvalidArgumentError(ErrorCode.EINVAL, "badblock_policy is 'clear' or 'keep'")


def validate_common(c: Any) -> None:
    """The fields every kind of check has (CrashCheck, FileCrashCheck)."""
    if c.expect not in ("consistent", "inconsistent"):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"expect={c.expect!r}")
    if c.crash_points not in CRASH_POINT_MODES:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"crash_points must be one of {CRASH_POINT_MODES}"
        )
    if not isinstance(c.max_images, int) or c.max_images < 2:
        raise InvalidArgumentError(ErrorCode.EINVAL, "max_images must be an int >= 2")
    unknown = set(c.faults) - set(FAULTS)
    if unknown or isinstance(c.faults, str):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"faults are a sequence of {', '.join(FAULTS)}; not {c.faults!r}"
        )


FAULTS = ("unsafe_shutdown", "badblock")
#: Bad blocks are injected in sectors, the unit Linux reports them in.
SECTOR = 512


# -- images --------------------------------------------------------------------------------


class _Keys:
    """Content digests of images, page by page: pages shared copy-on-write between images are
    hashed once, so a key costs what the image changed, not the pool."""

    def __init__(self) -> None:
        self._pages: dict[int, tuple[object, bytes]] = {}

    def of(self, snap: Snapshot, base: Mapping[int, bytes | bytearray]) -> bytes:
        """``base``: the crash state's own pages. They are frozen (the simulator copies a
        page before writing it again), so their digests can be remembered by identity; the
        pages an image patched are hashed afresh and not remembered."""
        h = hashlib.blake2b(digest_size=16)
        for i in sorted(snap.pages):
            page = snap.pages[i]
            h.update(i.to_bytes(8, "little"))
            if base.get(i) is page:
                hit = self._pages.get(id(page))
                if hit is None or hit[0] is not page:
                    hit = (page, hashlib.blake2b(page, digest_size=16).digest())
                    self._pages[id(page)] = hit
                h.update(hit[1])
            else:
                h.update(hashlib.blake2b(page, digest_size=16).digest())
        return h.digest()


def lost_of(
    state: CrashState, deviations: tuple[tuple[int, int], ...]
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
    deviations: tuple[tuple[int, int], ...],
    state: CrashState | None = None,
) -> Crash:
    units = (state or point.state).units
    return Crash(
        point.index,
        tuple(sorted((units[i].medium_index, units[i].offset, o) for i, o in deviations)),
    )


def deviations_for(state: CrashState, crash: Crash) -> tuple[tuple[int, int], ...]:
    """The clamped deviations a crash means at a state (lines not in flight are ignored)."""
    index = {(u.medium_index, u.offset): i for i, u in enumerate(state.units)}
    out = []
    for m, off, alt in crash.lines:
        i = index.get((m, off))
        if i is None:
            continue
        n = len(state.units[i].options(state._bases[i]))
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
) -> BaseException | None:
    """Recovery's verdict on one image: None when consistent, else the exception.

    An image with bad blocks is mapped with bad-block detection on; ``badblock_policy``
    "clear" clears each block from the BADBLOCK event (its content is lost), "keep" leaves
    them (the map fails with IO_FAIL, which is then recovery's verdict).
    """
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(granularity, lint=False)
    if read_tap is not None:
        sim.set_read_tap(read_tap)
    token = set_crash(info)
    callback = _clear_badblocks if snapshot.badblocks and badblock_policy == "clear" else None
    try:
        with Set(Config(granularity=granularity, backend=sim, event_callback=callback)) as s:
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
    finally:
        reset_crash(token)
    if ok is False:
        return CrashConsistencyError("recovery returned False")
    return None


# -- exploration ---------------------------------------------------------------------------

Deviations = tuple[tuple[int, int], ...]


class Judge(Protocol):
    """What one kind of check does with crash states: build the thing its recovery runs on
    (a pool snapshot for CrashCheck, a directory of files for FileCrashCheck), key it by
    content, add bad blocks, and run recovery. The exploration itself is shared."""

    def image(self, state: CrashState, deviations: Deviations) -> Any:
        """What recovery gets for one crash image of ``state``."""

    def key(self, image: Any, state: CrashState) -> bytes:
        """A digest of the image's content (equal content, equal key)."""

    def badblocks(self, image: Any) -> list[tuple[str, Any]]:
        """``(fault, image with it)``: a bad block in each sector recovery reads."""

    def with_badblock(self, image: Any, fault: str) -> Any:
        """The image with the bad block a ``badblock...`` fault names (from a token)."""

    def verdict(self, image: Any, info: CrashInfo) -> BaseException | None:
        """Recovery's outcome on the image: None when consistent."""

    def probe(self, state: CrashState) -> set[int]:
        """Units of ``state`` that recovery reads on its all-persisted image."""

    def sources(self, state: CrashState) -> tuple[str, ...]:
        """Names of the state's media, by index, for reports (empty: one anonymous pool)."""


@dataclass
class _Candidate:
    point: CrashPoint
    state: CrashState
    deviations: Deviations
    strategy: str
    image: Any
    faults: tuple[str, ...] = ()

    def info(self) -> CrashInfo:
        return CrashInfo(self.point.index, self.point.kind, self.point.markers, self.faults)


def strategy_for(
    point: CrashPoint, default: Strategy, by_marker: Mapping[str, Strategy]
) -> Strategy:
    for name in reversed(point.markers):
        s = by_marker.get(name)
        if s is not None:
            return s
    return default


def _candidates(c: Any, trace: Trace, result: CheckResult, judge: Judge) -> Iterator[_Candidate]:
    default = strategy_named(c.strategy)
    by_marker = {k: strategy_named(v) for k, v in c.markers.items()}
    seen: set[bytes] = set()
    done: set[tuple[int, str]] = set()
    for point in trace.points:
        strategy = strategy_for(point, default, by_marker)
        states: list[tuple[CrashState, tuple[str, ...]]] = [(point.state, ())]
        if point.unsafe_state is not None:
            states.append((point.unsafe_state, ("unsafe_shutdown",)))
        for state, faults in states:
            # Points sharing a state (nothing happened between them) give the same images.
            if (id(state), strategy.name) in done:
                continue
            first = not any(k[0] == id(state) for k in done)
            done.add((id(state), strategy.name))
            if first:
                result.images_possible += state.image_count()
            ctx = PointContext(point.index, c.seed, c.max_images, judge.probe)
            plan = strategy.plan(state, ctx)
            if plan.skipped:
                result.images_skipped += plan.skipped
                result.exact = False
            elif not strategy.exact:
                result.exact = False
            tag = b"U" if faults else b"P"
            for dev in plan.images:
                image = judge.image(state, dev)
                key = judge.key(image, state) + tag
                if key in seen:
                    continue
                seen.add(key)
                yield _Candidate(point, state, dev, strategy.name, image, faults)
            if "badblock" in c.faults and plan.images:
                # A bad block in each sector recovery reads of this point's first image.
                dev = plan.images[0]
                image = judge.image(state, dev)
                base = judge.key(image, state) + tag
                for fault, bad in judge.badblocks(image):
                    key = base + fault.encode()
                    if key in seen:
                        continue
                    seen.add(key)
                    result.images_possible += 1
                    yield _Candidate(point, state, dev, strategy.name, bad, (*faults, fault))


class _PoolJudge:
    """CrashCheck's judge: recovery maps a snapshot of the one pool."""

    def __init__(self, c: CrashCheck) -> None:
        self.c = c
        self.keys = _Keys()

    def image(self, state: CrashState, deviations: Deviations) -> Snapshot:
        snap: Snapshot = state.image(deviations).snapshot()
        return snap

    def key(self, image: Snapshot, state: CrashState) -> bytes:
        return self.keys.of(image, state.snapshots[0].pages)

    def badblocks(self, image: Snapshot) -> list[tuple[str, Snapshot]]:
        sectors: set[int] = set()

        def tap(medium: Any, off: int, n: int) -> None:
            sectors.update(range(off - off % SECTOR, off + n, SECTOR))

        run_recovery(self.c.recover, image, self.c.granularity, CrashInfo(-1, "probe", ()), tap)
        return [
            (f"badblock.{s:x}", self.with_badblock(image, f"badblock.{s:x}"))
            for s in sorted(sectors)
            if s < image.size
        ]

    def with_badblock(self, image: Snapshot, fault: str) -> Snapshot:
        try:
            sector = int(fault.split(".", 1)[1], 16)
        except ValueError:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"malformed fault {fault!r}") from None
        return dataclasses.replace(image, badblocks=(*image.badblocks, BadBlock(sector, SECTOR)))

    def verdict(self, image: Snapshot, info: CrashInfo) -> BaseException | None:
        c = self.c
        err = run_recovery(c.recover, image, c.granularity, info, None, c.badblock_policy)
        if err is None and c.recovery_crash_depth:
            return _crash_recovery(c, image, c.recovery_crash_depth, info)
        return err

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
        )
        return {i for i, u in enumerate(state.units) if (u.medium_index, u.offset) in read}

    def sources(self, state: CrashState) -> tuple[str, ...]:
        return ()


def _verdicts(
    judge: Judge, cands: Sequence[_Candidate], jobs: int
) -> list[BaseException | bool | None]:
    """Recovery's outcome per candidate; with jobs > 1 in forked workers (True = failed,
    to be re-run in this process for the live exception)."""
    if jobs <= 1 or len(cands) < 2 * jobs:
        return [judge.verdict(cand.image, cand.info()) for cand in cands]
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    global _WORK
    _WORK = (judge, cands)
    try:
        with _pool(ctx, jobs) as pool:
            chunk = max(1, len(cands) // (jobs * 8))
            failed = pool.map(_worker, range(len(cands)), chunksize=chunk)
    finally:
        _WORK = None
    return [True if f else None for f in failed]


_WORK: tuple[Judge, Sequence[_Candidate]] | None = None


_STOPPING = (signal.SIGINT, signal.SIGTERM)


def _pool(ctx: Any, jobs: int) -> Any:
    """A pool of ``jobs`` forked workers. Ctrl-C and SIGTERM wait while it is built: one
    arriving halfway would leave workers running that nobody terminates (Pool's own cleanup
    catches Exception only). The workers start with them blocked too, until they have
    their own handlers."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        return ctx.Pool(jobs, initializer=_worker_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _worker_signals() -> None:
    """In a worker: Ctrl-C is the parent's to handle (it terminates the pool), and the
    pool's SIGTERM exits through every ``finally`` (a recovery's temporary folder) instead
    of killing the worker where it stands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)


def _worker(i: int) -> bool:
    assert _WORK is not None
    judge, cands = _WORK
    return judge.verdict(cands[i].image, cands[i].info()) is not None


class _RecoveryCrashFailure(Exception):
    """Recovery failed on an image that a crash *of recovery* left behind."""

    def __init__(self, chain: tuple[Crash, ...], error: BaseException) -> None:
        super().__init__(str(error))
        self.chain = chain
        self.error = error


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
    c: CrashCheck, snapshot: Snapshot, depth: int, info: CrashInfo
) -> BaseException | None:
    """Crash recovery itself (running on ``snapshot``) at each of its crash points and run
    recovery again on every image that leaves, to ``depth`` levels."""
    trace = record(_recovery_as_workload(c, info), granularity=c.granularity, base=snapshot)
    keys = _Keys()
    seen: set[bytes] = set()
    strategy = strategy_named(c.strategy)
    for point in trace.points:
        plan = strategy.plan(point.state, PointContext(point.index, c.seed, c.max_images))
        for dev in plan.images:
            snap = point.state.image(dev).snapshot()
            key = keys.of(snap, point.state.snapshots[0].pages)
            if key in seen:
                continue
            seen.add(key)
            inner = CrashInfo(point.index, point.kind, point.markers)
            err = run_recovery(c.recover, snap, c.granularity, inner)
            crash = crash_for(point, dev)
            if err is None and depth > 1:
                err = _crash_recovery(c, snap, depth - 1, inner)
                if isinstance(err, _RecoveryCrashFailure):
                    return _RecoveryCrashFailure((crash, *err.chain), err.error)
            if err is not None:
                return _RecoveryCrashFailure((crash,), err)
    return None


def _failure(name: str, judge: Judge, cand: _Candidate, err: BaseException) -> Failure:
    chain: tuple[Crash, ...] = ()
    if isinstance(err, _RecoveryCrashFailure):
        chain, err = err.chain, err.error
    lines, lost = lost_of(cand.state, cand.deviations)
    crash = crash_for(cand.point, cand.deviations, cand.state)
    return Failure(
        name,
        dataclasses.replace(crash, faults=cand.faults),
        cand.point,
        cand.strategy,
        lines,
        lost,
        err,
        chain,
        judge.sources(cand.state),
    )


def _progress_bar() -> Progress | None:
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


def _validate_any(c: Any) -> None:
    from .files import FileCrashCheck, validate_files

    if isinstance(c, FileCrashCheck):
        validate_files(c)
    else:
        _validate(c)


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


def check(
    c: CrashCheck | FileCrashCheck,
    *,
    strategy: str | Strategy | None = None,
    seed: int | None = None,
    jobs: int = 1,
    progress: Progress | Literal["auto"] | None = "auto",
    name: str | None = None,
) -> CheckResult:
    """Run ``c`` (a CrashCheck or a FileCrashCheck) and return what it found (see
    :class:`CheckResult`).

    ``strategy`` and ``seed`` override the check's own; ``jobs`` > 1 runs recovery in that
    many worker processes (the result is the same); ``progress`` is called with
    ``(done, total)`` per batch ("auto": a bar on stderr when it is a terminal); ``name`` is
    the check's name in replay tokens (the command line uses ``path::name``).
    """
    _validate_any(c)
    overrides: dict[str, Any] = {}
    if strategy is not None:
        overrides["strategy"] = strategy
    if seed is not None:
        overrides["seed"] = seed
    if name is not None:
        overrides["name"] = name
    if overrides:
        c = dataclasses.replace(c, **overrides)
    if not isinstance(jobs, int) or jobs < 1:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"jobs must be an int >= 1, not {jobs!r}")
    started = time.perf_counter()
    result = CheckResult(c.name, c.expect, str(strategy_named(c.strategy)), c.seed, check=c)
    bar = _progress_bar() if progress == "auto" else progress
    batch: list[_Candidate] = []
    done = 0
    with _recorded(c, "unsafe_shutdown" in c.faults) as (trace, judge):
        result.findings = trace.findings
        result.crash_points = len(trace.points)

        def flush_batch() -> None:
            nonlocal done
            outcomes = _verdicts(judge, batch, jobs)
            for cand, out in zip(batch, outcomes, strict=True):
                if out is True:  # failed in a worker: re-run here for the live exception
                    out = judge.verdict(cand.image, cand.info())
                if isinstance(out, BaseException):
                    result.failures.append(_failure(c.name, judge, cand, out))
            done += len(batch)
            batch.clear()

        for cand in _candidates(c, trace, result, judge):
            batch.append(cand)
            result.images_checked += 1
            if len(batch) >= 512:
                flush_batch()
                if bar is not None:
                    bar(done, result.images_checked)
        flush_batch()
    if bar is not None and done:
        bar(done, done)
    result.seconds = time.perf_counter() - started
    return result


def _fault_image(trace: Trace, judge: Judge, crash: Crash) -> tuple[Any, CrashInfo]:
    """The image a crash names in a recorded trace, with its faults applied."""
    if not trace.points:
        raise InvalidArgumentError(ErrorCode.EINVAL, "the workload has no crash points")
    point = trace.points[min(crash.point, len(trace.points) - 1)]
    state = point.state
    if "unsafe_shutdown" in crash.faults:
        if point.unsafe_state is None:
            raise InvalidArgumentError(ErrorCode.EINVAL, "no unsafe-shutdown state recorded")
        state = point.unsafe_state
    image = judge.image(state, deviations_for(state, crash))
    for fault in crash.faults:
        if fault.startswith("badblock."):
            image = judge.with_badblock(image, fault)
        elif fault != "unsafe_shutdown":
            raise InvalidArgumentError(ErrorCode.EINVAL, f"unknown fault {fault!r} in the crash")
    return image, CrashInfo(point.index, point.kind, point.markers, crash.faults)


def replay(c: CrashCheck | FileCrashCheck, token: str) -> BaseException | None:
    """Rebuild the image a replay token names and run recovery on it again.

    ``token`` is a failure's token (``name@crash[>recovery crash...]``) or just the crash
    part. Returns recovery's exception (None if the image is consistent now).
    """
    _validate_any(c)
    crash_part = token.rsplit("@", 1)[-1]
    first, *chain = crash_part.split(">")
    crash = Crash.parse(first)
    if chain and not isinstance(c, CrashCheck):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{c.name}: recovery is never crashed")
    with _recorded(c, "unsafe_shutdown" in crash.faults) as (trace, judge):
        image, info = _fault_image(trace, judge, crash)
        if not isinstance(c, CrashCheck):
            return judge.verdict(image, info)
    for link in chain:
        t = record(_recovery_as_workload(c, info), granularity=c.granularity, base=image)
        image, info = _fault_image(t, _PoolJudge(c), Crash.parse(link))
    return run_recovery(c.recover, image, c.granularity, info, None, c.badblock_policy)
