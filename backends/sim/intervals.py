"""Sets of half-open integer ranges, kept sorted and merged.

The simulator reasons about ranges (a 1 MiB copy is one record, a 1 MiB flush one range), so
that large operations cost a handful of list operations instead of one per cache line.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = ["IntervalSet"]


class IntervalSet:
    """Disjoint, non-adjacent half-open ranges ``[start, end)``."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for s, e in ranges or ():
            self.add(s, e)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"IntervalSet({list(self)!r})"

    def total(self) -> int:
        return sum(e - s for s, e in self)

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        # First range that ends at or after start (touching ranges merge).
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end or not self._starts:
            return
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        j = bisect_left(starts, end)
        if i >= j:
            return
        new_s: list[int] = []
        new_e: list[int] = []
        if starts[i] < start:
            new_s.append(starts[i])
            new_e.append(start)
        if ends[j - 1] > end:
            new_s.append(end)
            new_e.append(ends[j - 1])
        starts[i:j] = new_s
        ends[i:j] = new_e

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end

    def covers(self, start: int, end: int) -> bool:
        i = bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] <= start and self._ends[i] >= end

    def intersection(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` inside the set, in address order."""
        out = []
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        n = len(starts)
        while i < n and starts[i] < end:
            out.append((max(start, starts[i]), min(end, ends[i])))
            i += 1
        return out

    def split(self, start: int, end: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``[start, end)`` cut into (parts inside the set, parts outside), in address order."""
        inside = self.intersection(start, end)
        outside = []
        pos = start
        for s, e in inside:
            if s > pos:
                outside.append((pos, s))
            pos = e
        if pos < end:
            outside.append((pos, end))
        return inside, outside
