"""A parsed store log as a workload on the simulator.

The registered file is laid out as one simulated pool: file offset = address - base +
the registration's file offset. Its initial content is the file's content when the file
exists (read once, never written), zeros otherwise. Each operation becomes the matching
call on a view of that pool: a STORE an ordinary (write-back) store, FLUSH a flush, FENCE a
drain, DEEP_SYNC a deep flush, markers the recorder's marker boundaries. The replay notes
which log record each simulated operation came from, so that reports name records, not
Python lines.

Stores, flushes and deep syncs outside every registered range are ignored and counted
(pmemcheck logs every store to persistent memory, also to regions no file was registered
for); a record that straddles the edge of a registered range is cut to the part inside.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..enums import Granularity
from ..errors import ErrorCode, InvalidArgumentError, NotSupportedError
from ..explore.trace import Trace, record
from ..markers import _sink
from ..snapshot import Snapshot
from ..view import View
from .grammar import DeepSync, Fence, Flush, Log, LogFormatError, Marker, RegisterFile, Store

__all__ = ["LogPool", "Replay", "Step"]

#: Step kinds (small ints: the replay loop dispatches on them for every record).
STORE, FLUSH, FENCE, DEEP, BEGIN, END = range(6)

_PAGE = 4096


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


@dataclass
class LogPool:
    """The registered file as the simulator sees it."""

    #: The path as the log registers it, and as this process opens it.
    path: str
    resolved: str
    #: Registered ranges, by address.
    mappings: list[Mapping]
    #: Bytes of the simulated pool: the file's size or the end of the furthest registered
    #: range, whichever is larger.
    size: int
    #: The pool's content when the log starts (None: zeros).
    base_image: bytes | None = field(repr=False)

    @property
    def base(self) -> int:
        """The lowest registered address."""
        return self.mappings[0].base

    def locate(self, address: int, size: int) -> tuple[int, int, int] | None:
        """``(file offset, bytes skipped at the front, length)`` of the part of
        ``[address, address + size)`` inside a registered range, or None if none is."""
        end = address + size
        for m in self.mappings:  # one or a few: a registration per mapping of the file
            lo, hi = max(address, m.base), min(end, m.end)
            if lo < hi:
                return lo - m.base + m.offset, lo - address, hi - lo
        return None

    def address_of(self, offset: int) -> int:
        """An address at which the pool's ``offset`` is mapped (the lowest one)."""
        for m in self.mappings:
            if m.offset <= offset < m.offset + m.size:
                return m.base + offset - m.offset
        return self.base + offset - self.mappings[0].offset

    @classmethod
    def from_log(cls, log: Log, base_image: str | None = None) -> LogPool:
        """The pool a log's registrations describe.

        ``base_image``: read the initial content from this file instead of the registered
        one. One file only; registering it more than once is fine (identical records count
        once; other ranges of the same file add mappings), as long as no address maps to
        two different file offsets.
        """
        if not log.files:
            raise LogFormatError(
                log.start[0], log.start[1], "START", "the log registers no file (REGISTER_FILE)"
            )
        paths = {_identity(f.path): f.path for f in log.files}
        if len(paths) > 1:
            raise NotSupportedError(
                ErrorCode.NOSUPP,
                f"the log registers {len(paths)} different files "
                f"({', '.join(sorted(paths.values()))}); check-log handles one",
            )
        first = log.files[0]
        seen: dict[tuple[int, int, int], RegisterFile] = {}
        for f in log.files:
            seen.setdefault((f.base, f.size, f.offset), f)
        mappings = sorted(
            (Mapping(f.base, f.size, f.offset, f.index) for f in seen.values()),
            key=lambda m: (m.base, m.size),
        )
        for a, b in itertools.combinations(mappings, 2):
            if b.base < a.end and b.base - b.offset != a.base - a.offset:
                bad = next(f for f in log.files if f.index == b.record)
                raise LogFormatError(
                    bad.index,
                    bad.pos,
                    f"REGISTER_FILE;{bad.path}",
                    f"maps addresses that record #{a.record} maps to other file offsets",
                )
        resolved = os.path.abspath(first.path)
        source = base_image if base_image is not None else resolved
        content: bytes | None = None
        if base_image is not None or os.path.exists(resolved):
            try:
                content = Path(source).read_bytes()
            except OSError as exc:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, f"cannot read the base image {source}: {exc.strerror}"
                ) from None
        size = max(max(m.offset + m.size for m in mappings), len(content or b""))
        if content is not None:
            content = content + bytes(size - len(content)) if len(content) < size else content
            if not any(content):
                content = None  # zeros: the simulator's default, and cheaper
        return cls(first.path, resolved, mappings, size, content)


def _identity(path: str) -> str:
    return os.path.realpath(path)


class Step(NamedTuple):
    """One operation the replay issues: kind, pool offset, data or length, log record."""

    kind: int
    offset: int
    arg: bytes | int | str
    record: int


@dataclass
class Replay:
    """A log's operations as a workload on its pool."""

    log: Log
    pool: LogPool
    steps: list[Step]
    #: Records outside every registered range, by type, that the replay left out.
    ignored: dict[str, int]
    #: Records cut to the part inside a registered range.
    clipped: int
    #: After a run: the log record of each operation the simulator saw, in order (the
    #: ``operation`` count of a crash point indexes it), and of each marker boundary.
    issued: list[int] = field(default_factory=list)
    markers: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, log: Log, pool: LogPool | None = None) -> Replay:
        pool = pool if pool is not None else LogPool.from_log(log)
        steps: list[Step] = []
        ignored = {"STORE": 0, "FLUSH": 0, "DEEP_SYNC": 0}
        clipped = 0
        for op in log.operations:
            if isinstance(op, Fence):
                steps.append(Step(FENCE, 0, 0, op.index))
                continue
            if isinstance(op, Marker):
                steps.append(Step(BEGIN if op.begin else END, 0, op.name, op.index))
                continue
            where = pool.locate(op.address, op.size)
            name = "STORE" if isinstance(op, Store) else type(op).__name__.upper()
            if isinstance(op, DeepSync):
                name = "DEEP_SYNC"
            if where is None:
                if op.size:
                    ignored[name] += 1
                continue
            off, skip, n = where
            clipped += n != op.size
            if isinstance(op, Store):
                steps.append(Step(STORE, off, op.data[skip : skip + n], op.index))
            elif isinstance(op, Flush):
                steps.append(Step(FLUSH, off, n, op.index))
            else:
                steps.append(Step(DEEP, off, n, op.index))
        return cls(log, pool, steps, ignored, clipped)

    def workload(self, view: View) -> None:
        """Issue every step on ``view`` (the whole pool), noting the records issued."""
        issued: list[int] = []
        markers: list[int] = []
        self.issued, self.markers = issued, markers
        write, flush, drain, deep = view.write, view.flush, view.drain, view.deep_flush
        note = issued.append
        # The recorder's sink directly: a log's marker names may hold characters that
        # pmemsim.marker refuses for names written in Python (a '.', say).
        sink = _sink.get()
        here = sys._getframe()
        for kind, off, arg, rec in self.steps:
            if kind == STORE:
                write(off, arg)  # type: ignore[arg-type]
            elif kind == FLUSH:
                flush(off, arg)  # type: ignore[arg-type]
            elif kind == FENCE:
                drain()
            elif kind == DEEP:
                deep(off, arg)  # type: ignore[arg-type]
            else:
                markers.append(rec)
                if sink is not None:
                    sink(arg, kind == BEGIN, here)  # type: ignore[arg-type]
                continue
            note(rec)

    def record(self, crash_points: str = "barriers") -> Trace:
        """Run the replay once on a fresh simulator and record its crash points."""
        from pmemsim_backends.sim import SimBackend

        base: Snapshot | None = None
        content = self.pool.base_image
        if content is not None:
            # Pages load on first touch: a crash state then holds the pages the log touched,
            # not every page of a large file.
            def load(p: int, content: bytes = content) -> bytes:
                return content[p * _PAGE : (p + 1) * _PAGE]

            base = Snapshot(self.pool.resolved, self.pool.size, {}, load)
        return record(
            self.workload,
            size=self.pool.size,
            granularity=Granularity.CACHE_LINE,
            crash_points=crash_points,
            base=base,
            backend=SimBackend(Granularity.CACHE_LINE, lint=False),
        )
