"""A store log replayed on a lean model of the machine: check-log's crash points, fast.

:meth:`Replay.record` runs a log through the whole simulator (the set layer, the backend's
maps and locks, a medium with pages and provenance, a crash state with page maps per crash
point). A log needs far less: its operations are write-back stores of at most 8 bytes,
flushes, fences and deep syncs on CACHE_LINE pools, so here they drive a model of exactly
that, kept per cache line:

* the content loads see lives in the :class:`PoolImage` buffers themselves (a store writes
  its bytes there at once), so at a crash point the buffers already show the all-persisted
  image and nothing is copied or moved;
* per line with stores in flight: its durable content, and its stores in flight as the
  simulator's atoms (8-byte-aligned pieces, in program order);
* per pool: its pending store records and flushes exactly as the simulator keeps them
  (records of consecutive stores of one source line merged, program-order numbers), so that
  lint findings, and the numbers strategies order stores by, come out the same.

A crash point gets a :class:`LogState`: a :class:`CrashState` holding its lines in flight
(:class:`LineInFlight`: durable content, atoms, and the distinct contents a crash can leave,
which check-log's exploration reads directly); its ``units`` (the simulator's own ``Unit``
objects, so their options, contents and losses are the simulator's code) are built when
asked for, and its page-level questions read the buffers while it is the current point.
The simulator stays the reference: tests/test_pmlog_fast.py replays random logs both
ways and compares crash points, states, images, verdicts, minimal crashes and lint.

The durability self-check runs here too, by default: the independent model of
:mod:`pmemsim.pmlog.selfcheck` follows the same operations and compares, at every crash
point, every changed or in-flight line's durable content, stores in flight and all-persisted
content with the rules'. A disagreement is a :class:`DurabilityViolation` (a bug in pmemsim).
"""

from __future__ import annotations

import gc
import sys
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._records import NamedTuple
from ..snapshot import Snapshot
from .forked import worth_a_twin
from .frames import _call, source_line, trampoline
from .grammar import RegisterFile, Store, _frames, _parse_record
from .replay import BEGIN, DEEP, FENCE, FLUSH, STORE
from .selfcheck import LineModel

if TYPE_CHECKING:
    from pmemsim_backends.sim import Finding
    from pmemsim_backends.sim.lint import LintLog
    from pmemsim_backends.sim.pagemap import PageMap

    from ..explore.trace import CrashPoint
    from .images import PoolImage
    from .replay import Replay
    from .twin import Twin

__all__ = ["LineInFlight", "LogMedium", "LogTrace", "log_state_type", "record_log"]

LINE = 64
_ZERO_LINE = bytes(LINE)
PAGE = 4096


class LogTrace(NamedTuple):
    """What a recording of a log found besides its crash points."""

    findings: list[Finding]
    point_count: int
    stopped: bool


class _Stop(Exception):
    """Ends the replay at a crash point (the callback raised StopRecording)."""


def _workload_site() -> None:
    """Stands for the replay loop as a provenance (a frame of pmemsim's own, which reports
    leave out, as they leave out the simulator's replay loop)."""


#: The provenance of a store without a C source line, and of every flush.
_SITE = (_workload_site.__code__, 0)
_FLUSH_PROV = (_SITE,)


def _call_offset() -> int:
    """The instruction offset of the call inside a trampoline (frames.trampoline), which is
    where the simulator's provenance of a trampolined store points."""
    got: list[int] = []

    def probe(a: object, b: object) -> None:
        got.append(sys._getframe(1).f_lasti)

    _call(probe, None, None)
    return got[0]


_TRAMPOLINE_LASTI = _call_offset()


class LogMedium:
    """One registered file as the crash states name it (what the simulator's medium is to
    a CrashState: label, size, persistence unit, initial content)."""

    __slots__ = ("index", "label", "loader", "size", "source_ident", "unit")

    def __init__(
        self, index: int, label: str, size: int, loader: Callable[[int], bytes] | None
    ) -> None:
        self.index = index
        self.label = label
        self.size = size
        self.unit = LINE
        self.loader = loader
        self.source_ident = 0

    def initial_page(self, p: int) -> bytes:
        raw = self.loader(p) if self.loader is not None else b""
        return raw + bytes(PAGE - len(raw)) if len(raw) < PAGE else bytes(raw)

    def __repr__(self) -> str:
        return f"<LogMedium {self.label}>"


#: A line with one atom in flight: what its options keep (the atom, or nothing when the atom
#: changes the line), and the option of each prefix (``rank``) when the atom changes nothing.
_ALL = (1,)
_ONE_OR_NONE = (1, 0)
_SAME = (0, 0)


class LineInFlight:
    """One line with stores in flight at a crash point: its durable content, its atoms in
    program order (``(seq, offset, data, frame)``, as the simulator's ``Atom``), how many of
    them a fence would make durable now, and (computed on first use) the distinct contents a
    crash can leave, as the simulator's prefix rule orders them: any prefix of the atoms may
    have persisted; contents are deduplicated (each kept with its longest prefix), longest
    prefix first."""

    __slots__ = (
        "atoms",
        "base",
        "base_key",
        "contents",
        "floor",
        "flushed",
        "keys",
        "kept",
        "n",
        "offset",
        "pool",
        "rank",
        "sig",
    )

    #: Per option: its content, how many atoms it keeps, its key (see PoolImage); per
    #: prefix length, the option of its content; the option of ``base``; how many options.
    contents: list[bytes]
    kept: Sequence[int]
    keys: list[int | None]
    rank: Sequence[int]
    floor: int
    n: int
    sig: tuple[tuple[int, bytes], ...] | None

    def __init__(
        self,
        pool: int,
        offset: int,
        base: bytes,
        atoms: tuple[Any, ...],
        flushed: int,
        base_key: int | None = None,
    ) -> None:
        self.pool = pool
        self.offset = offset
        self.base = base
        self.atoms = atoms
        self.flushed = flushed
        #: The image key of ``base`` when known already (see PoolImage), else None.
        self.base_key = base_key
        if len(atoms) == 1:  # the common case (kept and rank: shared, never written)
            _, at, data, _ = atoms[0]
            self.sig = ((at, data),)
            o = at - offset
            one = base[:o] + data + base[o + len(data) :]
            if one == base:
                self.contents, self.keys, self.kept, self.rank = [one], [base_key], _ALL, _SAME
                self.floor, self.n = 0, 1
            else:
                self.contents, self.keys = [one, base], [None, base_key]
                self.kept, self.rank = _ONE_OR_NONE, _ONE_OR_NONE
                self.floor, self.n = 1, 2
        else:
            self.sig = None
            self._prefixes(offset, base, atoms, base_key)

    def _prefixes(self, offset: int, base: bytes, atoms: tuple[Any, ...], key: int | None) -> None:
        """The options of several atoms."""
        buf = bytearray(base)
        prefix = [base]
        last: dict[bytes, int] = {base: 0}
        for k, (_, at, data, _) in enumerate(atoms, 1):
            o = at - offset
            buf[o : o + len(data)] = data
            content = bytes(buf)
            prefix.append(content)
            last[content] = k  # a later prefix with equal content wins: it loses fewer
        ks = sorted(set(last.values()), reverse=True)
        where = {k: i for i, k in enumerate(ks)}
        self.contents = [prefix[k] for k in ks]
        self.kept = ks
        self.rank = rank = [where[last[c]] for c in prefix]
        self.floor = rank[0]
        self.keys = [None] * len(ks)
        self.keys[self.floor] = key
        self.n = len(ks)

    def signature(self) -> tuple[tuple[int, bytes], ...]:
        """The atoms as ``(offset, data)`` (what the self-check compares)."""
        if self.sig is None:
            self.sig = tuple((a[1], a[2]) for a in self.atoms)
        return self.sig

    def options(self) -> int:
        """How many distinct contents the line can have after a crash."""
        return self.n


class _Pool:
    """What the machine keeps of one pool."""

    __slots__ = (
        "base_keys",
        "bases",
        "blank",
        "buf",
        "flush_seq",
        "flushes",
        "index",
        "label",
        "lines",
        "lint_flag",
        "lint_mark",
        "medium",
        "overlaps",
        "records",
        "runs",
        "size",
        "stale",
        "tail",
        "tail_bounds",
        "tail_seq",
        "written",
    )

    def __init__(self, index: int, medium: LogMedium, buf: Any) -> None:
        self.index = index
        self.medium = medium
        self.label = medium.label
        self.size = medium.size
        self.buf = buf
        #: No initial content: a line of a page no store wrote is zeros.
        self.blank = medium.loader is None
        #: Pending store records as the simulator keeps them:
        #: ``(seq, offset, data, False, code, lasti)``, in program order.
        self.records: list[tuple[Any, ...]] = []
        self.tail: tuple[Any, ...] | None = None
        self.tail_seq = -2
        #: The boundaries of the stores of each record that is a run, as the simulator's
        #: Medium.runs keeps them; the tail's, if it is a run.
        self.runs: dict[int, array[int]] = {}
        self.tail_bounds: array[int] | None = None
        #: Line offset -> its atoms in flight, in program order, and its durable content.
        self.lines: dict[int, list[Any]] = {}
        self.bases: dict[int, bytes] = {}
        #: Line offset -> the image key of its durable content, when known (see store).
        self.base_keys: dict[int, int | None] = {}
        #: Flushes awaiting a fence: ``(seq, start, end, provenance)``, line-aligned.
        self.flushes: list[tuple[int, int, int, Any]] = []
        #: Line offset (with stores in flight) -> the number of the last pending flush of it.
        self.flush_seq: dict[int, int] = {}
        #: This pool's lint epoch may have findings (see _Machine.flush and store), and the
        #: lines whose stores in flight overlap (lint reports them at every epoch until
        #: they are durable).
        self.lint_flag = False
        self.overlaps: set[int] = set()
        #: Where the last epoch lint stopped, as the simulator notes it (see _resolve_all).
        self.lint_mark = (0, 0, 0)
        #: Every page a store ever wrote (what may differ from the initial content), and
        #: those written since the last frozen map of them (_Machine.frozen_visible).
        self.written: set[int] = set()
        self.stale: set[int] = set()

    def line_bytes(self, line: int) -> bytes:
        """The buffer's content of a line (an mmap's slice: bytes; a pool is whole pages).
        Zeros in a page no store wrote of a pool with no initial content are not read: the
        first read of a page of the buffer maps the zero page, and the store's write then
        faults a second time (1.7 us more a page, and a log spread over a pool touches
        every page)."""
        if self.blank and line >> 12 not in self.written:
            return _ZERO_LINE
        got: bytes = self.buf[line : line + LINE]
        return got


def _covered(atoms: Any, seq: int) -> int:
    """How many of a line's atoms (in program order) come before ``seq``, when the last one
    does not."""
    k = 0
    while atoms[k][0] < seq:
        k += 1
    return k


def _overlap(atoms: Any) -> bool:
    """Whether two of a line's atoms in flight write the same bytes."""
    for i, a in enumerate(atoms):
        for b in atoms[i + 1 :]:
            if a[1] < b[1] + len(b[2]) and b[1] < a[1] + len(a[2]):
                return True
    return False


class _Shim:
    """A pool's records as the simulator's Medium methods read them (``pending``,
    ``flush_unit``, ``label``): lint's epoch replay runs the simulator's own code."""

    __slots__ = ("flush_unit", "label", "lint_mark", "pending", "runs")

    def __init__(self, pool: _Pool) -> None:
        self.pending = pool.records
        self.flush_unit = LINE
        self.label = pool.label
        self.lint_mark = pool.lint_mark
        self.runs = pool.runs


class _Pages(Mapping[int, bytes]):
    """The durable content of a medium's pages at the current crash point."""

    def __init__(self, machine: _Machine, pool: int, stamp: int) -> None:
        self.machine = machine
        self.pool = pool
        self.stamp = stamp

    def get(self, p: int, default: Any = None) -> bytes:
        return self.machine.durable_page(self.pool, p, self.stamp)

    def __getitem__(self, p: int) -> bytes:
        return self.get(p)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.machine.written[self.pool]))

    def __len__(self) -> int:
        return len(self.machine.written[self.pool])


def _make_state_class() -> type:
    from pmemsim_backends.sim.images import Atom, CrashMode, CrashState, Unit

    class LogState(CrashState):  # type: ignore[misc]
        """A crash state of a replayed log (see the module docstring). Unit-level questions
        (units, options, contents, images' deviations) hold for good; page-level ones read
        the buffers and hold only while the state is the machine's current one."""

        # What every state has, and what is built on first use, as class attributes: a
        # state is made at every crash point, and most are never asked (CrashState's own
        # caches, _persisted and _persisted_maps, serve methods overridden here).
        mode = CrashMode.POWER_FAILURE
        _address_of = None
        usc: Mapping[bytes, int] = MappingProxyType({})  # (no device)
        _units: list[Any] | None = None
        _snapshots: list[Snapshot] | None = None
        _pages: list[dict[int, list[int]]] | None = None

        def __init__(self, machine: _Machine, lines: list[LineInFlight]) -> None:
            self.barrier = machine.barriers
            self.media = machine.media
            #: The lines in flight, ordered by pool and offset (unit i is line i).
            self.in_flight = lines
            self._machine = machine
            self._stamp = machine.stamp

        @property
        def units(self) -> list[Any]:
            if self._units is None:
                units = []
                for line in self.in_flight:
                    u = Unit(line.pool, line.offset, LINE)
                    u.wb = [Atom(seq, at, data, False, fr) for seq, at, data, fr in line.atoms]
                    u.flushed = line.flushed
                    units.append(u)
                self._units = units
            return self._units

        @property
        def _bases(self) -> list[bytes]:
            return [line.base for line in self.in_flight]

        @property
        def _unit_pages(self) -> list[dict[int, list[int]]]:
            if self._pages is None:
                pages: list[dict[int, list[int]]] = [{} for _ in self.media]
                for i, line in enumerate(self.in_flight):
                    pages[line.pool].setdefault(line.offset >> 12, []).append(i)
                self._pages = pages
            return self._pages

        def image_count(self) -> int:
            n = 1
            for line in self.in_flight:  # (a loop: no comprehension's frame, once per point)
                n *= line.n
            return n

        def base(self, unit: int) -> bytes:
            return self.in_flight[unit].base

        @property
        def snapshots(self) -> list[Snapshot]:
            if self._snapshots is None:
                self._snapshots = [
                    Snapshot(m.label, m.size, _Pages(self._machine, i, self._stamp), m.loader)
                    for i, m in enumerate(self.media)
                ]
            return self._snapshots

        def persisted_page(self, page: int, medium: int = 0) -> bytes:
            return self._machine.visible_page(medium, page, self._stamp)

        def changed_pages(self, since: Any, medium: int = 0) -> list[int]:
            """Every page a store ever wrote (a superset whatever ``since`` is)."""
            self._machine._current(self._stamp)
            return sorted(self._machine.written[medium])

        def _persisted_map(self, medium: int) -> PageMap[bytes | bytearray]:
            return self._machine.frozen_visible(medium, self._stamp)

    return LogState


_STATE: type | None = None


def log_state_type() -> type:
    """The class of a log's crash states (a CrashState subclass; the simulator's package is
    imported only when a log is replayed)."""
    global _STATE
    if _STATE is None:
        _STATE = _make_state_class()
    return _STATE


#: CrashPoint's fields, in order, as _point_maker sets them.
_POINT_FIELDS = (
    "index",
    "kind",
    "position",
    "operation",
    "markers",
    "provenance",
    "state",
    "unsafe_state",
)


def _point_maker(cls: type[CrashPoint]) -> Callable[..., CrashPoint]:
    """A maker of ``cls(index, kind, position, operation, markers, provenance, state)``
    that sets its slots directly: a frozen dataclass's own __init__ sets each field through
    object.__setattr__, twice the cost of this, once per crash point (2% of a one-store
    epoch's). ``cls`` itself when its fields are not those this sets (or it has more to
    do when made), so that a change to CrashPoint cannot leave a field unset here."""
    import types

    # (pmemsim's own dataclass keeps its fields here: dataclasses.fields would import the
    # standard module and build them again, several milliseconds of start-up.)
    fields: Any = getattr(cls, "_pmemsim_fields", None)
    if (
        fields is None
        or tuple(f.name for f in fields) != _POINT_FIELDS
        or fields[-1].default is not None  # (unsafe_state: None unless given)
        or hasattr(cls, "__post_init__")
        or not all(
            isinstance(getattr(cls, n, None), types.MemberDescriptorType) for n in _POINT_FIELDS
        )
    ):
        return cls
    si, sk, sp, so, sm, sv, ss, su = (getattr(cls, name).__set__ for name in _POINT_FIELDS)
    new = object.__new__

    def make(
        index: int,
        kind: str,
        position: str,
        operation: int,
        markers: tuple[str, ...],
        provenance: Any,
        state: Any,
    ) -> CrashPoint:
        point = new(cls)
        si(point, index)
        sk(point, kind)
        sp(point, position)
        so(point, operation)
        sm(point, markers)
        sv(point, provenance)
        ss(point, state)
        su(point, None)
        return point

    return make


class _Machine:
    """The log's operations on lean per-line state, announcing crash points."""

    def __init__(
        self,
        replay: Replay,
        img: PoolImage,
        crash_points: str,
        on_point: Callable[[CrashPoint], object] | None,
        lint: bool,
        check: bool,
    ) -> None:
        from pmemsim_backends.sim.lint import LintLog

        from ..explore.trace import CrashPoint, StopRecording

        self.CrashPoint = _point_maker(CrashPoint)
        self.StopRecording = StopRecording
        self.State = log_state_type()
        self.replay = replay
        self.img = img
        self.mode = crash_points
        self.each_operation = crash_points == "operations"
        self.on_point = on_point
        self.media = [
            LogMedium(i, f"image of {p.resolved}", p.size, None if p.source is None else p.page)
            for i, p in enumerate(replay.pools)
        ]
        self.pools = [_Pool(i, m, img.buffer(i)) for i, m in enumerate(self.media)]
        #: The image buffers' key contribution of each line as of their last move: a line
        #: coming into flight unwritten since keeps it as the key of its durable content,
        #: which then costs no hash.
        self.contrib = img.follow(self)
        self.buffers = [p.buf for p in self.pools]
        self.lint: LintLog | None = LintLog() if lint else None
        self.model = (
            LineModel(
                [None if p.source is None else p.read for p in replay.pools],
                [m.label for m in self.media],
            )
            if check
            else None
        )
        self.seq = 0
        self.since_barrier = False
        self.barriers = 0
        self.operations = 0
        self.markers: list[str] = []
        #: The markers as a crash point holds them (made when they change, not per point).
        self.marker_tuple: tuple[str, ...] = ()
        self.count = 0
        self.changed = True
        self.last: Any = None
        self.stopped = False
        self.unfenced = False
        #: Crash points: the current stamp, and (pool, line) of every line whose content
        #: (durable or in flight) changed since the last one.
        self.stamp = 0
        self.changed_lines: set[tuple[int, int]] = set()
        #: Per pool: its _Pool's written and stale pages.
        self.written: list[set[int]] = [p.written for p in self.pools]
        self._stale: list[set[int]] = [p.stale for p in self.pools]
        self._frozen: list[Any] = [None for _ in self.pools]
        #: (pool, line) written since the image buffers' keys were last brought up to date.
        self.dirty: set[tuple[int, int]] = set()
        self._frames: dict[tuple[str, ...], tuple[Any, int]] = {}
        #: The lines in flight at the last crash point, reused while unchanged.
        self._reuse: dict[tuple[int, int], LineInFlight] = {}

    # -- operations ----------------------------------------------------------------------

    def frame(self, frames: tuple[str, ...]) -> tuple[Any, int]:
        """Where the simulator would say a store came from: its C line's trampoline, or
        the replay loop."""
        hit = self._frames.get(frames)
        if hit is None:
            where = source_line(frames) if frames else None
            hit = _SITE if where is None else (trampoline(where).__code__, _TRAMPOLINE_LASTI)
            self._frames[frames] = hit
        return hit

    def store(self, pool: int, off: int, data: bytes, frame: tuple[Any, int]) -> None:
        """A write-back store of ``data`` (at most 8 bytes, inside the pool)."""
        p = self.pools[pool]
        code = frame[0]
        self.seq = seq = self.seq + 1
        self.since_barrier = True
        n = len(data)
        tail = p.tail
        records = p.records
        if (
            tail is not None
            and tail[1] + len(tail[2]) == off  # (first: the test that fails most often)
            and seq == p.tail_seq + 1
            and not off & 7
            and records
            and records[-1] is tail
            and tail[4] is code
            and tail[5] == frame[1]
        ):
            # The simulator extends the previous record (same instruction, next address,
            # nothing in between): its atoms keep that record's number.
            buf = tail[2]
            if type(buf) is not bytearray:
                buf = bytearray(buf)
                tail = records[-1] = p.tail = (tail[0], tail[1], buf, False, code, frame[1])
            buf += data
            rseq = tail[0]
            bounds = p.tail_bounds
            if bounds is None:
                bounds = p.tail_bounds = p.runs[rseq] = array("q", (tail[1], off))
            bounds.append(off + n)
        else:
            rec = (seq, off, data, False, code, frame[1])
            records.append(rec)
            p.tail = rec
            p.tail_bounds = None
            rseq = seq
        p.tail_seq = seq
        if (off & 7) + n <= 8:  # one atom: the common case
            lines = p.lines
            line = off & -LINE
            atoms = lines.get(line)
            key = (pool, line)
            page = off >> 12  # (one atom: inside one page)
            if atoms is None:
                # (_Pool.line_bytes and _key_of, inline: this runs once per store.)
                p.bases[line] = (
                    _ZERO_LINE if p.blank and page not in p.written else p.buf[line : line + LINE]
                )
                p.base_keys[line] = None if key in self.dirty else self.contrib.get(key, 0)
                lines[line] = [(rseq, off, data, frame)]
            else:
                if line not in p.overlaps:
                    end = off + n
                    for other in atoms:  # an overwrite of bytes in flight: lint has findings
                        if other[1] < end and off < other[1] + len(other[2]):
                            p.lint_flag = True
                            p.overlaps.add(line)
                            break
                atoms.append((rseq, off, data, frame))
            self.changed_lines.add(key)
            self.dirty.add(key)
            p.written.add(page)
            p.stale.add(page)
        else:
            self._atoms(p, rseq, off, data, frame)
        p.buf[off : off + n] = data
        self.changed = True
        self.operations += 1
        if self.model is not None:
            self.model.store(pool, off, data)
        if self.each_operation:
            self._capture("store", "after")

    def _atoms(self, p: _Pool, rseq: int, off: int, data: bytes, frame: tuple[Any, int]) -> None:
        """File a store that crosses an 8-byte boundary as its atoms (and note its pages)."""
        lines = p.lines
        pos, n = 0, len(data)
        while pos < n:
            a = off + pos
            take = min(8 - (a & 7), n - pos)
            line = a & -LINE
            atoms = lines.get(line)
            if atoms is None:
                p.bases[line] = p.line_bytes(line)
                p.base_keys[line] = self._key_of(p.index, line)
                atoms = lines[line] = []
            elif line not in p.overlaps:
                for other in atoms:
                    if other[1] < a + take and a < other[1] + len(other[2]):
                        p.lint_flag = True
                        p.overlaps.add(line)
                        break
            atoms.append((rseq, a, data[pos : pos + take], frame))
            self.changed_lines.add((p.index, line))
            self.dirty.add((p.index, line))
            p.written.add(a >> 12)
            p.stale.add(a >> 12)
            pos += take

    def _key_of(self, pool: int, line: int) -> int | None:
        """The image key of a line's content now, if the image buffers know it (it was not
        written since their keys were last brought up to date): a line just coming into
        flight keeps it as the key of its durable content, which then costs no hash."""
        key = (pool, line)
        return None if key in self.dirty else self.contrib.get(key, 0)

    def flush(self, pool: int, off: int, n: int) -> None:
        """A flush of ``[off, off + n)`` (n > 0), already cut to the pool."""
        p = self.pools[pool]
        self.operations += 1
        if self.model is not None:
            self.model.flush(pool, off, n)
        if self.each_operation:
            self._capture("flush", "before")
        self.seq = seq = self.seq + 1
        end = off + n
        # The simulator's Medium.align: whole lines, but past the pool's end only to its
        # end or the flush's, whichever is further.
        lo = off & -LINE
        hi = (end + LINE - 1) & -LINE
        if hi > p.size:
            hi = max(p.size, end)
        p.flushes.append((seq, lo, hi, _FLUSH_PROV))
        self.unfenced = True
        lines, marks = p.lines, p.flush_seq
        if hi - lo == LINE:  # one line: the common case
            atoms = lines.get(lo)
            if atoms is None:
                p.lint_flag = True  # a flush of a clean line
            else:
                if atoms[-1][0] < marks.get(lo, 0):
                    p.lint_flag = True  # flushed again, nothing stored since
                marks[lo] = seq
        elif (hi - lo + LINE - 1) // LINE <= len(lines):
            for line in range(lo, hi, LINE):
                atoms = lines.get(line)
                if atoms is None:
                    p.lint_flag = True
                    continue
                if atoms[-1][0] < marks.get(line, 0):
                    p.lint_flag = True
                marks[line] = seq
        else:
            p.lint_flag = True  # more lines than are in flight: some are clean
            for line in lines:
                if lo <= line < hi:
                    marks[line] = seq

    def fence(self) -> None:
        self.operations += 1
        if not self.unfenced:  # nothing to order: not a barrier
            if self.model is not None:
                self.model.fence()
            return
        # (_barrier, inline: once per epoch.)
        if self.mode != "markers" and (self.since_barrier or self.each_operation):
            self._capture("fence", "before")
        self.changed = True
        self.barriers += 1
        self.since_barrier = False
        # The self-check hears of the fence after its crash point, which comes before it.
        if self.model is not None:
            self.model.fence()
        self._resolve_all()

    def deep_sync(self, pool: int, off: int, n: int) -> None:
        p = self.pools[pool]
        end = off + n
        lo = off - off % LINE
        hi = min(-(-end // LINE) * LINE, max(p.size, end))
        self._barrier("deep_flush")
        self.operations += 1
        if self.model is not None:
            self.model.deep_sync(pool, off, n)
        # A deep sync flushes its range (not user code, for the lint) and fences.
        self.seq = seq = self.seq + 1
        p.flushes.append((seq, lo, hi, ()))
        for line in p.lines:
            if lo <= line < hi:
                p.flush_seq[line] = seq
        self._resolve_all()

    def marker(self, name: str, begin: bool) -> None:
        if begin:
            self.markers.append(name)
            self.marker_tuple = tuple(self.markers)
        if self.mode == "markers":
            self._capture("marker", "at")
        if not begin:
            self.markers.pop()
            self.marker_tuple = tuple(self.markers)

    def end(self) -> list[Finding]:
        findings = self._final_lint() if self.lint is not None else []
        self._capture("end", "at")
        return findings

    # -- barriers ------------------------------------------------------------------------

    def _barrier(self, kind: str) -> None:
        if self.mode != "markers" and (self.since_barrier or self.each_operation):
            self._capture(kind, "before")
        self.changed = True
        self.barriers += 1
        self.since_barrier = False

    def _resolve_all(self) -> None:
        for p in self.pools:
            if p.flushes:
                if self.lint is not None:
                    if p.lint_flag:
                        self._lint_epoch(p)
                    # Linted, findings or not: the end reports only the stores after this
                    # (see the simulator's lint_mark; any bound between them will do).
                    recs = p.records
                    if recs:
                        last = recs[-1]
                        p.lint_mark = (self.seq, last[0], last[1] + len(last[2]))
                    else:
                        p.lint_mark = (self.seq, 0, 0)
                self._fold(p)
        self.unfenced = False

    def _lint_epoch(self, p: _Pool) -> None:
        """The simulator's lint of one epoch (its own code, on this pool's records)."""
        from pmemsim_backends.sim.medium import Medium

        assert self.lint is not None
        Medium._lint_epoch(_Shim(p), p.flushes, self.lint)

    def _fold(self, p: _Pool) -> None:
        """The fence: what a flush issued after it covers becomes durable."""
        marks = p.flush_seq
        lines, bases, base_keys = p.lines, p.bases, p.base_keys
        changed, pi = self.changed_lines, p.index
        for line, seq in marks.items():
            atoms = lines[line]
            if atoms[-1][0] < seq:  # every atom (the common case: atoms are in order)
                del lines[line], bases[line], base_keys[line]
            else:
                k = _covered(atoms, seq)
                if not k:
                    continue
                base_keys[line] = None
                base = bytearray(bases[line])
                for _, at, data, _ in atoms[:k]:
                    base[at - line : at - line + len(data)] = data
                bases[line] = bytes(base)
                lines[line] = atoms[k:]
            changed.add((pi, line))
        if p.records:
            if lines:
                self._cut_records(p)
            else:
                # No atom in flight, so no record pending: a record stays while a line it
                # wrote holds its atoms, both cut by the same flushes (_cut_records would
                # keep nothing; tests/test_pmlog_fast.py checks that it agrees).
                p.records = []
                p.tail = None
                p.runs.clear()
        p.flushes = []
        p.flush_seq = {}
        # Overlapping stores still in flight keep the flag: store() looks no further at a line
        # already known to overlap (the next epoch lint notes only the overwrites new then).
        if p.overlaps:
            p.overlaps = {line for line in p.overlaps if _overlap(lines.get(line, ()))}
        p.lint_flag = bool(p.overlaps)

    @staticmethod
    def _cut_records(p: _Pool) -> None:
        """The pending store records after a fence, as the simulator cuts them: a record's
        part in a line that a flush issued after it covers is durable, the rest stays."""
        marks = p.flush_seq
        kept: list[tuple[Any, ...]] = []
        for rec in p.records:
            seq, off, data = rec[0], rec[1], rec[2]
            end = off + len(data)
            first, last = off & -LINE, (end - 1) & -LINE
            if first == last:
                if marks.get(first, 0) <= seq:
                    kept.append(rec)
                continue
            covered = [marks.get(line, 0) > seq for line in range(first, last + 1, LINE)]
            if not any(covered):
                kept.append(rec)
                continue
            # Cut at the covered lines: the uncovered runs stay in flight.
            start = None
            for k, line in enumerate(range(first, last + LINE + 1, LINE)):
                inside = k < len(covered) and not covered[k]
                if inside and start is None:
                    start = max(line, off)
                elif not inside and start is not None:
                    stop = min(line, end)
                    kept.append((seq, start, data[start - off : stop - off], *rec[3:]))
                    start = None
        p.records = kept
        if not kept:
            p.tail = None
            p.runs.clear()
        elif p.runs:
            live = {rec[0] for rec in kept}
            p.runs = {seq: b for seq, b in p.runs.items() if seq in live}

    def _final_lint(self) -> list[Finding]:
        """What the simulator's lint() says at the end: the epochs' findings, what a fence
        would find in the last epoch (no fence linted it), and every store not durable now."""
        assert self.lint is not None
        # A pool with no store pending and no flush to lint (what a log ending in a fence
        # leaves, commonly) adds nothing.
        linted = [p for p in self.pools if p.records or p.lint_flag]
        if not linted:
            kept: list[Finding] = self.lint.findings()
            return kept
        from pmemsim_backends.sim.lint import LintLog
        from pmemsim_backends.sim.medium import Medium

        now = LintLog()
        trailing = LintLog()
        for p in linted:
            shim = _Shim(p)
            if p.lint_flag:  # (else no flush of it is useless, no store overwrites another)
                Medium._lint_epoch(shim, p.flushes, trailing)
            Medium._lint_in_flight(shim, p.flushes, now)
        log = self.lint.merged(trailing) if trailing else self.lint
        found: list[Finding] = now.findings() + log.findings()
        return found

    # -- crash points --------------------------------------------------------------------

    def _capture(self, kind: str, position: str) -> None:
        if self.stopped:
            return
        last = self.last
        if self.changed or last is None:
            state = self._state()
            if self.model is not None:
                self.model.verify(
                    self.count,
                    state.in_flight,
                    self.buffers,
                    self.changed_lines,
                )
            self.changed_lines = set()
        else:
            state = last.state
        self.changed = False
        point = self.CrashPoint(
            self.count, kind, position, self.operations, self.marker_tuple, (), state
        )
        self.count += 1
        self.last = point
        if self.on_point is None:
            return
        try:
            self.on_point(point)
        except self.StopRecording:
            self.stopped = True
            raise _Stop() from None

    def _state(self) -> Any:
        self.stamp += 1
        out = []
        reuse = self._reuse
        fresh: dict[tuple[int, int], LineInFlight] = {}
        changed = self.changed_lines
        for p in self.pools:
            lines = p.lines
            if not lines:
                continue
            marks = p.flush_seq
            pi = p.index
            for off in sorted(lines) if len(lines) > 1 else lines:
                key = (pi, off)
                atoms = lines[off]
                mark = marks.get(off, 0)
                k = 0
                if mark:  # (all of them, commonly: a flush after the line's last store)
                    k = len(atoms) if atoms[-1][0] < mark else _covered(atoms, mark)
                line = reuse.get(key)
                if line is None or key in changed or line.flushed != k:
                    line = LineInFlight(pi, off, p.bases[off], tuple(atoms), k, p.base_keys[off])
                fresh[key] = line
                out.append(line)
        self._reuse = fresh
        return self.State(self, out)

    # -- pages of the current crash point -------------------------------------------------

    def _current(self, stamp: int) -> None:
        if stamp != self.stamp:
            raise RuntimeError(
                "the pages of a log's crash state can be read only at its crash point "
                "(the replay has moved on)"
            )

    def visible_page(self, pool: int, page: int, stamp: int) -> bytes:
        """Page ``page`` with every store persisted."""
        self._current(stamp)
        buf = self.pools[pool].buf
        got = bytes(buf[page * PAGE : page * PAGE + PAGE])
        return got if len(got) == PAGE else got + bytes(PAGE - len(got))

    def durable_page(self, pool: int, page: int, stamp: int) -> bytes:
        """Page ``page`` with nothing in flight persisted."""
        got = self.visible_page(pool, page, stamp)
        p = self.pools[pool]
        start = page * PAGE
        inside = [line for line in p.lines if start <= line < start + PAGE]
        if not inside:
            return got
        out = bytearray(got)
        for line in inside:
            out[line - start : line - start + LINE] = p.bases[line]
        return bytes(out)

    def frozen_visible(self, pool: int, stamp: int) -> PageMap[bytes | bytearray]:
        """The visible pages as a frozen map (pages never written are left to the loader)."""
        from pmemsim_backends.sim.pagemap import PageMap

        self._current(stamp)
        frozen = self._frozen[pool]
        if frozen is None:
            frozen = PageMap()
        stale = self._stale[pool]
        if stale:
            frozen = frozen.updated({p: self.visible_page(pool, p, stamp) for p in stale})
            stale.clear()
        self._frozen[pool] = frozen
        return frozen

    def take_dirty(self) -> set[tuple[int, int]]:
        """(pool, line) of every line written since the last call."""
        out, self.dirty = self.dirty, set()
        return out


def record_log(
    replay: Replay,
    img: PoolImage,
    crash_points: str = "barriers",
    on_point: Callable[[CrashPoint], object] | None = None,
    *,
    lint: bool = False,
    check: bool = True,
    twin: bool = True,
) -> LogTrace:
    """Replay ``replay`` on the lean machine, writing the visible content into ``img``'s
    buffers (which must start as the pools' initial content), and hand each crash point to
    ``on_point`` (raise :class:`pmemsim.explore.trace.StopRecording` there to end early).
    ``lint``: gather the simulator's lint findings; ``check``: the durability self-check,
    on a second core when the log is long and ``twin`` (:mod:`pmemsim.pmlog.twin`)."""
    for pool in replay.pools:
        # The simulator maps whole pages and refuses other sizes: so does this replay,
        # which is proven exact against it (tests/test_pmlog_fast.py) on page-sized pools.
        if pool.size % PAGE:
            from ..errors import ErrorCode, error_for

            raise error_for(
                ErrorCode.LENGTH_UNALIGNED, f"length {pool.size} is not a multiple of {PAGE}"
            )
    checker: Twin | None = None
    if check and twin and worth_a_twin(replay):
        from .twin import Twin

        checker, check = Twin(replay, crash_points), False
    try:
        before = _collector_for_the_replay()
        try:
            m = _Machine(replay, img, crash_points, on_point, lint, check)
            findings: list[Finding] = []
            try:
                _drive(replay, m)
                findings = m.end()
            except _Stop:
                pass
        finally:
            _collector_after_the_replay(*before)
        if checker is not None:
            checker.verify(m.count)
    finally:
        if checker is not None:
            checker.close()
    return LogTrace(findings, m.count, m.stopped)


def _collector_for_the_replay() -> tuple[bool, tuple[int, ...], tuple[int, ...] | None]:
    """The garbage collector tuned for the replay while it runs (until
    :func:`_collector_after_the_replay`, given what this returns: two calls, not a context
    manager, whose generator costs more than they do). Objects there before it
    (the log, the interpreter's own) are left alone: what a judge holds across crash points
    (a worker's batches of images) survives young collections, and every old collection
    would walk everything; not when something else froze objects: thawing would thaw those
    too. And a young collection comes every :data:`YOUNG` allocations at least, not 700:
    the crash points of a worker's unanswered batches (each with its crash state) live
    through collection after collection, and a check of 1,000 epochs with a library checker
    ran 26 young collections instead of 5 (12 million instructions, 6% of its time).
    Garbage cycles are still collected, young. (The command line sets both for its life.)"""
    frozen = not gc.get_freeze_count()
    if frozen:
        gc.freeze()
    was = gc.get_threshold()
    raised = (YOUNG, *was[1:]) if 0 < was[0] < YOUNG else None
    if raised is not None:
        gc.set_threshold(*raised)
    return frozen, was, raised


def _collector_after_the_replay(
    frozen: bool, was: tuple[int, ...], raised: tuple[int, ...] | None
) -> None:
    """The collector as it was before :func:`_collector_for_the_replay`."""
    if raised is not None and gc.get_threshold() == raised:  # (as that left it)
        gc.set_threshold(*was)
    if frozen:
        gc.unfreeze()


#: The fewest allocations between two young collections during a replay.
YOUNG = 10_000


#: A store's size as the log writes it (pmemcheck: lowercase hex), and its value.
_STORE_SIZES = {f"0x{n:x}": n for n in range(1, 9)}


def _drive(replay: Replay, m: _Machine) -> None:
    """Every operation of the log, in order, to the machine; the replay's counts as
    :meth:`Replay.workload` keeps them. The common records (STORE, FLUSH, FENCE) are read
    here directly, the way the grammar reads them; the others through the grammar."""
    replay.ignored = {"STORE": 0, "FLUSH": 0, "DEEP_SYNC": 0}
    replay.clipped = 0
    names: list[str] = []
    at = array("q")
    replay.marker_names, replay.marker_ops = names, at
    marker_texts: dict[tuple[str, bool], str] = {}
    locate = None  # (made for the first record read the careful way)
    spans = [(r.base, r.end, r.offset, i) for i, p in enumerate(replay.pools) for r in p.mappings]
    # One registered range (the common case): a record inside it needs no search.
    lo, hi, moff, only = spans[0] if len(spans) == 1 else (1, 0, 0, 0)
    store, flush, fence, frame_of = m.store, m.flush, m.fence, m.frame
    by_text: dict[str, tuple[Any, int]] = {}
    registered: set[str] | None = None
    site = frame_of(())
    operations = stores = 0
    try:
        for chunk in replay.log.iter_texts():
            for text in chunk:
                if text == "FENCE":
                    fence()
                    operations += 1
                    continue
                head = text[:8]
                if head == "STORE;0x" and text.isascii():
                    f = text.split(";", 4)
                    try:
                        # (A size written otherwise, e.g. 0x08, takes the careful path, as
                        # does a value too big for its size.)
                        size = _STORE_SIZES[f[3]]
                        addr = int(f[1], 16)
                        data = int(f[2], 16).to_bytes(size, "little")
                    except (IndexError, KeyError, ValueError, OverflowError):
                        pass
                    else:
                        # (The log was checked when read; a file changed since is read by
                        # the careful path, which names a bad record.)
                        if f[2][:2] == "0x" and lo <= addr and addr + size <= hi:
                            if len(f) == 5:
                                frame = by_text.get(f[4])
                                if frame is None:
                                    frame = by_text[f[4]] = frame_of(_frames(f[4]))
                            else:
                                frame = site
                            store(only, addr - lo + moff, data, frame)
                            stores += 1
                            operations += 1
                            continue
                elif head == "FLUSH;0x" and text.isascii():
                    f = text.split(";")
                    if len(f) == 3 and f[2][:2] == "0x":
                        try:
                            # (A line's flush, commonly: its size is known.)
                            size = LINE if f[2] == "0x40" else int(f[2], 16)
                            addr = int(f[1], 16)
                        except ValueError:
                            pass
                        else:
                            if size == LINE:
                                addr -= addr % LINE  # an instruction: its operand's line
                            if size and lo <= addr and addr + size <= hi:
                                flush(only, addr - lo + moff, size)
                                operations += 1
                                continue
                elif head == "REGISTER":
                    # A registration the log was read with, as pmemcheck writes it, is well
                    # formed: no operation (others are read as the grammar reads them).
                    if registered is None:
                        registered = {
                            f"REGISTER_FILE;{r.path};0x{r.base:x};0x{r.size:x};0x{r.offset:x}"
                            for r in replay.log.files
                        }
                    if text in registered:
                        continue
                # Anything else, or outside the one range: as the grammar and the
                # simulator's replay read it.
                op = _parse_record(0, (0, 0, 0, 0, text, False))
                if isinstance(op, str | RegisterFile):
                    continue
                if locate is None:
                    locate = replay._locator()
                step, _ = replay.step_of(op, locate)
                if step is None:
                    continue
                kind, pool, off, arg = step[0], step[1], step[2], step[3]
                if kind == STORE:
                    assert isinstance(op, Store)
                    store(pool, off, arg, frame_of(op.frames))  # type: ignore[arg-type]
                    stores += 1
                elif kind == FLUSH:
                    if arg:
                        flush(pool, off, arg)  # type: ignore[arg-type]
                elif kind == FENCE:
                    fence()
                elif kind == DEEP:
                    if arg:
                        m.deep_sync(pool, off, arg)  # type: ignore[arg-type]
                else:
                    name = str(arg)
                    begin = kind == BEGIN
                    known = marker_texts.get((name, begin))
                    if known is None:
                        known = f"{name}.{'BEGIN' if begin else 'END'}"
                        marker_texts[(name, begin)] = known
                    names.append(known)
                    at.append(operations)
                    m.marker(name, begin)
                    continue
                operations += 1
    finally:
        replay.operations, replay.stores = operations, stores
