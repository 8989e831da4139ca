"""Checking every crash image a store log allows, with a program, a C function or Python.

The log is replayed once on the simulator (crash points as in :mod:`pmemsim.explore.trace`:
before every barrier that follows a store, and at the end, so the trailing unfenced epoch
is covered), a strategy picks images per crash point (the innermost marker with a strategy
of its own wins), images are deduplicated by content across the whole run, and the checker
judges each distinct image. The run is deterministic: points in log order, images in each
strategy's order, random strategies seeded per point; checker threads and worker processes
only judge images the parent chose, so ``jobs`` changes nothing but the time.

A log that registers several files has images over all of them: a checker judges each
file's image (the image is consistent when all are; one file's image, once judged, is not
judged again) or, with ``all_files``, all files of an image together.

``PMREORDER_MARKERS`` is set as pmreorder sets it: every marker record of the log before the
crash, as the log writes it (``NAME.BEGIN``, ``NAME.END``), ``|``-joined in log order.
:func:`pmemsim.current_crash` (for Python checkers) and the JSON give the markers under way.

The minimal inconsistent crash is the one with the fewest lines losing the fewest stores at
the earliest crash point (as in :class:`pmemsim.explore.CheckResult`); its lost stores are
named by log record ("STORE #12 at 0x1000000c") and by the C source line pmemcheck's stack
trace names.
"""

from __future__ import annotations

import bisect
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import ErrorCode, InvalidArgumentError
from ..explore.crash import Crash
from ..explore.engine import crash_for, deviations_for, strategy_for
from ..explore.strategy import PointContext, Strategy, strategy_named
from ..explore.trace import CRASH_POINT_MODES, CrashPoint
from ..markers import CrashInfo, reset_crash, set_crash
from .checkers import (
    FunctionChecker,
    LibChecker,
    LibWorker,
    ProgramChecker,
    Request,
    resume_programs,
    stop_programs,
)
from .grammar import Marker, Store
from .images import PoolImage
from .replay import BEGIN, DEEP, END, FENCE, FLUSH, STORE, Replay, Step
from .slots import ImageFiles, scratch_folder

__all__ = ["LogCheckResult", "LogFailure", "LostPiece", "check_log", "replay_crash"]

Checker = FunctionChecker | ProgramChecker | LibChecker
Deviations = tuple[tuple[int, int], ...]
Progress = Callable[[int, int], None]

_KIND_NAME = {STORE: "STORE", FLUSH: "FLUSH", FENCE: "FENCE", DEEP: "DEEP_SYNC"}
_POINT_KIND = {"fence": FENCE, "deep_flush": DEEP, "store": STORE, "flush": FLUSH}
#: PMREORDER_MARKERS longer than this keeps its newest markers (an environment string of
#: more than 128 KiB cannot be passed to a program at all).
MARKERS_LIMIT = 1 << 16

#: ``0x109557: append_record (append.c:57)`` -> function, file, line.
_SOURCE = re.compile(r"^(?:0x[0-9A-Fa-f]+: )?(?P<fn>.+?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def source_of(frames: tuple[str, ...]) -> str | None:
    """``append.c:57 in append_record``: the first frame with a source file (frames inside
    libraries, ``??? (in libpmem2.so)``, are skipped), or None."""
    for f in frames:
        m = _SOURCE.match(f)
        if m is not None:
            return f"{os.path.basename(m['file'])}:{m['line']} in {m['fn']}"
    return None


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

    @property
    def source(self) -> str | None:
        """Where the program stored it (``append.c:57 in append_record``), if known."""
        return source_of(self.frames)

    def __str__(self) -> str:
        part = "" if self.whole else " (part of it)"
        where = self.source
        if where is None and self.frames:
            where = self.frames[0]
        at = f", stored at {where}" if where else ""
        return (
            f"STORE #{self.record} at 0x{self.address:x}{part}: {self.size} byte(s), "
            f"value 0x{self.value:x}{at}"
        )


@dataclass(frozen=True)
class LogFailure:
    """One inconsistent crash image, described in the log's terms."""

    crash: Crash
    point: CrashPoint
    #: Where the crash is, by log record.
    where: str
    #: ``(pool, line offset in the file, its address, stores in flight, stores lost)``.
    lines: tuple[tuple[int, int, int, int, int], ...]
    lost: tuple[LostPiece, ...]
    #: What the checker said ("exit status 1: ...", "raised ...", "returned 0").
    verdict: str
    #: PMREORDER_MARKERS at the crash.
    pmreorder_markers: str = ""
    #: The registered paths, by pool number (to name lines of several files).
    files: tuple[str, ...] = ()

    @property
    def token(self) -> str:
        return str(self.crash)

    def describe(self) -> str:
        out = [f"{self.where}:"]
        if self.point.markers:
            out[0] = f"{self.where} (inside {' > '.join(self.point.markers)}):"
        if self.lines:
            for pool, off, addr, in_flight, lost in self.lines:
                name = f"{os.path.basename(self.files[pool])} " if len(self.files) > 1 else ""
                out.append(
                    f"  line {name}+0x{off:x} (0x{addr:x}): {in_flight} store(s) in flight, "
                    f"lost {lost}"
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
    #: Every registered file: path, size, and whether its content was the start.
    files: list[dict[str, Any]] = field(default_factory=list)
    #: How many times the checker ran (fewer than images: one file's image is judged once).
    checker_runs: int = 0

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
            out.append(f"left out (outside every registered file): {listed}")
        if self.clipped:
            out.append(f"{self.clipped} record(s) cut to the part inside a registered file")
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
            "files": self.files,
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
                "pmreorder_markers": m.pmreorder_markers,
                "lines": [
                    {"file": p, "offset": o, "address": a, "in_flight": f, "lost": n}
                    for p, o, a, f, n in m.lines
                ],
                "lost_stores": [
                    {
                        "record": s.record,
                        "address": s.address,
                        "size": s.size,
                        "value": s.value,
                        "source": s.source,
                        "frames": list(s.frames),
                    }
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
        last 8-byte pieces stored to it before the crash."""
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
        self,
        point: CrashPoint,
        dev: Deviations,
        verdict: str,
        marker: int = -1,
        pmreorder_markers: str = "",
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
            lines.append(
                (u.medium_index, u.offset, pool.address_of(u.offset), len(u.wb), len(atoms))
            )
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
        return LogFailure(
            crash_for(point, dev),
            point,
            self._where(point, at, marker_record),
            tuple(lines),
            tuple(lost),
            verdict,
            pmreorder_markers,
            tuple(p.path for p in pools),
        )


# -- exploration -------------------------------------------------------------------------------


class _Cand(NamedTuple):
    """One distinct image to judge."""

    seq: int
    point: CrashPoint
    dev: Deviations
    #: Smaller is more minimal: lines deviating, atoms lost, crash point.
    size: tuple[int, int, int]
    #: PMREORDER_MARKERS at its point, and how many marker crash points came before it.
    markers: str
    marker_ordinal: int


class _MarkerHistory:
    """PMREORDER_MARKERS per crash point, from the replay's marker records."""

    def __init__(self, replay: Replay) -> None:
        self.names = replay.marker_names
        self.ops = replay.marker_ops
        self._cache: tuple[int, str] = (0, "")

    def count(self, point: CrashPoint, ordinal: int) -> int:
        """How many marker records the log has before the crash."""
        if point.kind == "end":
            return len(self.names)
        if point.kind == "marker":
            return ordinal + 1
        n = point.operation
        if point.position == "before":
            # Markers right before the barrier came before the crash. The barrier is the
            # n-th operation (a fence or flush counts before it takes effect), or the next
            # one (a deep flush counts after).
            barrier = n if point.kind == "deep_flush" else n - 1
            return bisect.bisect_right(self.ops, barrier)
        return bisect.bisect_left(self.ops, n)

    def text(self, count: int) -> str:
        if self._cache[0] == count:
            return self._cache[1]
        names = self.names
        size = 0
        lo = count
        while lo > 0 and size + len(names[lo - 1]) + 1 <= MARKERS_LIMIT:
            lo -= 1
            size += len(names[lo]) + 1
        text = "|".join(names[lo:count])
        if lo > 0:
            text = "...|" + text
        self._cache = (count, text)
        return text


def _candidates(
    points: Iterator[CrashPoint],
    img: PoolImage,
    result: LogCheckResult,
    default: Strategy,
    by_marker: Mapping[str, Strategy],
    seed: int,
    max_images: int,
    history: _MarkerHistory,
) -> Iterator[_Cand]:
    """Every distinct image to check, in order; ``img`` shows the point's state meanwhile."""
    seen: set[int] = set()
    last_state: object = None
    last_strategy: str = ""
    ordinal = -1
    seq = 0
    for point in points:
        if point.kind == "marker":
            ordinal += 1
        result.crash_points += 1
        strategy = strategy_for(point, default, by_marker)
        state = point.state
        # Consecutive points with nothing in between share their state: same images.
        if state is last_state and strategy.name == last_strategy:
            continue
        if state is not last_state:
            result.images_possible += state.image_count()
        last_state, last_strategy = state, strategy.name
        plan = strategy.plan(state, PointContext(point.index, seed, max_images))
        if plan.skipped:
            result.images_skipped += plan.skipped
            result.exact = False
        elif not strategy.exact:
            result.exact = False
        if not plan.images:
            continue
        img.move_to(state)
        markers = history.text(history.count(point, ordinal))
        for dev in plan.images:
            k = img.key(dev)
            if k in seen:
                continue
            seen.add(k)
            yield _Cand(seq, point, dev, (len(dev), img.lost(dev), point.index), markers, ordinal)
            seq += 1


class _Markers:
    """Sets PMREORDER_MARKERS and the crash info for in-process checkers, per point."""

    def __init__(self) -> None:
        self.point: CrashPoint | None = None
        self.token: object = None
        self.saved = os.environ.get("PMREORDER_MARKERS")

    def enter(self, point: CrashPoint, markers: str) -> None:
        if point is self.point:
            return
        self.point = point
        if self.token is not None:
            reset_crash(self.token)
        self.token = set_crash(CrashInfo(point.index, point.kind, point.markers))
        os.environ["PMREORDER_MARKERS"] = markers

    def close(self) -> None:
        if self.token is not None:
            reset_crash(self.token)
            self.token = None
        if self.saved is None:
            os.environ.pop("PMREORDER_MARKERS", None)
        else:
            os.environ["PMREORDER_MARKERS"] = self.saved


class _Verdicts:
    """Verdicts as they come: counts, and the minimal failure so far."""

    def __init__(self, result: LogCheckResult, progress: Progress | None) -> None:
        self.result = result
        self.progress = progress
        self.best: tuple[tuple[tuple[int, int, int], int], _Cand, str] | None = None
        self.done = 0

    def add(self, cand: _Cand, verdict: str | None) -> None:
        self.done += 1
        if verdict is not None:
            self.result.inconsistent += 1
            key = (cand.size, cand.seq)  # the first of equally small ones wins
            if self.best is None or key < self.best[0]:
                self.best = (key, cand, verdict)
        if self.progress is not None and not self.done % 1024:
            self.progress(self.done, self.result.images_checked)


class _PerFile:
    """Several files judged one by one: each file's image is judged once."""

    def __init__(self, img: PoolImage, names: list[str]) -> None:
        self.img = img
        self.names = names
        self.known: list[dict[int, str | None]] = [{} for _ in names]

    def todo(self, dev: Deviations) -> tuple[list[tuple[int, int]], str | None]:
        """``(pool, key)`` of the files still to judge, or the verdict of one judged
        before that failed."""
        out = []
        for pool, known in enumerate(self.known):
            k = self.img.pool_key(dev, pool)
            if k in known:
                verdict = known[k]
                if verdict is not None:
                    return [], verdict
                continue
            out.append((pool, k))
        return out, None

    def note(self, pool: int, key: int, verdict: str | None) -> str | None:
        self.known[pool][key] = verdict
        return None if verdict is None else f"{self.names[pool]}: {verdict}"


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
    result = LogCheckResult(
        name, str(engine) if isinstance(engine, str) else default.name, seed, checker.label
    )
    if isinstance(engine, str) and engine != default.name:
        result.engine = f"{engine} (= {default.name})"
    _fill(result, replay)
    img = _image(replay)
    history = _MarkerHistory(replay)
    try:
        cands = _candidates(
            iter(trace.points), img, result, default, by_marker, seed, max_images, history
        )
        verdicts = _Verdicts(result, progress)
        _judge_all(replay, checker, cands, img, jobs, verdicts)
        if verdicts.best is not None:
            _, cand, verdict = verdicts.best
            result.minimal = _Describer(replay).failure(
                cand.point, cand.dev, verdict, cand.marker_ordinal, cand.markers
            )
        if progress is not None:
            progress(verdicts.done, result.images_checked)
    finally:
        img.close()
    result.seconds = time.perf_counter() - started
    return result


def _fill(result: LogCheckResult, replay: Replay) -> None:
    result.operations = replay.operations
    result.stores = replay.stores
    result.ignored = dict(replay.ignored)
    result.clipped = replay.clipped
    result.file = replay.pool.resolved
    result.pool_size = replay.pool.size
    result.files = [{"path": p.path, "size": p.size, "base_image": p.source} for p in replay.pools]


def _image(replay: Replay) -> PoolImage:
    return PoolImage([(p.size, p.source, p.source_size) for p in replay.pools])


def _names(replay: Replay) -> list[str]:
    """A file name per pool for image files (the registered name, unique)."""
    out: list[str] = []
    for i, p in enumerate(replay.pools):
        base = os.path.basename(p.path) or "pool"
        out.append(base if base not in out else f"{i}-{base}")
    return out


def _judge_all(
    replay: Replay,
    checker: Checker,
    cands: Iterator[_Cand],
    img: PoolImage,
    jobs: int,
    verdicts: _Verdicts,
) -> None:
    per_file = None
    if len(replay.pools) > 1 and not checker.all_files:
        per_file = _PerFile(img, [p.path for p in replay.pools])
    if isinstance(checker, FunctionChecker) and jobs == 1:
        _run_inline(checker, cands, img, replay, per_file, verdicts)
        return
    # Slot files: at most the pools' sizes (sparse where untouched) per slot.
    need = sum(p.size for p in replay.pools) * (
        jobs if isinstance(checker, ProgramChecker) else 512
    )
    with tempfile.TemporaryDirectory(prefix="pmemsim-check-log-", dir=scratch_folder(need)) as tmp:
        if isinstance(checker, ProgramChecker):
            _run_programs(checker, cands, img, replay, per_file, jobs, verdicts, tmp)
        else:
            _run_workers(checker, cands, img, replay, per_file, jobs, verdicts, tmp)


def _counted(cands: Iterator[_Cand], result: LogCheckResult) -> Iterator[_Cand]:
    for c in cands:
        result.images_checked += 1
        yield c


def _run_inline(
    checker: FunctionChecker,
    cands: Iterator[_Cand],
    img: PoolImage,
    replay: Replay,
    per_file: _PerFile | None,
    verdicts: _Verdicts,
) -> None:
    result = verdicts.result
    marks = _Markers()
    paths = [p.path for p in replay.pools]
    try:
        for cand in _counted(cands, result):
            if cand.point is not marks.point:
                marks.enter(cand.point, cand.markers)
            dev = cand.dev
            # The common case inline (this loop is the fast path): patch, judge, restore.
            img.patch(dev)
            try:
                if checker.all_files:
                    views = {p: img.view(i) for i, p in enumerate(paths)}
                    try:
                        verdict = checker(views)
                    finally:
                        for v in views.values():
                            v.release()
                    result.checker_runs += 1
                elif per_file is None:
                    view = img.view(0)
                    try:
                        verdict = checker(view)
                    finally:
                        view.release()
                    result.checker_runs += 1
                else:
                    todo, verdict = per_file.todo(dev)
                    for pool, key in todo:
                        view = img.view(pool)
                        try:
                            verdict = per_file.note(pool, key, checker(view))
                        finally:
                            view.release()
                        result.checker_runs += 1
                        if verdict is not None:
                            break
            finally:
                img.restore(dev)
            verdicts.add(cand, verdict)
    finally:
        marks.close()


def _jobs_of(
    cand: _Cand, per_file: _PerFile | None, pools: int
) -> tuple[list[tuple[list[int], int | None]], str | None]:
    """What to run for an image: ``([(pools, memo key)], known verdict)``."""
    if per_file is None:
        return [(list(range(pools)), None)], None
    todo, verdict = per_file.todo(cand.dev)
    return [([pool], key) for pool, key in todo], verdict


def _run_programs(
    checker: ProgramChecker,
    cands: Iterator[_Cand],
    img: PoolImage,
    replay: Replay,
    per_file: _PerFile | None,
    jobs: int,
    verdicts: _Verdicts,
    tmp: str,
) -> None:
    """``jobs`` threads, each with its own image files, patched per image."""
    result = verdicts.result
    pools = [(p.size, p.source, p.source_size) for p in replay.pools]
    files = ImageFiles(img, pools, _names(replay), jobs, tmp)
    free = list(range(jobs))[::-1]
    window: deque[tuple[_Cand, int, Future[str | None]]] = deque()

    def judge(slot: int, runs: list[tuple[list[int], int | None]], markers: str) -> str | None:
        paths = files.paths(slot)
        for chosen, key in runs:
            verdict = checker.run([paths[i] for i in chosen], markers)
            if per_file is not None:
                assert key is not None
                verdict = per_file.note(chosen[0], key, verdict)
            if verdict is not None:
                return verdict
        return None

    def settle(keep: int) -> None:
        # Oldest first, so failures stay in candidate order whatever the threads do.
        while len(window) > keep:
            cand, slot, fut = window.popleft()
            verdict = fut.result()
            files.returned(slot)
            free.append(slot)
            verdicts.add(cand, verdict)

    ex = ThreadPoolExecutor(max_workers=jobs)
    try:
        for cand in _counted(cands, result):
            runs, known = _jobs_of(cand, per_file, len(pools))
            if known is not None or not runs:
                verdicts.add(cand, known)
                continue
            if not free:
                settle(len(window) - 1)
            slot = free.pop()
            files.write(slot, cand.dev)
            files.lend(slot)
            result.checker_runs += len(runs)
            window.append((cand, slot, ex.submit(judge, slot, runs, cand.markers)))
        settle(0)
    except BaseException:
        # Ctrl-C, SIGTERM or a bug: end the running checkers now rather than wait for them.
        stop_programs()
        ex.shutdown(wait=True, cancel_futures=True)
        resume_programs()
        raise
    else:
        ex.shutdown(wait=True)
    finally:
        files.close()


def _run_workers(
    checker: LibChecker | FunctionChecker,
    cands: Iterator[_Cand],
    img: PoolImage,
    replay: Replay,
    per_file: _PerFile | None,
    jobs: int,
    verdicts: _Verdicts,
    tmp: str,
) -> None:
    """``jobs`` worker processes, each judging image files in its own slots. Images go to a
    worker in batches (one message each way per batch, not per image), two batches per
    worker at a time, so that a worker judges one while this process writes the next."""
    result = verdicts.result
    pools = [(p.size, p.source, p.source_size) for p in replay.pools]
    total = sum(p[0] for p in pools)
    # Every batch sent wakes a worker, and on a busy machine a wake-up can cost this process
    # its turn on the CPU: batches are large (up to 256 images, fewer for large pools, whose
    # slot files each hold a copy of the pages the log wrote), two in flight per worker, and
    # at most 512 image files open at once.
    depth = max(1, min(256 // jobs, (1 << 26) // max(total, 1), 256 // len(pools)))
    slots = 2 * depth * jobs
    files = ImageFiles(img, pools, _names(replay), slots, tmp)
    free = list(range(slots))[::-1]
    workers: list[LibWorker] = []
    # Items of a batch: (cand, slot, pools judged, memo key).
    Item = tuple[_Cand, int, list[int], int | None]
    filling: list[Item] = []
    inflight: list[deque[list[Item]]] = [deque() for _ in range(jobs)]
    order: deque[int] = deque()  # workers, by batch submitted
    # Per image still being judged: runs left, and the verdict so far.
    pending: dict[int, list[Any]] = {}
    turn = 0

    def flush() -> None:
        nonlocal filling, turn
        if not filling:
            return
        w = turn % jobs
        turn += 1
        batch: list[Request] = []
        info: CrashInfo | None = None
        for cand, slot, chosen, _ in filling:
            paths = files.paths(slot)
            point = cand.point
            if info is None or info.point != point.index:
                info = CrashInfo(point.index, point.kind, point.markers)
            batch.append(([paths[i] for i in chosen], cand.markers, info))
        files.lend(*(item[1] for item in filling))
        workers[w].submit(batch)
        inflight[w].append(filling)
        order.append(w)
        filling = []

    def collect() -> None:
        w = order.popleft()
        items = inflight[w].popleft()
        answers = workers[w].collect()
        files.returned(*(item[1] for item in items))
        for (cand, slot, chosen, key), verdict in zip(items, answers, strict=True):
            free.append(slot)
            if per_file is not None and key is not None:
                verdict = per_file.note(chosen[0], key, verdict)
            state = pending[cand.seq]
            state[0] -= 1
            if verdict is not None and state[1] is None:
                state[1] = verdict
            if state[0] == 0:
                del pending[cand.seq]
                verdicts.add(cand, state[1])

    try:
        names = [p.path for p in replay.pools]
        workers.extend(LibWorker(checker, names) for _ in range(jobs))
        for cand in _counted(cands, result):
            runs, known = _jobs_of(cand, per_file, len(pools))
            if known is not None or not runs:
                verdicts.add(cand, known)
                continue
            pending[cand.seq] = [len(runs), None]
            for chosen, key in runs:
                while not free:
                    if not order:
                        flush()
                    collect()
                slot = free.pop()
                files.write(slot, cand.dev)
                filling.append((cand, slot, chosen, key))
                result.checker_runs += 1
                if len(filling) == depth:
                    flush()
        flush()
        while order:
            collect()
    finally:
        for worker in workers:
            worker.close()
        files.close()


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
    ``image_out``: also write the image there (a folder of one file per registered file
    when the log registers several).
    """
    crash = Crash.parse(token)
    trace = replay.record(crash_points)
    point = trace.points[min(crash.point, len(trace.points) - 1)]
    dev = deviations_for(point.state, crash)
    ordinal = sum(1 for p in trace.points[: point.index] if p.kind == "marker")
    history = _MarkerHistory(replay)
    markers = history.text(history.count(point, ordinal))
    img = _image(replay)
    try:
        img.move_to(point.state)
        if image_out is not None:
            _write_image(img, dev, replay, image_out)
        cand = _Cand(0, point, dev, (0, 0, 0), markers, ordinal)
        verdicts = _Verdicts(LogCheckResult("", "", 0, checker.label), None)
        _judge_all(replay, checker, iter([cand]), img, 1, verdicts)
        if verdicts.best is None:
            return None, point
        verdict = verdicts.best[2]
        return _Describer(replay).failure(point, dev, verdict, ordinal, markers), point
    finally:
        img.close()


def _write_image(img: PoolImage, dev: Deviations, replay: Replay, out: str) -> None:
    img.patch(dev)
    try:
        if len(replay.pools) == 1:
            with open(out, "wb") as f:
                f.write(img.buffer(0))
            return
        os.makedirs(out, exist_ok=True)
        for i, name in enumerate(_names(replay)):
            with open(os.path.join(out, name), "wb") as f:
                f.write(img.buffer(i))
    finally:
        img.restore(dev)
