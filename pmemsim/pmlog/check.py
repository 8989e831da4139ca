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
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass, field
from ..errors import ErrorCode, InvalidArgumentError
from ..explore.crash import Crash
from ..explore.jobs import check_jobs
from ..explore.strategy import PointContext, Strategy, strategy_for, strategy_named
from ..explore.trace import CRASH_POINT_MODES, CrashPoint, StopRecording
from ..explore.workdir import keeps_workdir
from .checkers import FunctionChecker, LibChecker, ProgramChecker
from .fastreplay import record_log
from .forked import worth_speculating
from .frames import source_of
from .grammar import Marker, Store
from .images import KEY_MASK, PoolImage
from .judging import Cand, Image, Inline, Judge, PerFile, Programs, Verdicts, _file_names
from .replay import BEGIN, DEEP, END, FENCE, FLUSH, STORE, Replay, Step

if TYPE_CHECKING:
    from .lint import LogFinding
    from .readpaths import LazyJudge
    from .speculate import Speculation
    from .waiting import Watch

__all__ = ["LogCheckResult", "LogFailure", "LostPiece", "check_log", "replay_crash"]

Checker = FunctionChecker | ProgramChecker | LibChecker
Deviations = tuple[tuple[int, int], ...]
#: An image as the explorer keys it: deviations, key, atoms lost, the options it patches in.
Keyed = tuple[Deviations, int, int, tuple[Any, ...]]
#: Most new images a judge is handed at once (a long exact plan is streamed).
_BATCH = 1024
Progress = Callable[[int, int], None]

_KIND_NAME = {STORE: "STORE", FLUSH: "FLUSH", FENCE: "FENCE", DEEP: "DEEP_SYNC"}
_POINT_KIND = {"fence": FENCE, "deep_flush": DEEP, "store": STORE, "flush": FLUSH}
#: PMREORDER_MARKERS longer than this keeps its newest markers (an environment string of
#: more than 128 KiB cannot be passed to a program at all).
MARKERS_LIMIT = 1 << 16


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
        verdict = self.verdict.replace("\n", "\n    ")  # a checker's lines, under its own
        out.append(f"  checker: {verdict}")
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
    #: The simulator's lint findings (stores never flushed or fenced, useless flushes...).
    findings: list[LogFinding] = field(default_factory=list)
    #: Lazy exploration: read paths (each a class of images the checker cannot tell apart)
    #: and what made the check explore by plan instead, if anything did.
    read_paths: int = 0
    fallback: str = ""
    #: What made the verdict heuristic besides the engines (where the run was crashed).
    limits: list[str] = field(default_factory=list)
    #: Of the inconsistent images: those whose checker run ran out of time, and those whose
    #: run crashed (a program killed by a signal, a library's worker dying); ``timeout`` is
    #: the time limit per checker run in seconds (None: none, or not a program or library).
    timed_out: int = 0
    crashed: int = 0
    timeout: float | None = None

    @property
    def verdict(self) -> str:
        return "inconsistent" if self.inconsistent else "consistent"

    @property
    def coverage(self) -> str:
        if self.exact:
            return "exact"
        why = "".join(f"; {limit}" for limit in self.limits)
        return f"heuristic: {self.engine}, {self.images_skipped} image(s) not checked{why}"

    @property
    def images_per_second(self) -> float:
        return self.images_checked / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line of counts (no timing: the same for every run of a seed)."""
        if self.read_paths:
            checked = (
                f"{self.read_paths} read path(s) ({self.images_checked} checker run(s)), "
                f"{self.inconsistent} inconsistent"
            )
        else:
            checked = f"{self.images_checked} distinct checked, {self.inconsistent} inconsistent"
        faults = [
            f"{n} {what}"
            for n, what in ((self.timed_out, "timed out"), (self.crashed, "crashed the checker"))
            if n
        ]
        if faults:
            checked += f" ({', '.join(faults)})"
        return (
            f"{self.verdict.upper()} ({self.coverage}); {self.crash_points} crash point(s), "
            f"{self.images_possible} image(s) possible, {checked}"
        )

    def report(self, lint: bool = True) -> str:
        """The summary, what was left out, the minimal failure and (``lint``) the findings."""
        out = [self.summary()]
        if self.fallback:
            out.append(f"explored by plan, not lazily: {self.fallback}")
        ignored = {k: v for k, v in self.ignored.items() if v}
        if ignored:
            listed = ", ".join(f"{v} {k}" for k, v in ignored.items())
            out.append(f"left out (outside every registered file): {listed}")
        if self.clipped:
            out.append(f"{self.clipped} record(s) cut to the part inside a registered file")
        if self.timed_out:
            limit = f"{self.timeout:g} s" if self.timeout is not None else "its time limit"
            out.append(
                f"{self.timed_out} image(s) inconsistent because the checker ran past {limit} "
                "per run (a checker that loops on a bad image; or a limit too tight for it)"
            )
        if self.crashed:
            out.append(
                f"{self.crashed} image(s) inconsistent because the checker crashed on them "
                "(killed by a signal, or its worker process died)"
            )
        if self.minimal is not None:
            out.append("the minimal inconsistent crash:")
            out.append(self.minimal.describe())
        if lint and self.findings:
            out.append(self.lint_report())
        return "\n".join(out)

    def lint_report(self) -> str:
        return "\n".join(
            [f"lint ({len(self.findings)} finding(s)):", *(f"  {f}" for f in self.findings)]
        )

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
            "limits": list(self.limits),
            "seed": self.seed,
            "operations": self.operations,
            "stores": self.stores,
            "ignored": self.ignored,
            "clipped": self.clipped,
            "crash_points": self.crash_points,
            "images_possible": self.images_possible,
            "images_checked": self.images_checked,
            "images_skipped": self.images_skipped,
            "read_paths": self.read_paths,
            "inconsistent": self.inconsistent,
            "timed_out": self.timed_out,
            "crashed": self.crashed,
            "timeout": self.timeout,
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
            "lint": [f.as_dict() for f in self.findings],
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
        from ..explore.images import crash_for  # a failure's: not every check's start-up

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


class _MarkerHistory:
    """PMREORDER_MARKERS per crash point, from the marker records the replay has issued so
    far (the points arrive while the replay runs)."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self._cache: tuple[int, str] = (0, "")

    def any(self) -> bool:
        """Whether the replay has issued a marker record yet."""
        return bool(self.replay.marker_names)

    def count(self, point: CrashPoint, ordinal: int) -> int:
        """How many marker records the log has before the crash."""
        names, ops = self.replay.marker_names, self.replay.marker_ops
        if point.kind == "end":
            return len(names)
        if point.kind == "marker":
            return ordinal + 1
        n = point.operation
        if point.position == "before":
            # Markers right before the barrier came before the crash. The barrier is the
            # n-th operation (a fence or flush counts before it takes effect), or the next
            # one (a deep flush counts after).
            barrier = n if point.kind == "deep_flush" else n - 1
            return bisect.bisect_right(ops, barrier)
        return bisect.bisect_left(ops, n)

    def text(self, count: int) -> str:
        if self._cache[0] == count:
            return self._cache[1]
        names = self.replay.marker_names
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


class _Explorer:
    """Takes crash points as the replay reaches them and hands every distinct image to a
    judge, or explores them lazily by read path; ``img`` shows the point's state meanwhile.
    Keeps nothing per point."""

    def __init__(
        self,
        replay: Replay,
        img: PoolImage,
        result: LogCheckResult,
        default: Strategy,
        by_marker: Mapping[str, Strategy],
        seed: int,
        max_images: int,
        judge: Judge,
        verdicts: Verdicts,
        lazy: LazyJudge | None = None,
        proven: int = 0,
    ) -> None:
        self.img = img
        #: The judge taking images without a Cand each.
        self.inline = judge if judge.simple else None
        self.result = result
        self.default = default
        self.by_marker = by_marker
        self.seed = seed
        self.max_images = max_images
        #: Crash points an exact plan held to max_images (named in the result's limits).
        self.capped = 0
        self.judge = judge.add
        self.verdicts = verdicts
        self.lazy = lazy
        self.history = _MarkerHistory(replay)
        self.seen: set[int] = set()
        self.failing: set[bytes] = set()
        self.last_state: object = None
        self.last_strategy: Strategy | None = None
        #: The last state's image count, and how many of its images no plan covered yet.
        self.last_count = 0
        self.last_left = 0
        self.ordinal = -1
        self.seq = 0
        #: Crash points before this one had every image judged consistent by a speculative
        #: run (:mod:`pmemsim.pmlog.speculate`): their images are counted, not judged again.
        self.proven = proven

    def point(self, point: CrashPoint) -> None:
        result = self.result
        if point.kind == "marker":
            self.ordinal += 1
        result.crash_points += 1
        strategy = (
            strategy_for(point, self.default, self.by_marker)
            if self.by_marker and point.markers
            else self.default
        )
        state = point.state
        # Consecutive points with nothing in between share their state: same images.
        if state is self.last_state and strategy is self.last_strategy:
            return
        if state is not self.last_state:
            self.last_count = state.image_count()
            result.images_possible += self.last_count
            self.last_left = -1
        self.last_state, self.last_strategy = state, strategy
        history = self.history
        # (history.any(), inline: once per point.)
        markers = (
            history.text(history.count(point, self.ordinal)) if history.replay.marker_names else ""
        )
        if strategy.lazy and self.lazy is not None:
            from .readpaths import NeedsBuffer  # imported with the lazy judge

            try:
                self._lazily(point, markers)
                self._left_out(0)
                return
            except NeedsBuffer as exc:
                self.lazy.close()
                self.lazy = None
                result.fallback = str(exc)
                result.engine = f"{result.engine} (then exhaustive)"
        if strategy.lazy:
            strategy = strategy_named("exhaustive")
        if strategy.name == "exhaustive" and self._every_line(point, markers):
            self._left_out(0)
            return
        if strategy.name == "accumulative" and self._cut_lines(point, markers):
            return
        plan = strategy.plan(state, PointContext(point.index, self.seed, self.max_images))
        if plan.skipped or not strategy.exact:
            result.exact = False
        if plan.skipped is not None:
            self._left_out(plan.skipped)
            self.capped += bool(plan.skipped and strategy.exact)
        if not plan.images:
            if plan.skipped is None:
                self._left_out(self.last_count)
            return
        img = self.img
        img.move_to(state)
        options, key0 = img.options, img.key0

        planned = 0

        def keyed() -> Iterator[Keyed]:
            # PoolImage.key and .lost, inline (this runs once per image).
            nonlocal planned
            for dev in plan.images:
                planned += 1
                hits = options(dev)
                k = key0
                lost = 0
                for hit in hits:
                    k += hit[1]
                    lost += hit[2]
                yield dev, k, lost, hits

        self._judge_new(point, markers, keyed())
        if plan.skipped is None:
            self._left_out(self.last_count - planned)

    def _left_out(self, n: int) -> None:
        """Count ``n`` images of the current state that its point's plan left out (the
        report's "not checked"). For a state reached again under another strategy (a marker
        begins) the smaller count stands: no more images than that were left out by both."""
        if self.last_left >= 0:
            n = min(n, self.last_left)
            self.result.images_skipped -= self.last_left
        self.result.images_skipped += n
        self.last_left = n

    def _judge_new(self, point: CrashPoint, markers: str, keyed: Iterable[Keyed]) -> None:
        """Judge each image (deviations, key, atoms lost, options) whose key no earlier
        image had."""
        if point.index < self.proven:
            self._count_proven(keyed)
            return
        seen = self.seen
        new: list[Image] = []
        checked = 0
        for dev, k, lost, hits in keyed:
            k &= KEY_MASK
            if k in seen:
                continue
            seen.add(k)
            new.append((dev, lost, hits))
            if len(new) == _BATCH:  # (a long plan streams: its images are not all kept)
                checked += self._judge(point, markers, new)
                new = []
        if new:
            inline = self.inline
            if inline is not None:  # (_judge, inline: once per point)
                inline.images(point, markers, self.ordinal, self.seq, new)
                self.seq += len(new)
                checked += len(new)
            else:
                checked += self._judge(point, markers, new)
        self.result.images_checked += checked

    def _judge(self, point: CrashPoint, markers: str, new: list[Image]) -> int:
        """Hand a point's new images to the judge; how many."""
        seq, ordinal = self.seq, self.ordinal
        if self.inline is not None:
            self.inline.images(point, markers, ordinal, seq, new)
        else:
            judge, index = self.judge, point.index
            for i, (dev, lost, _) in enumerate(new):
                judge(Cand(seq + i, point, dev, (len(dev), lost, index), markers, ordinal))
        self.seq = seq + len(new)
        return len(new)

    def _count_proven(self, keyed: Iterable[Keyed]) -> None:
        """The new images of a point the speculative run judged consistent, counted as the
        careful way counts them (one file: one checker run each), not judged again."""
        seen = self.seen
        new = 0
        for _, k, _, _ in keyed:
            k &= KEY_MASK
            if k not in seen:
                seen.add(k)
                new += 1
        self.seq += new
        self.result.images_checked += new
        self.verdicts.runs += new
        self.verdicts.passed(new)

    def _every_line(self, point: CrashPoint, markers: str) -> bool:
        """The exhaustive plan of a log machine's state (every combination of its lines'
        options, in the strategy's order), keyed and judged in one loop; False when the
        state is not one or has more than ``max_images`` images (the plan falls back)."""
        lines = getattr(point.state, "in_flight", None)
        # (The product of the lines' option counts: the state's image count, taken by
        # point() for this state.)
        if lines is None or self.last_count > self.max_images:
            return False
        img = self.img
        img.move_to(point.state)
        option = img._option
        # Every combination of the lines' options as (deviations, key, atoms lost), in
        # itertools.product's order (the last line's option varies fastest), the first
        # option of each (all persisted) being no deviation.
        key0 = img.key0
        combos: list[Keyed] = [((), key0, 0, ())]
        if len(lines) == 2 and lines[0].n == 2 and lines[1].n == 2:
            # (An epoch of two stores, each changing its line: its four images written out,
            # without the product; once per point. A log machine's option straight from its
            # line, once not in the cache: _option would look there again.)
            cached = img._options.get
            line_option = option if img._lines is None else img._line_option
            ha = cached((0, 1)) or line_option(0, 1)
            hb = cached((1, 1)) or line_option(1, 1)
            ka = key0 + ha[1]
            combos.append((((1, 1),), key0 + hb[1], hb[2], (hb,)))
            combos.append((((0, 1),), ka, ha[2], (ha,)))
            combos.append((((0, 1), (1, 1)), ka + hb[1], ha[2] + hb[2], (ha, hb)))
        else:
            for i, line in enumerate(lines):
                c = line.n
                if c > 1 and len(combos) == 1:
                    # The first line with a choice: its options follow the all-persisted image,
                    # no product to take (an epoch of one store has this line only).
                    for o in range(1, c):
                        hit = option(i, o)
                        combos.append((((i, o),), key0 + hit[1], hit[2], (hit,)))
                elif c > 1:
                    choices: list[Keyed] = [((), 0, 0, ())]
                    for o in range(1, c):
                        hit = option(i, o)
                        choices.append((((i, o),), hit[1], hit[2], (hit,)))
                    combos = [
                        (d + e, k + ek, n + en, h + eh)
                        for d, k, n, h in combos
                        for e, ek, en, eh in choices
                    ]
        self._judge_new(point, markers, combos)
        return True

    def _cut_lines(self, point: CrashPoint, markers: str) -> bool:
        """The accumulative plan of a log machine's state (the strategy's own images in its
        order: every program-order prefix of the stores in flight, the longest first, each
        once), keyed and judged in one loop; False when the state is not one."""
        lines = getattr(point.state, "in_flight", None)
        if lines is None:
            return False
        self.result.exact = False
        img = self.img
        img.move_to(point.state)
        # (A log machine's option straight from its line: _option would look in the cache
        # again, which _single_cuts does first; once per deviating line of each point.)
        option = img._option if img._lines is None else img._line_option
        keyed = _single_cuts(lines, img.key0, img._options.get, option)
        if keyed is None:
            keyed = []
            for dev in _cuts(lines):
                hits = img.options(dev)
                key, lost = img.key0, 0
                for hit in hits:
                    key += hit[1]
                    lost += hit[2]
                keyed.append((dev, key, lost, hits))
        self._judge_new(point, markers, keyed)
        self._left_out(self.last_count - len(keyed))
        return True

    def _lazily(self, point: CrashPoint, markers: str) -> None:
        assert self.lazy is not None
        before = self.lazy.runs
        paths = self.lazy.explore(point, markers)  # all or nothing: NeedsBuffer
        result, img = self.result, self.img
        result.images_checked += self.lazy.runs - before
        result.read_paths += len(paths)
        for dev, verdict, leaf, message in paths:
            if not verdict.failed:
                continue
            if leaf not in self.failing:  # a read path reached again at a later point
                self.failing.add(leaf)
                result.inconsistent += 1
            else:
                message = str(message)  # a timeout (a Fault) is counted once, as above
            size = (len(dev), img.lost(dev), point.index)
            self.verdicts.candidate(
                Cand(self.seq, point, dev, size, markers, self.ordinal), message
            )
            self.seq += 1


def _cuts(lines: list[Any]) -> Iterable[Deviations]:
    """The deviations of every program-order prefix of the stores in flight on ``lines``
    (a log machine's lines in flight), the longest first, each once."""
    # The stores in flight by number: a cut keeps, in each line, those numbered below it.
    events = sorted([(a[0], i) for i, line in enumerate(lines) for a in line.atoms])
    ranks = [line.rank for line in lines]
    kept = [0] * len(lines)
    images = []
    k, n = 0, len(events)
    while True:
        images.append(tuple([(i, r[kept[i]]) for i, r in enumerate(ranks) if r[kept[i]]]))
        if k == n:
            break
        seq = events[k][0]
        while k < n and events[k][0] == seq:
            kept[events[k][1]] += 1
            k += 1
    return dict.fromkeys(images[::-1])


def _single_cuts(
    lines: list[Any], key0: int, cached: Callable[[Any], Any], option: Callable[..., Any]
) -> list[Keyed] | None:
    """:func:`_cuts` keyed, when each line has one store in flight (narrow epochs: most
    states; else None): the cuts, longest first, drop the lines' stores latest first, and
    each keeps the key, losses and options of the cut before it plus those of the lines it
    drops. A line whose store left its content as it was (floor 0) never deviates."""
    if len(lines) == 1:  # (an epoch of one store: its two cuts, without the general walk)
        line = lines[0]
        if len(line.atoms) != 1:
            return None
        floor = line.floor
        if not floor:
            return [((), key0, 0, ())]
        d = (0, floor)
        hit = cached(d) or option(0, floor)
        return [((), key0, 0, ()), ((d,), key0 + hit[1], hit[2], (hit,))]
    if len(lines) == 2:  # (an epoch of two stores: its cuts, without the general walk)
        a, b = lines
        if len(a.atoms) != 1 or len(b.atoms) != 1:
            return None
        fa, fb = a.floor, b.floor
        if not fa or not fb:  # one line deviates at most: its store is the one to drop
            if fa:
                d, i, floor = (0, fa), 0, fa
            elif fb:
                d, i, floor = (1, fb), 1, fb
            else:
                return [((), key0, 0, ())]
            hit = cached(d) or option(i, floor)
            return [((), key0, 0, ()), ((d,), key0 + hit[1], hit[2], (hit,))]
        da, db = (0, fa), (1, fb)
        ha = cached(da) or option(0, fa)
        hb = cached(db) or option(1, fb)
        sa, sb = a.atoms[0][0], b.atoms[0][0]
        both = ((da, db), key0 + ha[1] + hb[1], ha[2] + hb[2], (ha, hb))
        if sa == sb:  # one record's stores: cut together
            return [((), key0, 0, ()), both]
        # The later store is dropped first.
        one = (
            ((db,), key0 + hb[1], hb[2], (hb,)) if sa < sb else ((da,), key0 + ha[1], ha[2], (ha,))
        )
        return [((), key0, 0, ()), one, both]
    events = []
    for i, line in enumerate(lines):
        if len(line.atoms) != 1:
            return None
        if line.floor:
            events.append((line.atoms[0][0], i))
    events.sort()
    keyed: list[Keyed] = [((), key0, 0, ())]
    # The deviations so far, by line (as deviations are ordered), and their options.
    devs: list[tuple[int, int]] = []
    hits: list[Any] = []
    key, lost, k = key0, 0, len(events)
    while k:
        seq = events[k - 1][0]
        while k and events[k - 1][0] == seq:  # (one record's stores: cut together)
            k -= 1
            i = events[k][1]
            d = (i, lines[i].floor)
            hit = cached(d) or option(*d)
            at = bisect.bisect(devs, d)
            devs.insert(at, d)
            hits.insert(at, hit)
            key += hit[1]
            lost += hit[2]
        keyed.append((tuple(devs), key, lost, tuple(hits)))
    return keyed


@keeps_workdir
def check_log(
    replay: Replay,
    checker: Checker,
    *,
    engine: str | Strategy | None = None,
    markers: Mapping[str, str | Strategy] | None = None,
    seed: int = 0,
    jobs: int = 1,
    crash_points: str = "barriers",
    max_images: int = 4096,
    progress: Progress | None = None,
    name: str = "",
    lint: bool = True,
    check: Any = None,
    simulator: bool = False,
    executor: Any = None,
    notice: Callable[[str, str], None] | None = None,
    interrupted: Callable[[LogCheckResult], None] | None = None,
    waiting: Callable[[str, float], None] | None = None,
    twin: bool = True,
    _speculation: Speculation | None = None,
) -> LogCheckResult:
    """Check every distinct crash image the log allows (see the module docstring); with
    ``lint``, also report the simulator's lint findings (:mod:`pmemsim.pmlog.lint`).

    ``engine`` None: ``lazy`` (exact, by read path: :mod:`pmemsim.pmlog.readpaths`) for a
    Python checker judging in this process, ``exhaustive`` otherwise. ``check``: the
    CrashCheck whose recovery the checker is (``recovery_checker``): lazy exploration then
    runs that recovery on the simulator. ``simulator``: replay the log on the whole
    simulator (:meth:`Replay.record`, the reference) instead of the lean machine of
    :mod:`pmemsim.pmlog.fastreplay` (the same crash points, images and findings, faster).
    ``executor``: a :class:`pmemsim.distributed.Dask` judging the images on its workers
    (a worker replays the log once and goes on from batch to batch; not with lazy
    exploration).
    ``notice(token, verdict)``: told at once of each image whose checker run ran out of
    time or crashed (:class:`pmemsim.pmlog.checkers.Fault`), so a check slowed by a
    looping checker is not silent; the result counts them (``timed_out``, ``crashed``).
    ``interrupted(result)``: told what was judged so far when Ctrl-C or SIGTERM stops the
    check (a KeyboardInterrupt, raised on after it): not every image was judged.
    ``waiting(token, seconds)``: told while the check waits long on one checker run
    (:mod:`pmemsim.pmlog.waiting`: after 10 s, then at doubling intervals), of the image's
    crash token (``point N`` for a checker in this process) and the seconds so far.
    ``twin``: a long log's durability self-check may run in a forked twin on a free CPU
    (:mod:`pmemsim.pmlog.twin`, at a lower priority); False keeps it in this process (the
    CLI's ``--jobs`` given).
    A library checker on a long log is first tried in this process's image, in a fork
    (:mod:`pmemsim.pmlog.speculate`; ``_speculation`` is what that run has of its own).
    """
    inline = isinstance(checker, FunctionChecker) and jobs == 1 and executor is None
    if engine is None:
        engine = "lazy" if inline else "exhaustive"
    check_jobs(jobs)
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
                "checker reads bytes (use lazy, which follows what a Python checker reads)",
            )
        if s.lazy and not inline:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                "lazy exploration follows the reads of a Python checker run in this process "
                "(--checker-py or --recovery, --jobs 1); use exhaustive for this checker",
            )
    started = time.perf_counter()
    proven = 0  # the crash points before it: every image judged consistent by speculation
    if (
        _speculation is None
        and executor is None
        and not simulator
        and worth_speculating(replay, checker, jobs)
    ):
        from .slots import image_folder
        from .speculate import attempt

        with image_folder([replay.pools[0].size]) as tmp:
            got, proven = attempt(
                os.path.join(tmp, _file_names([replay.pools[0].path])[0]),
                lambda where: check_log(
                    replay,
                    checker,
                    engine=engine,
                    markers=markers,
                    seed=seed,
                    crash_points=crash_points,
                    max_images=max_images,
                    progress=progress,
                    name=name,
                    lint=lint,
                    twin=twin,
                    _speculation=where,
                ),
            )
        if got is not None:
            got.seconds = time.perf_counter() - started
            return got
    result = LogCheckResult(
        name, str(engine) if isinstance(engine, str) else default.name, seed, checker.label
    )
    if isinstance(engine, str) and engine != default.name:
        result.engine = f"{engine} (= {default.name})"
    told = None
    if notice is not None:
        tell = notice

        def told(cand: Cand, verdict: str) -> None:
            from ..explore.images import crash_for

            tell(str(crash_for(cand.point, cand.dev)), verdict)

    waited = None
    if waiting is not None:
        wait = waiting

        def waited(cand: Cand, seconds: float) -> None:
            from ..explore.images import crash_for

            wait(str(crash_for(cand.point, cand.dev)), seconds)

    verdicts = Verdicts(progress, told, waited)
    img = _image(replay, None if _speculation is None else _speculation.file)
    lazy = None
    watch: Watch | None = None
    try:
        with _judging(
            replay, checker, img, jobs, verdicts, executor, crash_points, _speculation
        ) as judge:
            if inline and any(s.lazy for s in (default, *by_marker.values())):
                from .readpaths import LazyJudge

                assert isinstance(checker, FunctionChecker)
                lazy = LazyJudge(checker, img, [p.path for p in replay.pools], check)
            if waiting is not None and inline:
                from .waiting import watch_in_process

                watch = watch_in_process(judge, lazy, waiting)
            explorer = _Explorer(
                replay,
                img,
                result,
                default,
                by_marker,
                seed,
                max_images,
                judge,
                verdicts,
                lazy,
                proven,
            )
            on_point = explorer.point
            if watch is not None:
                # Started at the first crash point: the replay forks its twin before.
                watching, explore = watch.start, on_point

                def on_point(point: CrashPoint) -> None:
                    watching()
                    explore(point)

            if simulator:
                trace: Any = replay.record(crash_points, on_point=on_point, lint=lint)
            else:
                trace = record_log(replay, img, crash_points, on_point, lint=lint, twin=twin)
            judge.finish(img.close)
    except KeyboardInterrupt:
        if interrupted is not None:
            _settle(result, replay, verdicts, checker, check)
            result.seconds = time.perf_counter() - started
            interrupted(result)
        raise
    finally:
        if watch is not None:
            watch.close()
        if lazy is not None:
            lazy.close()
        img.close()
    _settle(result, replay, verdicts, checker, check)
    if explorer.capped:
        # An exact engine's verdict turned heuristic: say why, and what lifts it.
        result.limits.append(
            f"{explorer.capped} crash point(s) with more than {max_images} images (--max-images)"
        )
    if crash_points == "markers":
        # Marker boundaries are some of the barriers: the states between them go unseen.
        result.exact = False
        result.limits.append("crash points at marker boundaries only")
    if trace.findings:
        from .lint import log_findings

        result.findings = log_findings(replay, trace.findings)
    if progress is not None:
        progress(verdicts.judged, result.images_checked)
    result.seconds = time.perf_counter() - started
    return result


def _settle(
    result: LogCheckResult, replay: Replay, verdicts: Verdicts, checker: Checker, check: Any
) -> None:
    """The result's counts and minimal failure from the verdicts (so far)."""
    _fill(result, replay)
    result.inconsistent += verdicts.inconsistent
    result.timed_out = verdicts.faults["timeout"]
    result.crashed = verdicts.faults["crash"]
    # A recovery's limit is its check's run_timeout.
    result.timeout = (
        getattr(checker, "timeout", None) if check is None else getattr(check, "run_timeout", None)
    )
    result.checker_runs = verdicts.runs
    if verdicts.best is not None:
        _, cand, verdict = verdicts.best
        result.minimal = _Describer(replay).failure(
            cand.point, cand.dev, verdict, cand.marker_ordinal, cand.markers
        )


def _fill(result: LogCheckResult, replay: Replay) -> None:
    result.operations = replay.operations
    result.stores = replay.stores
    result.ignored = dict(replay.ignored)
    result.clipped = replay.clipped
    result.file = replay.pool.resolved
    result.pool_size = replay.pool.size
    result.files = [{"path": p.path, "size": p.size, "base_image": p.source} for p in replay.pools]


def _image(replay: Replay, file: str | None = None) -> PoolImage:
    pools = [(p.size, p.source, p.source_size) for p in replay.pools]
    return PoolImage(pools, None if file is None else [file])


@contextlib.contextmanager
def _judging(
    replay: Replay,
    checker: Checker,
    img: PoolImage,
    jobs: int,
    verdicts: Verdicts,
    executor: Any = None,
    crash_points: str = "barriers",
    speculation: Speculation | None = None,
) -> Iterator[Judge]:
    """The judge for ``checker``, with its image files' folder; released on the way out.
    ``speculation``: a library checker called here (its image file is ``img``'s buffer)."""
    names = [p.path for p in replay.pools]
    per_file = None
    if len(names) > 1 and not checker.all_files:
        per_file = PerFile(img, names)
    common = (img, names, per_file, verdicts)
    pools = [(p.size, p.source, p.source_size) for p in replay.pools]
    with contextlib.ExitStack() as stack:
        judge: Judge
        if executor is not None:
            judge = executor.log_judge(replay, checker, crash_points, *common)
        elif speculation is not None:
            from .speculate import Speculative

            assert isinstance(checker, LibChecker)
            judge = Speculative(checker, speculation, *common)
        elif isinstance(checker, FunctionChecker) and jobs == 1:
            judge = Inline(checker, *common)
        elif isinstance(checker, ProgramChecker):
            # Image files: the pools' sizes (sparse where untouched) per slot. (A worker
            # has a folder of its own: Workers.)
            from .slots import image_folder

            tmp = stack.enter_context(image_folder([p.size for p in replay.pools], jobs))
            judge = Programs(checker, pools, jobs, tmp, *common)
        else:
            from .workers import Workers

            judge = Workers(checker, pools, jobs, *common)
        stack.callback(judge.close)
        yield judge


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
    from ..explore.images import deviations_for

    crash = Crash.parse(token)
    found: list[tuple[CrashPoint, int]] = []
    ordinal = -1

    def keep(point: CrashPoint) -> None:
        nonlocal ordinal
        if point.kind == "marker":
            ordinal += 1
        found[:] = [(point, ordinal)]  # the last one, if the token's is past the end
        if point.index >= crash.point:
            raise StopRecording

    img = _image(replay)
    verdicts = Verdicts()
    try:
        # The judge is made first, as for a check: a library's worker learns the image
        # from the buffers' moves, and one made after the replay would judge the base image.
        with _judging(replay, checker, img, 1, verdicts) as judge:
            # The replay stops at the token's crash point: the buffers show its state.
            record_log(replay, img, crash_points, keep)
            ((point, ordinal),) = found
            dev = deviations_for(point.state, crash)
            history = _MarkerHistory(replay)
            markers = history.text(history.count(point, ordinal))
            img.move_to(point.state)
            if image_out is not None:
                _write_image(img, dev, replay, image_out)
            judge.add(Cand(0, point, dev, (0, 0, 0), markers, ordinal))
            judge.finish()
    finally:
        img.close()
    if verdicts.best is None:
        return None, point
    verdict = verdicts.best[2]
    return _Describer(replay).failure(point, dev, verdict, ordinal, markers), point


def _write_image(img: PoolImage, dev: Deviations, replay: Replay, out: str) -> None:
    from .slots import write_image

    pools = [(p.size, p.source, p.source_size) for p in replay.pools]
    paths = [out]
    try:
        if len(replay.pools) > 1:
            os.makedirs(out, exist_ok=True)
            paths = [os.path.join(out, n) for n in _file_names([p.path for p in replay.pools])]
        write_image(img, dev, pools, paths)
    except OSError as exc:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"cannot write the image to {exc.filename or out}: {exc.strerror}"
        ) from None
