"""Checking every crash image a store log allows, with a program or a Python checker.

The log is replayed once on the simulator (crash points as in :mod:`pmemsim.explore.trace`:
before every barrier that follows a store, and at the end, so the trailing unfenced epoch
is covered), a strategy picks images per crash point (the innermost marker with a strategy
of its own wins), images are deduplicated by content across the whole run, and the checker
judges each distinct image. The run is deterministic: points in log order, images in each
strategy's order, random strategies seeded per point; worker threads or processes only
judge images the parent chose, so ``jobs`` changes nothing but the time.

The minimal inconsistent crash is the one with the fewest lines losing the fewest stores at
the earliest crash point (as in :class:`pmemsim.explore.CheckResult`); its lost stores are
named by log record ("STORE #12 at 0x1000000c").
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorCode, InvalidArgumentError
from ..explore.crash import Crash
from ..explore.engine import crash_for, deviations_for, strategy_for
from ..explore.strategy import PointContext, Strategy, strategy_named
from ..explore.trace import CRASH_POINT_MODES, CrashPoint, Trace
from ..markers import CrashInfo, reset_crash, set_crash
from .checkers import FunctionChecker, ProgramChecker
from .grammar import Marker, Store
from .images import PoolImage
from .replay import BEGIN, DEEP, END, FENCE, FLUSH, STORE, Replay, Step

__all__ = ["LogCheckResult", "LogFailure", "LostPiece", "check_log", "replay_crash"]

Checker = FunctionChecker | ProgramChecker
Deviations = tuple[tuple[int, int], ...]
Progress = Callable[[int, int], None]

_KIND_NAME = {STORE: "STORE", FLUSH: "FLUSH", FENCE: "FENCE", DEEP: "DEEP_SYNC"}
_POINT_KIND = {"fence": FENCE, "deep_flush": DEEP, "store": STORE, "flush": FLUSH}


@dataclass(frozen=True, slots=True)
class LostPiece:
    """An 8-byte-aligned piece of a logged store that a crash image lost."""

    record: int
    address: int
    size: int
    #: The piece's bytes as a little-endian number (what the STORE wrote there).
    value: int
    #: Whether the piece is the whole store (a store crossing an 8-byte boundary tears).
    whole: bool
    frames: tuple[str, ...] = ()

    def __str__(self) -> str:
        part = "" if self.whole else " (part of it)"
        frame = f" at {self.frames[0]}" if self.frames else ""
        return (
            f"STORE #{self.record} at 0x{self.address:x}{part}: {self.size} byte(s), "
            f"value 0x{self.value:x}{frame}"
        )


@dataclass(frozen=True)
class LogFailure:
    """One inconsistent crash image, described in the log's terms."""

    crash: Crash
    point: CrashPoint
    #: Where the crash is, by log record.
    where: str
    #: ``(line offset in the file, its address, stores in flight, stores lost)``.
    lines: tuple[tuple[int, int, int, int], ...]
    lost: tuple[LostPiece, ...]
    #: What the checker said ("exit status 1: ...", "raised ...", "returned False").
    verdict: str

    @property
    def token(self) -> str:
        return str(self.crash)

    def describe(self) -> str:
        out = [f"{self.where}:"]
        if self.point.markers:
            out[0] = f"{self.where} (inside {' > '.join(self.point.markers)}):"
        if self.lines:
            for off, addr, in_flight, lost in self.lines:
                out.append(
                    f"  line +0x{off:x} (0x{addr:x}): {in_flight} store(s) in flight, lost {lost}"
                )
            out.append("  stores lost:")
            out += [f"    {s}" for s in self.lost]
        else:
            out.append("  every store persisted (nothing was lost)")
        out.append(f"  checker: {self.verdict}")
        return "\n".join(out)


@dataclass
class LogCheckResult:
    """What check-log found."""

    log: str
    engine: str
    seed: int
    checker: str
    crash_points: int = 0
    images_possible: int = 0
    images_checked: int = 0
    images_skipped: int = 0
    inconsistent: int = 0
    #: Every crash point was covered by an exact strategy without falling back.
    exact: bool = True
    seconds: float = 0.0
    minimal: LogFailure | None = None
    #: Operations (and records of each type) replayed, and those left out.
    operations: int = 0
    stores: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    clipped: int = 0
    file: str = ""
    pool_size: int = 0

    @property
    def verdict(self) -> str:
        return "inconsistent" if self.inconsistent else "consistent"

    @property
    def coverage(self) -> str:
        if self.exact:
            return "exact"
        return f"heuristic: {self.engine}, {self.images_skipped} image(s) not checked"

    @property
    def images_per_second(self) -> float:
        return self.images_checked / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line of counts (no timing: the same for every run of a seed)."""
        return (
            f"{self.verdict.upper()} ({self.coverage}); {self.crash_points} crash point(s), "
            f"{self.images_possible} image(s) possible, {self.images_checked} distinct "
            f"checked, {self.inconsistent} inconsistent"
        )

    def report(self) -> str:
        out = [self.summary()]
        ignored = {k: v for k, v in self.ignored.items() if v}
        if ignored:
            listed = ", ".join(f"{v} {k}" for k, v in ignored.items())
            out.append(f"left out (outside the registered file): {listed}")
        if self.clipped:
            out.append(f"{self.clipped} record(s) cut to the part inside the registered file")
        if self.minimal is not None:
            out.append("the minimal inconsistent crash:")
            out.append(self.minimal.describe())
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        m = self.minimal
        return {
            "log": self.log,
            "file": self.file,
            "pool_size": self.pool_size,
            "checker": self.checker,
            "verdict": self.verdict,
            "engine": self.engine,
            "exact": self.exact,
            "seed": self.seed,
            "operations": self.operations,
            "stores": self.stores,
            "ignored": self.ignored,
            "clipped": self.clipped,
            "crash_points": self.crash_points,
            "images_possible": self.images_possible,
            "images_checked": self.images_checked,
            "images_skipped": self.images_skipped,
            "inconsistent": self.inconsistent,
            "minimal": None
            if m is None
            else {
                "token": m.token,
                "crash_point": m.point.index,
                "where": m.where,
                "markers": list(m.point.markers),
                "lines": [
                    {"offset": o, "address": a, "in_flight": f, "lost": n} for o, a, f, n in m.lines
                ],
                "lost_stores": [
                    {"record": s.record, "address": s.address, "size": s.size, "value": s.value}
                    for s in m.lost
                ],
                "checker": m.verdict,
            },
            "seconds": round(self.seconds, 4),
        }


# -- describing crashes in the log's terms ---------------------------------------------------


#: One 8-byte piece of a store: its pool offset, its address, the store.
_Piece = tuple[int, int, Store]


class _Describer:
    """Names a crash in the log's terms: one pass over the log's operations per crash."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay

    def _scan(
        self, point: CrashPoint, marker: int, lines: Mapping[tuple[int, int], int]
    ) -> tuple[dict[int, Step], int | None, dict[tuple[int, int], deque[_Piece]]]:
        """The steps at operation positions ``point.operation - 1`` and ``point.operation``,
        the record of the ``marker``-th marker boundary, and per line the ``lines[line]``
        last 8-byte pieces ``(offset, step, store)`` stored to it before the crash."""
        n = point.operation
        at: dict[int, Step] = {}
        marker_record: int | None = None
        pieces: dict[tuple[int, int], deque[_Piece]] = {
            k: deque(maxlen=v) for k, v in lines.items()
        }
        pos = seen = 0
        for op, step, skip in self.replay.conversions():
            if step is None:
                continue
            if step.kind in (BEGIN, END):
                if seen == marker:
                    marker_record = step.record
                seen += 1
                continue
            if pos in (n - 1, n):
                at[pos] = step
            if step.kind == STORE and pos < n and pieces:
                assert isinstance(op, Store)
                off = step.offset
                end = off + len(step.arg)  # type: ignore[arg-type]
                while off < end:
                    line = pieces.get((step.pool, off - off % 64))
                    if line is not None:
                        # The piece's own address: where the store put it (an alias maps
                        # the same file bytes at another address).
                        line.append((off, op.address + skip + off - step.offset, op))
                    off += min(8 - off % 8, end - off)
            pos += 1
            if pos > n and seen > marker:
                break
        return at, marker_record, pieces

    def where(self, point: CrashPoint, marker: int = -1) -> str:
        """Where a crash point is, by log record (``marker``: how many marker crash points
        came before it, for one at a marker)."""
        return self._where(point, *self._scan(point, marker, {})[:2])

    def _where(self, point: CrashPoint, at: dict[int, Step], marker_record: int | None) -> str:
        n = point.operation
        if point.kind == "end":
            last = at.get(n - 1)
            return f"crash point {point.index}, at the end of the log" + (
                f" (after record #{last.record})" if last is not None else ""
            )
        if point.kind == "marker" and marker_record is not None:
            m = self.replay.log.record(marker_record)
            edge = f" {m.name}.{'BEGIN' if m.begin else 'END'}" if isinstance(m, Marker) else ""
            return f"crash point {point.index}, at marker{edge} (record #{marker_record})"
        want = _POINT_KIND.get(point.kind)
        for i in (n - 1, n) if point.position == "before" else (n - 1,):
            step = at.get(i)
            if want is not None and step is not None and step.kind == want:
                return (
                    f"crash point {point.index}, {point.position} the "
                    f"{_KIND_NAME[want]} (record #{step.record})"
                )
        return f"crash point {point.index}, {point.position} a {point.kind}"

    def failure(
        self, point: CrashPoint, dev: Deviations, verdict: str, marker: int = -1
    ) -> LogFailure:
        state = point.state
        pools = self.replay.pools
        units = [state.units[i] for i, _ in dev]
        at, marker_record, pieces = self._scan(
            point, marker, {(u.medium_index, u.offset): len(u.wb) for u in units if u.wb}
        )
        lines = []
        lost: list[LostPiece] = []
        for i, o in dev:
            u = state.units[i]
            pool = pools[u.medium_index]
            opt = state.option(i, o)
            atoms = u.lost_atoms(opt)
            lines.append((u.offset, pool.address_of(u.offset), len(u.wb), len(atoms)))
            mine = list(pieces.get((u.medium_index, u.offset), ()))
            exact = len(mine) == len(u.wb) and all(
                p[0] == a.offset for p, a in zip(mine, u.wb, strict=True)
            )
            for k, a in enumerate(u.wb[opt.kept :], opt.kept):
                if exact:
                    _, address, store = mine[k]
                    lost.append(
                        LostPiece(
                            store.index,
                            address,
                            len(a.data),
                            int.from_bytes(a.data, "little"),
                            len(a.data) == store.size,
                            store.frames,
                        )
                    )
                else:  # cannot happen for a replayed log; keep the report honest anyway
                    lost.append(LostPiece(-1, pool.address_of(a.offset), len(a.data), 0, False))
        where = self._where(point, at, marker_record)
        return LogFailure(crash_for(point, dev), point, where, tuple(lines), tuple(lost), verdict)


# -- exploration -------------------------------------------------------------------------------


def _candidates(
    trace: Trace,
    img: PoolImage,
    result: LogCheckResult,
    default: Strategy,
    by_marker: Mapping[str, Strategy],
    seed: int,
    max_images: int,
) -> Iterator[tuple[CrashPoint, Deviations]]:
    """Every distinct image to check, in order; ``img`` shows the point's state meanwhile."""
    seen: set[int] = set()
    done: set[tuple[int, str]] = set()
    states: set[int] = set()
    for point in trace.points:
        strategy = strategy_for(point, default, by_marker)
        state = point.state
        if (id(state), strategy.name) in done:
            continue
        done.add((id(state), strategy.name))
        if id(state) not in states:
            states.add(id(state))
            result.images_possible += state.image_count()
        plan = strategy.plan(state, PointContext(point.index, seed, max_images))
        if plan.skipped:
            result.images_skipped += plan.skipped
            result.exact = False
        elif not strategy.exact:
            result.exact = False
        if not plan.images:
            continue
        img.move_to(state)
        for dev in plan.images:
            k = img.key(dev)
            if k in seen:
                continue
            seen.add(k)
            yield point, dev


def _size_key(img: PoolImage, point: CrashPoint, dev: Deviations) -> tuple[int, int, int]:
    return (len(dev), img.lost(dev), point.index)


class _Markers:
    """Sets PMREORDER_MARKERS and the crash info for in-process checkers, per point."""

    def __init__(self) -> None:
        self.point: CrashPoint | None = None
        self.token: object = None
        self.saved = os.environ.get("PMREORDER_MARKERS")

    def enter(self, point: CrashPoint) -> None:
        if point is self.point:
            return
        self.point = point
        if self.token is not None:
            reset_crash(self.token)
        self.token = set_crash(CrashInfo(point.index, point.kind, point.markers))
        os.environ["PMREORDER_MARKERS"] = "|".join(point.markers)

    def close(self) -> None:
        if self.token is not None:
            reset_crash(self.token)
            self.token = None
        if self.saved is None:
            os.environ.pop("PMREORDER_MARKERS", None)
        else:
            os.environ["PMREORDER_MARKERS"] = self.saved


def _judge(checker: FunctionChecker, img: PoolImage, dev: Deviations) -> str | None:
    img.patch(dev)
    view = img.view()
    try:
        return checker(view)
    finally:
        view.release()
        img.restore(dev)


def check_log(
    replay: Replay,
    checker: Checker,
    *,
    engine: str | Strategy = "exhaustive",
    markers: Mapping[str, str | Strategy] | None = None,
    seed: int = 0,
    jobs: int = 1,
    crash_points: str = "barriers",
    max_images: int = 4096,
    progress: Progress | None = None,
    name: str = "",
) -> LogCheckResult:
    """Check every distinct crash image the log allows (see the module docstring)."""
    if not isinstance(jobs, int) or jobs < 1:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"jobs must be an int >= 1, not {jobs!r}")
    if crash_points not in CRASH_POINT_MODES:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"crash points must be one of {', '.join(CRASH_POINT_MODES)}"
        )
    if not isinstance(max_images, int) or max_images < 2:
        raise InvalidArgumentError(ErrorCode.EINVAL, "max_images must be an int >= 2")
    default = strategy_named(engine)
    by_marker = {k: strategy_named(v) for k, v in (markers or {}).items()}
    for s in (default, *by_marker.values()):
        if s.name == "read-guided":
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                "read-guided exploration traces a recovery's reads on the simulator; a log's "
                "checker reads bytes (use the Python API with a recovery instead)",
            )
    started = time.perf_counter()
    trace = replay.record(crash_points)
    label = checker.label
    result = LogCheckResult(
        name, str(engine) if isinstance(engine, str) else default.name, seed, label
    )
    if isinstance(engine, str) and engine != default.name:
        result.engine = f"{engine} (= {default.name})"
    result.crash_points = len(trace.points)
    result.operations = replay.operations
    result.stores = replay.stores
    result.ignored = dict(replay.ignored)
    result.clipped = replay.clipped
    result.file = replay.pool.resolved
    result.pool_size = replay.pool.size
    img = _image(replay)
    try:
        cands = _candidates(trace, img, result, default, by_marker, seed, max_images)
        if isinstance(checker, ProgramChecker):
            fails = _run_programs(checker, cands, img, jobs, result, progress)
        elif jobs > 1:
            fails = _run_forked(checker, list(cands), img, jobs, result, progress)
        else:
            fails = _run_inline(checker, cands, img, result, progress)
        result.inconsistent = len(fails)
        best: tuple[tuple[int, int, int], CrashPoint, Deviations, str] | None = None
        for point, dev, verdict in fails:  # in candidate order: the first minimal one wins
            img.move_to(point.state)
            key = _size_key(img, point, dev)
            if best is None or key < best[0]:
                best = (key, point, dev, verdict)
        if best is not None:
            _, point, dev, verdict = best
            if isinstance(checker, FunctionChecker) and not verdict:
                marks = _Markers()  # judged in a worker: judge again here for the message
                try:
                    marks.enter(point)
                    img.move_to(point.state)
                    verdict = _judge(checker, img, dev) or "inconsistent in a worker only"
                finally:
                    marks.close()
            marker = _marker_ordinal(trace, point)
            result.minimal = _Describer(replay).failure(point, dev, verdict, marker)
    finally:
        img.close()
    result.seconds = time.perf_counter() - started
    return result


Failures = list[tuple[CrashPoint, Deviations, str]]


def _image(replay: Replay) -> PoolImage:
    pool = replay.pool
    return PoolImage(pool.size, pool.source, pool.source_size)


def _marker_ordinal(trace: Trace, point: CrashPoint) -> int:
    """How many crash points at markers come before ``point``."""
    return sum(1 for p in trace.points[: point.index] if p.kind == "marker")


def _run_inline(
    checker: FunctionChecker,
    cands: Iterator[tuple[CrashPoint, Deviations]],
    img: PoolImage,
    result: LogCheckResult,
    progress: Progress | None,
) -> Failures:
    fails: Failures = []
    marks = _Markers()
    checked = 0
    try:
        for point, dev in cands:
            if point is not marks.point:
                marks.enter(point)
            checked += 1
            # The common case inline (this loop is the fast path): patch, judge, restore.
            img.patch(dev)
            view = img.view()
            try:
                verdict = checker(view)
            finally:
                view.release()
                img.restore(dev)
            if verdict is not None:
                fails.append((point, dev, verdict))
            if progress is not None and not checked % 4096:
                progress(checked, checked)
    finally:
        marks.close()
    result.images_checked = checked
    return fails


_WORK: tuple[FunctionChecker, list[tuple[CrashPoint, Deviations]], PoolImage, _Markers] | None = (
    None
)


def _forked(i: int) -> bool:
    assert _WORK is not None
    checker, cands, img, marks = _WORK
    point, dev = cands[i]
    marks.enter(point)  # a worker's own process: its environment and context are its own
    img.move_to(point.state)
    return _judge(checker, img, dev) is not None


def _run_forked(
    checker: FunctionChecker,
    cands: list[tuple[CrashPoint, Deviations]],
    img: PoolImage,
    jobs: int,
    result: LogCheckResult,
    progress: Progress | None,
) -> Failures:
    """In ``jobs`` forked processes (each with its own copy of the image buffer); each
    failure is judged again here for its message, so the report is the same."""
    import multiprocessing

    result.images_checked = len(cands)
    if len(cands) < 2 * jobs:
        return _run_inline(checker, iter(cands), img, result, progress)
    global _WORK
    _WORK = (checker, cands, img, _Markers())
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            chunk = max(1, len(cands) // (jobs * 16))
            failed = pool.map(_forked, range(len(cands)), chunksize=chunk)
    finally:
        _WORK = None
    if progress is not None:
        progress(len(cands), len(cands))
    # The worker's verdict stands; the message is filled in for the minimal failure only.
    return [(p, d, "") for (p, d), bad in zip(cands, failed, strict=True) if bad]


def _run_programs(
    checker: ProgramChecker,
    cands: Iterator[tuple[CrashPoint, Deviations]],
    img: PoolImage,
    jobs: int,
    result: LogCheckResult,
    progress: Progress | None,
) -> Failures:
    """Each image written to a fresh file; ``jobs`` threads run the program at once."""
    fails: Failures = []
    checked = 0
    with tempfile.TemporaryDirectory(prefix="pmemsim-check-log-") as tmp:

        def run(n: int, data: bytes, markers: tuple[str, ...]) -> str | None:
            path = os.path.join(tmp, f"image-{n}.bin")
            with open(path, "xb") as f:
                f.write(data)
            try:
                return checker.run(path, markers)
            finally:
                os.unlink(path)

        window: deque[tuple[CrashPoint, Deviations, Future[str | None]]] = deque()

        def settle(keep: int) -> None:
            # Oldest first, so failures stay in candidate order whatever the threads do.
            while len(window) > keep:
                point, dev, fut = window.popleft()
                verdict = fut.result()
                if verdict is not None:
                    fails.append((point, dev, verdict))

        with ThreadPoolExecutor(max_workers=jobs) as ex:
            for point, dev in cands:
                img.patch(dev)
                try:
                    data = img.to_bytes()
                finally:
                    img.restore(dev)
                window.append((point, dev, ex.submit(run, checked, data, point.markers)))
                checked += 1
                settle(2 * jobs - 1)
                if progress is not None:
                    progress(checked - len(window), checked)
            settle(0)
    result.images_checked = checked
    return fails


def replay_crash(
    replay: Replay,
    checker: Checker,
    token: str,
    *,
    crash_points: str = "barriers",
    image_out: str | None = None,
) -> tuple[LogFailure | None, CrashPoint]:
    """Rebuild the image a crash token names and judge it again.

    Returns the failure (None if the image is consistent now) and the crash point.
    ``image_out``: also write the image to this file.
    """
    crash = Crash.parse(token)
    trace = replay.record(crash_points)
    point = trace.points[min(crash.point, len(trace.points) - 1)]
    dev = deviations_for(point.state, crash)
    img = _image(replay)
    marks = _Markers()
    try:
        img.move_to(point.state)
        if image_out is not None:
            img.patch(dev)
            try:
                with open(image_out, "wb") as f:
                    f.write(img.buf)
            finally:
                img.restore(dev)
        if isinstance(checker, ProgramChecker):
            img.patch(dev)
            try:
                data = img.to_bytes()
            finally:
                img.restore(dev)
            with tempfile.TemporaryDirectory(prefix="pmemsim-check-log-") as tmp:
                path = os.path.join(tmp, "image.bin")
                with open(path, "wb") as f:
                    f.write(data)
                verdict = checker.run(path, point.markers)
        else:
            marks.enter(point)
            verdict = _judge(checker, img, dev)
        if verdict is None:
            return None, point
        marker = _marker_ordinal(trace, point)
        return _Describer(replay).failure(point, dev, verdict, marker), point
    finally:
        marks.close()
        img.close()
