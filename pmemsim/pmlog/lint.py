"""The simulator's lint findings for a log, named by log record and C source line.

The replay runs with the simulator's lint on (``backends/sim/lint.py``: stores never flushed,
flushed but never fenced, flushes of clean lines, repeated flushes, stores overwriting a store
not yet durable). Each store is issued from its C source line
(:func:`pmemsim.pmlog.frames.trampoline`), so a finding already knows where in the program it
is; here it also gets the log records it concerns: the stores (or flushes) it covers, by
their numbers.

Fences with nothing to order are not reported for logs: valgrind logs a fence for every CPUID
instruction (dozens before the program registers a file), none of them the program's.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass, field
from ..provenance import locations
from .replay import DEEP, FLUSH, STORE, Replay

if TYPE_CHECKING:
    from pmemsim_backends.sim import Finding

__all__ = ["LogFinding", "log_findings"]

_STORE_KINDS = {
    "store never flushed",
    "store flushed but never fenced",
    "store overwrote a store that was not yet durable",
}
_FLUSH_KINDS = {"flush of clean lines", "repeated flush"}

#: A frame inside a shared library without debug information, and the C library's own
#: (a memcpy the program called is the program's store).
_IN_LIBRARY = re.compile(r"\(in (?P<lib>[^()]+)\)$")
_C_LIBRARY = re.compile(r"^(libc|ld-linux[^/]*)\.so")


def _library(frames: tuple[str, ...]) -> str | None:
    """The library a store was made in: its innermost frame outside the C library, when
    that frame is in a shared library (``??? (in /usr/lib/.../libpmemobj.so.1.0.0)``)."""
    for f in frames:
        m = _IN_LIBRARY.search(f)
        if m is None:
            return None
        lib = os.path.basename(m["lib"])
        if not _C_LIBRARY.match(lib):
            return lib
    return None


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
    #: How many log records it covers (the simulator's ``Finding.count``): as many as
    #: ``records``.
    count: int
    #: The first log record it concerns, and how many records it concerns.
    record: int | None
    records: int
    #: For an overwritten store: where the earlier store was made.
    earlier: str | None = None
    #: Every log record it concerns (``record`` is the first), in log order.
    concerns: tuple[int, ...] = field(default=(), compare=False, repr=False)
    #: For stores: the library every one of them was made in (their frames' innermost one
    #: outside the C library), if they were, e.g. ``libpmemobj.so.1.0.0``.
    inside: str | None = None
    #: The bytes its operations concern, when fewer than ``length`` (the span from the
    #: first to the last of them), and in how many separate ranges.
    covered: int | None = None
    ranges: int = 1

    def __str__(self) -> str:
        what = "FLUSH" if self.kind in _FLUSH_KINDS else "STORE"
        at = f"{what} #{self.record}" if self.record is not None else "a record"
        if self.records > 1:
            at += f" (and {self.records - 1} more)"
        if self.source:
            at += f" at {self.source}"
        if self.inside:
            at += f" (made inside {self.inside}"
            if self.kind != "store overwrote a store that was not yet durable" and (
                self.inside.startswith("libpmemobj")
            ):
                # libpmemobj leaves stores to its runtime state unflushed on purpose and
                # tells pmemcheck (VALGRIND_PMC_SET_CLEAN, or by removing the mapping):
                # pmemcheck's summary then counts none of them; its store log cannot say.
                # (libpmem2 keeps no state in the mapping: its stores are the program's.)
                at += ", which may have told pmemcheck they need no flush; the log cannot say"
            at += ")"
        where = f"{os.path.basename(self.file)} +0x{self.offset:x}, {self.length} byte(s)"
        if self.covered is not None:  # 12 flushes far apart do not flush 4 MiB
            end = self.offset + self.length
            where = (
                f"{os.path.basename(self.file)} +0x{self.offset:x} to +0x{end:x}, "
                f"{self.covered} byte(s) in {self.ranges} range(s)"
            )
        text = f"{self.severity}: {self.kind}: {at}, {where}"
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
            "inside": self.inside,
            "covered": self.length if self.covered is None else self.covered,
        }


def _where(prov: Any) -> str | None:
    locs = locations(tuple(prov))  # pmemsim's own frames (a store without frames) drop out
    return str(locs[0]) if locs else None


def log_findings(replay: Replay, findings: list[Finding]) -> list[LogFinding]:
    """The simulator's findings in the log's terms (one pass over the log).

    A finding knows each store or flush it covers by its sequence number
    (:attr:`Finding.places`, each store of a run of them on its own); the replay numbers the
    log's stores, flushes and deep syncs in log order as the simulator does (fences take no
    number), so each is found here by its number: the records a finding names and counts
    are the operations it covers, never another store of the same line at the same place.
    """
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
    # seq -> the findings covering that operation.
    at: dict[int, list[int]] = {}
    for j, (f, _, _) in enumerate(wanted):
        for seq, _, _ in f.occurrences():
            at.setdefault(seq, []).append(j)
    concerned: list[list[int]] = [[] for _ in wanted]
    #: per finding: the library all its stores were made in so far ("" once one was not)
    inside: list[str | None] = [None] * len(wanted)
    seq = 0
    for op, step, _ in replay.conversions():
        if step is None:
            continue
        if step.kind != STORE and not (step.kind in (FLUSH, DEEP) and step.arg):
            continue  # a fence, a marker, an empty flush: no number
        seq += 1
        for j in at.get(seq, ()):
            concerned[j].append(op.index)
            if step.kind == STORE and inside[j] != "":
                lib = _library(getattr(op, "frames", ()))
                inside[j] = lib if lib and inside[j] in (None, lib) else ""
    out = []
    for j, (f, pool, where) in enumerate(wanted):
        records = concerned[j]
        covered, ranges = f.covered()
        out.append(
            LogFinding(
                f.kind.value,
                f.kind.severity,
                replay.pools[pool].path,
                f.offset,
                f.length,
                where,
                len(records),
                records[0] if records else None,
                len(records),
                _where(f.other) if f.other else None,
                tuple(records),
                inside[j] or None,
                covered if covered < f.length else None,
                ranges,
            )
        )
    return out
