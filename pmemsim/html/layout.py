"""Which rows and columns a timeline shows, so that thousands of operations over hundreds
of lines stay legible and the file stays small.

Rows are persistence units the workload stored to, in address order. The lines of the
failure (in flight at the crash) always get a row of their own; neighbours whose whole
history is the same share one row; untouched stretches of addresses between them show as a
thin gap row; and when there are still too many rows, the other lines are grouped into
ranges summarised by their most pending state.

Columns are operations in program order. A short run shows every operation; a long one
keeps what the failure needs (the stores, flushes and fences of the lines in flight at the
crash from the oldest store still in flight, the operations around the crash, lost stores,
lint findings, the markers under way) and folds every other stretch into one column.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .model import Run
from .timeline import RANK, History, Key

__all__ = ["Column", "Layout", "Row", "layout"]

#: Runs up to this many operations show them all.
FULL = 160
#: At most this many operation columns (plus folds).
MAX_COLUMNS = 320
#: At most about this many rows.
MAX_ROWS = 48
#: Operations kept on either side of the crash.
AROUND = 4


@dataclass
class Row:
    keys: list[Key]
    label: str
    #: "line", "group" (several lines summarised) or "gap" (untouched lines).
    kind: str = "line"
    #: A line of the failure: in flight at the crash.
    focus: bool = False
    title: str = ""


@dataclass
class Column:
    """Operations ``[start, end)``: one operation, or a fold of several."""

    start: int
    end: int
    fold: bool = False

    @property
    def count(self) -> int:
        return self.end - self.start


@dataclass
class Layout:
    rows: list[Row]
    columns: list[Column]
    #: Operation -> the lines it acts on (stores: the lines written; flushes: the lines of
    #: its range that the run ever wrote).
    lines_of: dict[int, list[Key]] = field(default_factory=dict)


def _label(run: Run, key: Key) -> str:
    prefix = f"{run.media[key[0]]} " if len(run.media) > 1 else ""
    return f"{prefix}+0x{key[1]:x}"


def lines_of(run: Run, history: History) -> dict[int, list[Key]]:
    out: dict[int, list[Key]] = {}
    for key, stores in history.stores.items():
        for i in stores:
            out.setdefault(i, []).append(key)
    by_medium: dict[int, list[int]] = {}
    for m, off in history.keys:
        by_medium.setdefault(m, []).append(off)
    for i, op in enumerate(run.ops):
        if op.kind in ("flush", "deep_flush") and op.medium in by_medium:
            offs = by_medium[op.medium]
            unit = run.units[op.medium]
            lo = op.offset - op.offset % unit
            a = bisect.bisect_left(offs, lo)
            b = bisect.bisect_left(offs, op.offset + op.length)
            out[i] = [(op.medium, o) for o in offs[a:b]]
    for keys in out.values():
        keys.sort()
    return out


def _signature(history: History, key: Key) -> tuple[object, ...]:
    return (tuple(history.changes.get(key, ())), tuple(history.stores.get(key, ())))


def rows(run: Run, history: History, focus: set[Key], max_rows: int = MAX_ROWS) -> list[Row]:
    keys = history.keys
    # Runs of neighbouring lines with one history share a row (a memset, a zeroed region).
    merged: list[list[Key]] = []
    for key in keys:
        tail = merged[-1] if merged else None
        if (
            tail is not None
            and key not in focus
            and tail[-1] not in focus
            and tail[-1][0] == key[0]
            and key[1] - tail[-1][1] == history.unit(key)
            and _signature(history, key) == _signature(history, tail[0])
        ):
            tail.append(key)
        else:
            merged.append([key])
    # Still too many: group the lines between the failure's lines into ranges.
    others = sum(1 for g in merged if g[0] not in focus)
    budget = max(max_rows - (len(merged) - others), 8)
    if others > budget:
        regrouped: list[list[Key]] = []
        stretch: list[list[Key]] = []

        def close() -> None:
            if not stretch:
                return
            share = max(1, round(len(stretch) * budget / others))
            size = -(-len(stretch) // share)
            for s in range(0, len(stretch), size):
                regrouped.append([k for g in stretch[s : s + size] for k in g])
            stretch.clear()

        for g in merged:
            if g[0] in focus or (stretch and stretch[-1][0][0] != g[0][0]):
                close()
            if g[0] in focus:
                regrouped.append(g)
            else:
                stretch.append(g)
        close()
        merged = regrouped
    out: list[Row] = []
    prev: Key | None = None
    for g in merged:
        first, last = g[0], g[-1]
        if prev is not None and prev[0] == first[0]:
            unit = history.unit(first)
            gap = (first[1] - prev[1]) // unit - 1
            if gap > 0:
                out.append(
                    Row(
                        [],
                        f"\u22ef {gap} line{'s' if gap > 1 else ''}",
                        "gap",
                        title=f"+0x{prev[1] + unit:x} to +0x{first[1] - 1:x}: never written",
                    )
                )
        if len(g) == 1:
            out.append(Row(g, _label(run, first), "line", first in focus))
        else:
            span = last[1] + history.unit(last) - first[1]
            contiguous = span == len(g) * history.unit(first)
            out.append(
                Row(
                    g,
                    f"{_label(run, first)}\u2026{last[1]:x}",
                    "group",
                    title=f"{len(g)} lines{'' if contiguous else ' (with gaps)'}: "
                    f"{_label(run, first)} to +0x{last[1] + history.unit(last) - 1:x}",
                )
            )
        prev = last
    return out


def columns(
    run: Run,
    history: History,
    lines: dict[int, list[Key]],
    crash: int | None,
    focus: set[Key],
    keep: set[int],
    hints: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[Column]:
    """``keep``: operations that must be shown; ``hints``: shown when there is room."""
    n = len(run.ops)
    quiet = _quiet(run, history)
    if n <= FULL:
        # (A lint finding's operations stay even in a quiet stretch: their mark is where
        # the report is read.)
        shown = (set(range(n)) - quiet) | keep | hints
    elif crash is None:
        shown = set(range(FULL // 2)) | set(range(n - FULL // 2, n)) | keep
        shown |= set(sorted(hints)[: max(0, MAX_COLUMNS - len(shown))])
    else:
        pieces = history.in_flight.get(crash, {})
        oldest = min((p.op for k in focus for p in pieces.get(k, [])), default=crash)
        near = set(range(max(0, crash - AROUND), min(n, crash + AROUND)))
        window = set()
        for i in range(max(0, oldest - 1), min(n, crash + 1)):
            op = run.ops[i]
            if op.kind in ("fence", "deep_flush") or any(k in focus for k in lines.get(i, ())):
                window.add(i)
        history_of_focus = set()
        for k in focus:
            before = [i for i in history.stores.get(k, []) if i < oldest]
            history_of_focus.update(before[-2:])
        lo = max(0, oldest - 1)
        window -= quiet
        shown = keep | near | window | history_of_focus | {i for i in hints if lo <= i <= crash}
        if len(shown) > MAX_COLUMNS:
            # The ones that must stay, then the nearest to the crash.
            must = keep | near
            rest = sorted(shown - must, key=lambda i: abs(i - crash))
            shown = must | set(rest[: max(0, MAX_COLUMNS - len(must))])
        shown |= _marker_ends(run, shown, crash)
    out: list[Column] = []
    room = MAX_COLUMNS - len(shown)
    i = 0
    while i < n:
        if i in shown:
            out.append(Column(i, i + 1))
            i += 1
            continue
        j = i
        while j < n and j not in shown:
            j += 1
        if j - i <= 2 and (j - i <= room or n <= FULL):
            # A fold would hide no more than it takes.
            out += [Column(k, k + 1) for k in range(i, j)]
            room -= j - i
        else:
            out.append(Column(i, j, fold=True))
        i = j
    return out


def _quiet(run: Run, history: History) -> set[int]:
    """Stretches of at least 4 flushes and fences that acted on no line (a program's fences
    before it wrote anything, say): nothing to see there."""
    out: set[int] = set()
    stretch: list[int] = []
    for i, op in enumerate([*run.ops, None]):
        if (
            op is not None
            and op.kind in ("fence", "flush", "deep_flush")
            and i not in history.active
        ):
            stretch.append(i)
            continue
        if len(stretch) >= 4:
            out.update(stretch)
        stretch = []
    return out


def _marker_ends(run: Run, shown: set[int], crash: int) -> set[int]:
    """The BEGIN and END of every marked operation under way at the crash."""
    stack: list[int] = []
    under_way: list[int] = []
    for i, op in enumerate(run.ops):
        if i == crash:
            under_way = list(stack)
        if op.kind != "marker":
            continue
        if op.begin:
            stack.append(i)
        elif stack:
            stack.pop()
    out = set(under_way)
    for b in under_way:
        depth = 0
        for i in range(b, len(run.ops)):
            op = run.ops[i]
            if op.kind == "marker":
                depth += 1 if op.begin else -1
                if depth == 0:
                    out.add(i)
                    break
    return out


def layout(
    run: Run,
    history: History,
    crash: int | None,
    focus: set[Key],
    keep: set[int],
    hints: set[int] = frozenset(),  # type: ignore[assignment]
) -> Layout:
    lines = lines_of(run, history)
    return Layout(
        rows(run, history, focus),
        columns(run, history, lines, crash, focus, keep, hints),
        lines,
    )


def row_state(history: History, row: Row, column: int) -> str:
    """The state of a row after operation ``column``: a group shows its most pending line."""
    best = ""
    for k in row.keys:
        st = history.state(k, column)
        if RANK[st] > RANK[best]:
            best = st
    return best
