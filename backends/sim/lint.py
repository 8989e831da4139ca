"""Findings in the spirit of pmemcheck, each pointing at the user's code.

They are gathered at fences (where the simulator looks at one epoch of stores and flushes
anyway) and, for stores still not durable and the overwrites and flushes of the epoch no
fence has ended yet, when asked. Findings with the same kind and the same code location are
merged, so a loop that forgets a flush yields one finding with a count: the number of
operations (stores, flushes, fences) it covers, each once however often it was noted. A
finding also keeps each operation merged into it (:attr:`Finding.places`: a store's or
flush's sequence number and bytes, a fence's number), so that a report in other terms (a
log's records, the operations an HTML timeline draws) can name exactly the operations it
concerns.
"""

from __future__ import annotations

import enum
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

from pmemsim._dataclass import dataclass, field
from pmemsim.provenance import Provenance, describe

__all__ = ["Finding", "FindingKind", "LintLog"]


class FindingKind(enum.Enum):
    #: A store that no flush has covered (still only in the cache).
    UNFLUSHED_STORE = "store never flushed"
    #: A store that was flushed but no fence has ordered the flush yet.
    UNFENCED_STORE = "store flushed but never fenced"
    #: A non-temporal store that no fence has drained.
    UNDRAINED_NT_STORE = "non-temporal store never fenced"
    #: A flush of lines that hold no store issued since they were last persistent.
    CLEAN_FLUSH = "flush of clean lines"
    #: A flush of lines already flushed in the same epoch with no store in between.
    REDUNDANT_FLUSH = "repeated flush"
    #: A store to bytes whose previous store was not yet durable.
    OVERWRITTEN_STORE = "store overwrote a store that was not yet durable"
    #: A fence with no flush and no non-temporal store before it.
    EMPTY_FENCE = "fence with nothing to order"

    @property
    def severity(self) -> str:
        return "error" if self in _ERRORS else "warning"


_ERRORS = {
    FindingKind.UNFLUSHED_STORE,
    FindingKind.UNFENCED_STORE,
    FindingKind.UNDRAINED_NT_STORE,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint finding: what, where in the source (medium offsets) and where in the code."""

    kind: FindingKind
    source: str
    offset: int
    length: int
    provenance: Provenance
    #: For OVERWRITTEN_STORE: where the overwritten store was issued.
    other: Provenance = ()
    #: How many operations it covers: stores (each store of a run of them), flushes or
    #: fences, each counted once.
    count: int = 1
    #: Each operation it covers as ``seq, start, end`` (flat, by number): a store's or
    #: flush's sequence number and the bytes of it the finding is about; for a fence
    #: (EMPTY_FENCE), which takes no sequence number, its count among the machine's fences
    #: and ``0, 0``. A tapped operation (Machine.tap) carries the same number as ``Op.seq``.
    places: Sequence[int] = field(default=(), compare=False, repr=False)

    def occurrences(self) -> Iterator[tuple[int, int, int]]:
        """``(seq, start, end)`` of each operation it covers, in program order."""
        p = self.places
        for k in range(0, len(p) - 2, 3):
            yield p[k], p[k + 1], p[k + 2]

    def covered(self) -> tuple[int, int]:
        """The bytes its stores or flushes concern, and in how many separate ranges: fewer
        than ``length`` (the span from the first to the last) when they lie apart."""
        spans = sorted((s, e) for _, s, e in self.occurrences() if e > s)
        if not spans:  # (a fence's: no bytes)
            return self.length, 1
        total, ranges = 0, 0
        lo, hi = spans[0]
        for s, e in spans[1:]:
            if s > hi:
                total, ranges, lo = total + hi - lo, ranges + 1, s
            hi = max(hi, e)
        return total + hi - lo, ranges + 1

    @property
    def location(self) -> str:
        return describe(self.provenance)

    def __str__(self) -> str:
        where = f"+0x{self.offset:x}, {self.length} bytes"
        covered, ranges = self.covered()
        if covered < self.length:  # 12 flushes far apart do not flush 4 MiB
            end = self.offset + self.length
            where = f"+0x{self.offset:x} to +0x{end:x}, {covered} bytes in {ranges} ranges"
        text = f"{self.kind.severity}: {self.kind.value} at {self.location} ({self.source} {where}"
        if self.count > 1:
            text += f", {self.count} times"
        text += ")"
        if self.other:
            text += f"; earlier store at {describe(self.other)}"
        return text


@dataclass(slots=True)
class _Entry:
    kind: FindingKind
    source: str
    offset: int
    end: int
    provenance: Provenance
    other: Provenance
    #: Each operation noted, ``seq, start, end`` (flat; the same one may come twice).
    places: array[int] = field(default_factory=lambda: array("q"))


@dataclass(slots=True)
class LintLog:
    """Findings merged by (kind, code location, earlier location)."""

    _entries: dict[tuple[object, ...], _Entry] = field(default_factory=dict)

    def add(
        self,
        kind: FindingKind,
        source: str,
        offset: int,
        length: int,
        provenance: Provenance,
        other: Provenance = (),
        seq: int = 0,
        run: Sequence[int] | None = None,
    ) -> None:
        """One occurrence; ``seq``: the operation it is about, by its number (see
        :attr:`Finding.places`). A store record may be a run of stores (see
        Medium.store_wb): ``run``, the boundaries of its stores, numbered from ``seq`` on;
        the occurrence covers each of them that overlaps its bytes."""
        assert seq > 0, "every occurrence names its operation"
        end = offset + length
        key = (kind, source, provenance[:1], other[:1])
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry(kind, source, offset, end, provenance, other)
        else:
            e.offset = min(e.offset, offset)
            e.end = max(e.end, end)
        if run is None:
            e.places.extend((seq, offset, end))
        else:
            first = max(bisect_right(run, offset) - 1, 0)
            for k in range(first, bisect_left(run, end, first)):
                e.places.extend((seq + k, max(offset, run[k]), min(end, run[k + 1])))

    def merged(self, other: LintLog) -> LintLog:
        """A new log: this one's occurrences, then ``other``'s (neither changes)."""
        out = LintLog()
        for log in (self, other):
            for key, e in log._entries.items():
                mine = out._entries.get(key)
                if mine is None:
                    out._entries[key] = _Entry(
                        e.kind,
                        e.source,
                        e.offset,
                        e.end,
                        e.provenance,
                        e.other,
                        array("q", e.places),
                    )
                else:
                    mine.offset = min(mine.offset, e.offset)
                    mine.end = max(mine.end, e.end)
                    mine.places.extend(e.places)
        return out

    def __bool__(self) -> bool:
        return bool(self._entries)

    def findings(self) -> list[Finding]:
        out = []
        for e in self._entries.values():
            places = _distinct(e.places)
            out.append(
                Finding(
                    e.kind,
                    e.source,
                    e.offset,
                    e.end - e.offset,
                    e.provenance,
                    e.other,
                    len(places) // 3,
                    places,
                )
            )
        out.sort(key=lambda f: (f.kind.severity != "error", f.source, f.offset, f.kind.name))
        return out

    def clear(self) -> None:
        self._entries.clear()


def _distinct(places: array[int]) -> array[int]:
    """Each operation of ``places`` once, by sequence number, with all its bytes noted (an
    operation may be noted twice: a store whose bytes on either side of a flushed line are
    unflushed, an overwrite that two fences saw)."""
    spans: dict[int, tuple[int, int]] = {}
    for k in range(0, len(places) - 2, 3):
        seq, start, end = places[k], places[k + 1], places[k + 2]
        had = spans.get(seq)
        spans[seq] = (start, end) if had is None else (min(had[0], start), max(had[1], end))
    out = array("q")
    for seq in sorted(spans):
        out.extend((seq, *spans[seq]))
    return out
