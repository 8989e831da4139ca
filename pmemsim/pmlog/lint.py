"""The simulator's lint findings for a log, named by log record and C source line.

The replay runs with the simulator's lint on (``backends/sim/lint.py``: stores never flushed,
flushed but never fenced, flushes of clean lines, repeated flushes, stores overwriting a store
not yet durable). Each store is issued from its C source line
(:func:`pmemsim.pmlog.frames.trampoline`), so a finding already knows where in the program it
is; here it also gets the log records it concerns: the stores (or flushes) of its kind, place
and source line.

Fences with nothing to order are not reported for logs: valgrind logs a fence for every CPUID
instruction (dozens before the program registers a file), none of them the program's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..provenance import locations
from .grammar import Flush, Store
from .replay import Replay

if TYPE_CHECKING:
    from pmemsim_backends.sim import Finding

__all__ = ["LogFinding", "log_findings"]

_STORE_KINDS = {
    "store never flushed",
    "store flushed but never fenced",
    "store overwrote a store that was not yet durable",
}
_FLUSH_KINDS = {"flush of clean lines", "repeated flush"}


@dataclass(frozen=True)
class LogFinding:
    """One lint finding of a log."""

    kind: str
    severity: str
    #: The registered file, and the bytes concerned in it.
    file: str
    offset: int
    length: int
    #: Where in the C program (``append.c:21 in append_record``), when the log says.
    source: str | None
    #: How many times the simulator saw it (merged by kind and source line).
    count: int
    #: The first log record it concerns, and how many records it concerns.
    record: int | None
    records: int
    #: For an overwritten store: where the earlier store was made.
    earlier: str | None = None

    def __str__(self) -> str:
        what = "FLUSH" if self.kind in _FLUSH_KINDS else "STORE"
        at = f"{what} #{self.record}" if self.record is not None else "a record"
        if self.records > 1:
            at += f" (and {self.records - 1} more)"
        if self.source:
            at += f" at {self.source}"
        text = (
            f"{self.severity}: {self.kind}: {at}, {os.path.basename(self.file)} "
            f"+0x{self.offset:x}, {self.length} byte(s)"
        )
        if self.count > 1:
            text += f", {self.count} times"
        if self.earlier:
            text += f"; earlier store at {self.earlier}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "file": self.file,
            "offset": self.offset,
            "length": self.length,
            "source": self.source,
            "count": self.count,
            "record": self.record,
            "records": self.records,
            "earlier": self.earlier,
        }


def _where(prov: Any) -> str | None:
    locs = locations(tuple(prov))  # pmemsim's own frames (a store without frames) drop out
    return str(locs[0]) if locs else None


def log_findings(replay: Replay, findings: list[Finding]) -> list[LogFinding]:
    """The simulator's findings in the log's terms (one pass over the log)."""
    pools = {f"image of {p.resolved}": i for i, p in enumerate(replay.pools)}
    wanted: list[tuple[Finding, int, str | None]] = []
    for f in findings:
        if f.kind.value not in _STORE_KINDS | _FLUSH_KINDS:
            continue
        pool = pools.get(f.source)
        if pool is None:
            continue
        wanted.append((f, pool, _where(f.provenance)))
    if not wanted:
        return []
    firsts: list[int | None] = [None] * len(wanted)
    counts = [0] * len(wanted)
    sources: dict[tuple[str, ...], str | None] = {}
    for op, step, _ in replay.conversions():
        if step is None or not isinstance(op, Store | Flush):
            continue
        is_store = isinstance(op, Store)
        arg = step.arg
        start = step.offset
        end = start + (len(arg) if isinstance(arg, bytes) else int(arg))
        for j, (f, pool, where) in enumerate(wanted):
            if pool != step.pool or (f.kind.value in _STORE_KINDS) != is_store:
                continue
            if end <= f.offset or start >= f.offset + f.length:
                continue
            if is_store and where is not None:
                frames = op.frames  # type: ignore[union-attr]
                src = sources.get(frames, "")
                if src == "":
                    src = sources[frames] = _own(frames)
                if src != where:
                    continue
            if firsts[j] is None:
                firsts[j] = op.index
            counts[j] += 1
    out = []
    for j, (f, pool, where) in enumerate(wanted):
        out.append(
            LogFinding(
                f.kind.value,
                f.kind.severity,
                replay.pools[pool].path,
                f.offset,
                f.length,
                where,
                f.count,
                firsts[j],
                counts[j],
                _where(f.other) if f.other else None,
            )
        )
    return out


def _own(frames: tuple[str, ...]) -> str | None:
    """The source line a store was issued from in the replay (as the simulator names it)."""
    from .frames import source_line

    where = source_line(frames)
    if where is None:
        return None
    return f"{where.file}:{where.line} in {where.function}"
