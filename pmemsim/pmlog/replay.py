"""A store log's operations as a workload on the simulator.

Each registered file is one simulated pool: file offset = address - base + the
registration's file offset. Its initial content is the file's content when the file exists
(read a page at a time, as the replay touches it; never written), zeros otherwise. Each
operation becomes the matching call on a view of its pool: a STORE an ordinary (write-back)
store, FLUSH a flush, FENCE a drain (of every pool: one machine), DEEP_SYNC a deep flush,
markers the recorder's marker boundaries.

**Which lines a FLUSH flushes.** pmemcheck logs a flush *instruction* (clflush, clflushopt,
clwb) as ``FLUSH;<its operand>;0x40``: the operand's address, not the line's, unless
``--flush-align=yes``; the instruction flushes the one line holding that address, although
the logged range reaches into the next line when the address is not aligned. So a FLUSH of
exactly one line's size (64 bytes) flushes the line holding its address. Any other size is a
range flush (an msync, a ``VALGRIND_PMC_DO_FLUSH`` request): it flushes every line the range
covers. See docs/check-log.md for the measurements behind this rule.

Stores, flushes and deep syncs outside every registered range are ignored and counted
(pmemcheck logs every store to persistent memory, also to regions no file was registered
for); a record that straddles the edge of a registered range is cut to the part inside.

The operations are streamed from the log on every pass (:meth:`Replay.steps`): the replay
keeps no list of them.
"""

from __future__ import annotations

import bisect
import itertools
import os
import stat
import sys
from array import array
from collections.abc import Callable, Iterator
from collections.abc import Mapping as MappingOf
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass, field
from .._records import NamedTuple
from ..enums import Granularity
from ..errors import ErrorCode, InvalidArgumentError, NotSupportedError
from ..markers import _sink
from ..snapshot import Snapshot
from .frames import source_line, trampoline
from .grammar import (
    DeepSync,
    Fence,
    Flush,
    Log,
    LogFormatError,
    Marker,
    Operation,
    RegisterFile,
    Store,
)

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint, Trace
    from ..view import View

__all__ = ["LogPool", "Replay", "Step"]

#: Step kinds (small ints: the replay loop dispatches on them for every record).
STORE, FLUSH, FENCE, DEEP, BEGIN, END = range(6)

_PAGE = 4096
_LINE = 64


@dataclass(frozen=True, slots=True)
class Mapping:
    """One registered range: ``size`` bytes at address ``base`` are file bytes from
    ``offset`` on."""

    base: int
    size: int
    offset: int
    record: int

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(eq=False)
class LogPool:
    """One registered file as the simulator sees it."""

    #: The path as the log registers it, and as this process opens it.
    path: str
    resolved: str
    #: Registered ranges, by address.
    mappings: list[Mapping]
    #: Bytes of the simulated pool: the file's size or the end of the furthest registered
    #: range, whichever is larger.
    size: int
    #: Where the initial content comes from (None: zeros), and how many of its bytes there
    #: are (the rest reads as zeros).
    source: str | None = None
    source_size: int = 0

    @property
    def base(self) -> int:
        """The lowest registered address."""
        return self.mappings[0].base

    @property
    def base_image(self) -> bool:
        """Whether the pool starts from a file's content (else from zeros)."""
        return self.source is not None

    def page(self, p: int) -> bytes:
        """Initial content of page ``p`` (short at the end of the source; empty past it)."""
        start = p * _PAGE
        if self.source is None or start >= self.source_size:
            return b""
        # Opened per page (only pages the log touches are read): no descriptor outlives
        # the call, however long the pool is kept.
        fd = os.open(self.source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, min(_PAGE, self.source_size - start), start)
        finally:
            os.close(fd)

    def read(self, offset: int, length: int) -> bytes:
        """Initial content of ``[offset, offset + length)`` (zeros past the source's end)."""
        out = bytearray()
        end = offset + length
        while offset < end:
            p, o = divmod(offset, _PAGE)
            take = min(_PAGE - o, end - offset)
            chunk = self.page(p)[o : o + take]
            out += chunk + bytes(take - len(chunk))
            offset += take
        return bytes(out)

    def snapshot(self) -> Snapshot:
        """The initial content as the simulator maps it."""
        return Snapshot(self.resolved, self.size, {}, None if self.source is None else self.page)

    def address_of(self, offset: int) -> int:
        """An address at which the pool's ``offset`` is mapped (the lowest one)."""
        for m in self.mappings:
            if m.offset <= offset < m.offset + m.size:
                return m.base + offset - m.offset
        return self.base + offset - self.mappings[0].offset

    @classmethod
    def from_log(cls, log: Log, base_image: str | None = None) -> LogPool:
        """The pool of a log that registers one file (see :meth:`Replay.of` for several)."""
        pools = _pools(log, {None: base_image} if base_image else {})
        if len(pools) > 1:
            raise NotSupportedError(
                ErrorCode.NOSUPP,
                f"the log registers {len(pools)} different files "
                f"({', '.join(sorted(p.path for p in pools))}); use Replay.of for several",
            )
        return pools[0]


def _identity(path: str) -> str:
    return os.path.realpath(path)


def _missing(path: str) -> bool:
    """Whether no file is at ``path``, known without resolving it (what its real path
    costs: a system call per component): its directory is there and has no entry of its
    name, so the real path names nothing either. False: there may be one (resolve it)."""
    name = os.path.basename(path)
    if name in ("", ".", ".."):
        return False
    try:
        os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    else:
        return False
    try:
        return stat.S_ISDIR(os.stat(os.path.dirname(path) or ".").st_mode)
    except OSError:
        return False


def _pools(log: Log, base_images: MappingOf[str | None, str]) -> list[LogPool]:
    """One pool per registered file, in the order the log first registers them.

    ``base_images`` maps a registered path (or None: the only file) to the file to read
    the initial content from instead ("": zeros).
    """
    if not log.files:
        raise LogFormatError(
            log.start[0], log.start[1], "START", "the log registers no file (REGISTER_FILE)"
        )
    by_file: dict[str, list[RegisterFile]] = {}
    # A log that registers one path (commonly once), for a file not on this machine, is
    # one pool starting as zeros: no path need be resolved.
    path = log.files[0].path
    absent = not base_images and all(f.path == path for f in log.files) and _missing(path)
    if absent:
        by_file[path] = list(log.files)
    else:
        for f in log.files:
            by_file.setdefault(_identity(f.path), []).append(f)
    given: dict[str | None, str] = dict(base_images)
    if None in given:
        if len(by_file) > 1:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"the log registers {len(by_file)} files: give each base image as "
                "REGISTERED_PATH=FILE",
            )
        given = {log.files[0].path: given[None]}
    wanted = {_identity(k): v for k, v in given.items() if k is not None}
    unknown = [k for k in given if k is not None and _identity(k) not in by_file]
    if unknown:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"the log registers no file {unknown[0]} (--base-image)"
        )
    pools: list[LogPool] = []
    claimed: list[tuple[Mapping, int]] = []  # every mapping, with its pool's number
    for ident, regs in by_file.items():
        seen: dict[tuple[int, int, int], RegisterFile] = {}
        for f in regs:
            seen.setdefault((f.base, f.size, f.offset), f)
        mappings = sorted(
            (Mapping(f.base, f.size, f.offset, f.index) for f in seen.values()),
            key=lambda m: (m.base, m.size),
        )
        for a, b in itertools.combinations(mappings, 2):
            if b.base < a.end and b.base - b.offset != a.base - a.offset:
                _clash(log, b, f"maps addresses that record #{a.record} maps to other file offsets")
        claimed += [(m, len(pools)) for m in mappings]
        first = regs[0]
        source = wanted.get(ident)
        origin = source if source is not None else ident
        if source == "" or absent:  # zeros, whatever the file holds; or no file
            source_size = None
        else:
            source_size = _source_size(origin, first.path, explicit=source is not None)
        size = max(max(m.offset + m.size for m in mappings), source_size or 0)
        pools.append(
            LogPool(
                first.path,
                os.path.abspath(first.path),
                mappings,
                size,
                None if source_size is None else origin,
                source_size or 0,
            )
        )
    claimed.sort(key=lambda c: c[0].base)
    for (a, pa), (b, pb) in itertools.pairwise(claimed):
        if b.base < a.end and pa != pb:
            _clash(log, b, f"maps addresses that record #{a.record} registers for another file")
    return pools


def _clash(log: Log, m: Mapping, problem: str) -> None:
    bad = next(f for f in log.files if f.index == m.record)
    raise LogFormatError(bad.index, bad.pos, f"REGISTER_FILE;{bad.path}", problem)


def _source_size(path: str, registered: str, *, explicit: bool) -> int | None:
    """Bytes of initial content at ``path`` (None: no such file, the pool starts as zeros).

    Only a regular file gives content: a FIFO would block the read and a device has no
    content to copy, so both are refused (give the content with --base-image).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if explicit:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"cannot read the base image {path}: no such file"
            ) from None
        return None
    except OSError as exc:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"cannot read the base image {path}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        hint = "" if explicit else f" (give its content with --base-image {registered}=FILE)"
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"the base image {path} is {kind}: cannot read it{hint}"
        )
    if not os.access(path, os.R_OK):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"cannot read the base image {path}: permission denied"
        )
    return st.st_size


class Step(NamedTuple):
    """One operation the replay issues: kind, pool, offset, data or length, log record."""

    kind: int
    pool: int
    offset: int
    arg: bytes | int | str
    record: int


@dataclass
class Replay:
    """A log's operations as a workload on its pools."""

    log: Log
    pools: list[LogPool]
    #: Records outside every registered range, by type, that the replay left out, and
    #: records cut to the part inside one; counted by each pass over the steps.
    ignored: dict[str, int] = field(default_factory=dict)
    clipped: int = 0
    #: After a run: operations the simulator saw (the ``operation`` count of a crash point
    #: counts them), and the stores among them.
    operations: int = 0
    stores: int = 0
    #: After a run: every marker record issued, as the log writes it ("NAME.BEGIN"), and how
    #: many operations came before each.
    marker_names: list[str] = field(default_factory=list)
    marker_ops: array[int] = field(default_factory=lambda: array("q"))

    @classmethod
    def of(
        cls, log: Log, pool: LogPool | None = None, *, base_images: dict[str, str] | None = None
    ) -> Replay:
        """The replay of ``log``; ``base_images`` maps a registered path to the file holding
        its initial content (``pool``: the one pool, already built)."""
        given: dict[str | None, str] = {}
        given.update(base_images or {})
        pools = [pool] if pool is not None else _pools(log, given)
        return cls(log, pools)

    @property
    def pool(self) -> LogPool:
        """The first registered file's pool."""
        return self.pools[0]

    def _locator(self) -> Callable[[int, int], tuple[int, int, int, int] | None]:
        spans = sorted(
            ((m.base, m.end, m.offset, i) for i, p in enumerate(self.pools) for m in p.mappings)
        )
        bases = [s[0] for s in spans]
        ends = list(itertools.accumulate((s[1] for s in spans), max))

        def locate(address: int, size: int) -> tuple[int, int, int, int] | None:
            """``(pool, offset, bytes skipped at the front, length)`` of the part of
            ``[address, address + size)`` inside the first registered range (by address)
            that it meets."""
            end = address + size
            j = bisect.bisect_right(bases, address) - 1
            k = bisect.bisect_right(ends, address)  # the first range reaching past address
            if k > j:  # none that starts at or before it: one starting inside the record?
                k = j + 1
                if k >= len(spans) or bases[k] >= end:
                    return None
            base, mend, off, i = spans[k]
            lo, hi = max(address, base), min(end, mend)
            return i, lo - base + off, lo - address, hi - lo

        return locate

    def steps(self) -> Iterator[Step]:
        """The operations as the simulator gets them, streamed from the log."""
        for _, step, _ in self.conversions():
            if step is not None:
                yield step

    def conversions(self) -> Iterator[tuple[Operation, Step | None, int]]:
        """Every operation, its step (None: outside every registered file) and how many
        bytes at its front were cut off."""
        self.ignored = {"STORE": 0, "FLUSH": 0, "DEEP_SYNC": 0}
        self.clipped = 0
        locate = self._locator()
        for op in self.log.iter_operations():
            step, skip = self.step_of(op, locate)
            yield op, step, skip

    def step_of(
        self, op: Operation, locate: Callable[[int, int], tuple[int, int, int, int] | None]
    ) -> tuple[Step | None, int]:
        """One operation's step (None: outside every registered file) and the bytes cut
        off at its front; counts what is left out or cut (``ignored``, ``clipped``)."""
        kind = type(op)
        if kind is Fence:
            return Step(FENCE, 0, 0, 0, op.index), 0
        if kind is Marker:
            assert isinstance(op, Marker)
            return Step(BEGIN if op.begin else END, 0, 0, op.name, op.index), 0
        assert isinstance(op, Store | Flush | DeepSync)
        address, size = op.address, op.size
        if kind is Flush and size == _LINE:
            address -= address % _LINE  # an instruction: the line holding its operand
        where = locate(address, size)
        if where is None:
            if size:
                name = "STORE" if kind is Store else "FLUSH" if kind is Flush else "DEEP_SYNC"
                self.ignored[name] += 1
            return None, 0
        pool, off, skip, n = where
        if n != size:
            self.clipped += 1
        if kind is Store:
            assert isinstance(op, Store)
            data = op.data
            data = data[skip : skip + n] if n != size else data
            return Step(STORE, pool, off, data, op.index), skip
        if kind is Flush:
            return Step(FLUSH, pool, off, n, op.index), skip
        return Step(DEEP, pool, off, n, op.index), skip

    def workload(self, views: list[View]) -> None:
        """Issue every step on ``views`` (one per pool, each the whole pool).

        A store whose record carries stack frames is issued through a function whose code
        is its C source line (:func:`pmemsim.pmlog.frames.trampoline`), so that the
        simulator's provenance, and so its lint findings, name the C line.
        """
        writes = [v.write for v in views]
        flushes = [v.flush for v in views]
        deeps = [v.deep_flush for v in views]
        drain = views[0].drain  # one machine: a fence orders every pool
        # The recorder's sink directly: a log's marker names may hold characters that
        # pmemsim.marker refuses for names written in Python (a '.', say).
        sink = _sink.get()
        here = sys._getframe()
        operations = stores = 0
        names: list[str] = []
        at = array("q")
        self.marker_names, self.marker_ops = names, at
        texts: dict[tuple[str, bool], str] = {}
        # Frames (interned by the reader) -> the function that stores from their C line.
        via: dict[tuple[str, ...], Callable[[Any, Any, Any], None] | None] = {(): None}
        try:
            for op, step, _ in self.conversions():
                if step is None:
                    continue
                kind, pool, off, arg, _ = step
                if kind == STORE:
                    frames = op.frames  # type: ignore[union-attr]
                    call = via.get(frames, False)
                    if call is False:
                        where = source_line(frames)
                        call = via[frames] = None if where is None else trampoline(where)
                    if call is None:
                        writes[pool](off, arg)  # type: ignore[arg-type]
                    else:
                        call(writes[pool], off, arg)  # type: ignore[operator]
                    stores += 1
                elif kind == FLUSH:
                    flushes[pool](off, arg)  # type: ignore[arg-type]
                elif kind == FENCE:
                    drain()
                elif kind == DEEP:
                    deeps[pool](off, arg)  # type: ignore[arg-type]
                else:
                    name = str(arg)
                    begin = kind == BEGIN
                    text = texts.get((name, begin))
                    if text is None:
                        text = texts[(name, begin)] = f"{name}.{'BEGIN' if begin else 'END'}"
                    names.append(text)
                    at.append(operations)
                    if sink is not None:
                        sink(name, begin, here)
                    continue
                operations += 1
        finally:
            self.operations, self.stores = operations, stores

    def record(
        self,
        crash_points: str = "barriers",
        on_point: Callable[[CrashPoint], None] | None = None,
        *,
        lint: bool = False,
    ) -> Trace:
        """Run the replay once on a fresh simulator and record its crash points (and, with
        ``lint``, the simulator's findings: ``trace.findings``)."""
        from pmemsim_backends.sim import SimBackend

        from ..config import Config
        from ..explore.trace import record_run
        from ..part import Part
        from ..set import Set
        from ..source import Source

        sim = SimBackend(Granularity.CACHE_LINE, lint=lint)

        def run(sim: SimBackend, end: Callable[[], None]) -> None:
            with Set(Config(granularity=Granularity.CACHE_LINE, backend=sim)) as s:
                views = []
                for p in self.pools:
                    # Pages load on first touch: a crash state holds the pages the log
                    # touched, not every page of a large file. (An image even of zeros: the
                    # medium is then labelled by the file, as findings name it.)
                    views.append(s.view(s.map(Part(Source.from_image(p.snapshot())))))
                self.workload(views)
                end()

        kw: dict[str, Any] = {} if on_point is None else {"on_point": on_point}
        return record_run(run, sim, crash_points=crash_points, size=self.pool.size, **kw)
