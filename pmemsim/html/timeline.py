"""Line states over time, and what a failing image kept of each line.

:class:`History` follows a run's operations with the persistency rules of docs/simulator.md
(the prefix rule per line, flushes that take effect at the next fence, non-temporal stores
that evict their lines and land at a fence, eADR at BYTE, msync at PAGE) and keeps, per
persistence unit, when it became dirty, flushed (waiting for a fence) or persisted, and
the stores still in flight at chosen positions. Those are compared with the simulator's own
crash state where the run crashed, so a timeline that disagrees with the checked run says so
instead of drawing something else.

:func:`fate` lays a crash image over it: for every line in flight, how many of its stores
the image kept, and whether a store was torn at an 8-byte atom.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..enums import Granularity
from .model import Crash, Operation, Run

__all__ = ["DIRTY", "FLUSHED", "PERSISTED", "Fate", "History", "Key", "LineFate", "Piece", "fate"]

DIRTY = "dirty"
FLUSHED = "flushed"
PERSISTED = "persisted"
#: Line states from the least to the most in need of a flush (for summarising a group).
RANK = {"": 0, PERSISTED: 1, FLUSHED: 2, DIRTY: 3}

ATOM = 8
LINE = 64
PAGE = 4096

#: ``(medium, offset of the persistence unit)``.
Key = tuple[int, int]


@dataclass(slots=True)
class Piece:
    """One 8-byte-aligned atom of a store still in flight."""

    op: int
    offset: int
    size: int
    nontemporal: bool
    flushed: bool = False


@dataclass
class History:
    """Per line: its state after each operation (as changes) and the operations on it."""

    run: Run
    #: Line -> ``[(operation index, state after it), ...]`` whenever the state changes.
    changes: dict[Key, list[tuple[int, str]]] = field(default_factory=dict)
    #: Line -> indices of the stores that wrote it.
    stores: dict[Key, list[int]] = field(default_factory=dict)
    #: Position -> the atoms in flight there, per line (positions asked for).
    in_flight: dict[int, dict[Key, list[Piece]]] = field(default_factory=dict)
    #: Operations that acted on some line (a fence with nothing to order does not).
    active: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, run: Run, positions: Iterable[int] = ()) -> History:
        h = cls(run)
        _Follower(h, set(positions)).follow()
        return h

    @property
    def keys(self) -> list[Key]:
        return sorted(self.changes)

    def state(self, key: Key, column: int) -> str:
        """The line's state after operation ``column`` ("" if never written by then)."""
        ch = self.changes.get(key)
        if not ch:
            return ""
        i = bisect.bisect_right(ch, (column, "\uffff"))
        return ch[i - 1][1] if i else ""

    def unit(self, key: Key) -> int:
        return self.run.units[key[0]]


class _Follower:
    def __init__(self, h: History, positions: set[int]) -> None:
        self.h = h
        self.run = h.run
        self.g = h.run.granularity
        self.positions = positions
        self.lines: dict[Key, list[Piece]] = {}
        self.flush_unit = PAGE if self.g == Granularity.PAGE else LINE

    def follow(self) -> None:
        ops = self.run.ops
        for i, op in enumerate(ops):
            if i in self.positions:
                self._snapshot(i)
            touched = self._apply(i, op)
            if touched:
                self.h.active.add(i)
            for key in touched:
                self._note(key, i)
        if len(ops) in self.positions:
            self._snapshot(len(ops))

    def _snapshot(self, position: int) -> None:
        self.h.in_flight[position] = {
            k: [Piece(p.op, p.offset, p.size, p.nontemporal, p.flushed) for p in v]
            for k, v in self.lines.items()
            if v
        }

    def _status(self, key: Key) -> str:
        pieces = self.lines.get(key)
        if not pieces:
            return PERSISTED
        if any(not p.nontemporal and not p.flushed for p in pieces):
            return DIRTY
        return FLUSHED

    def _note(self, key: Key, i: int) -> None:
        st = self._status(key)
        ch = self.h.changes.setdefault(key, [])
        if not ch or ch[-1][1] != st:
            ch.append((i, st))

    def _apply(self, i: int, op: Operation) -> set[Key]:
        if op.kind == "store":
            return self._store(i, op)
        if op.kind == "flush":
            if self.g == Granularity.BYTE:
                return set()  # eADR: nothing to write back
            at_once = self.g == Granularity.PAGE or self.run.clflush
            return self._flush(op, drop=at_once)
        if op.kind == "fence":
            return set() if self.g == Granularity.PAGE else self._fence()
        if op.kind == "deep_flush":
            if self.g == Granularity.PAGE:
                return self._flush(op, drop=True)
            touched = self._flush(op, drop=False) if self.g != Granularity.BYTE else set()
            return touched | self._fence()
        return set()

    def _lines_in(self, medium: int, lo: int, hi: int) -> list[Key]:
        return [k for k, v in self.lines.items() if v and k[0] == medium and lo <= k[1] < hi]

    def _align(self, op: Operation) -> tuple[int, int]:
        u = self.flush_unit
        return op.offset - op.offset % u, -(-(op.offset + op.length) // u) * u

    def _store(self, i: int, op: Operation) -> set[Key]:
        unit = self.run.units[op.medium]
        nt = op.nontemporal and self.g != Granularity.PAGE
        touched: set[Key] = set()
        end = op.offset + op.length
        if self.g == Granularity.BYTE and not nt:
            # Durable once visible; it supersedes older non-temporal bytes still in flight.
            for a in range(op.offset - op.offset % unit, end, unit):
                key = (op.medium, a)
                pieces = self.lines.get(key)
                if pieces:
                    self.lines[key] = [
                        p
                        for p in pieces
                        if not (
                            p.nontemporal and op.offset <= p.offset and p.offset + p.size <= end
                        )
                    ]
                touched.add(key)
                self.h.stores.setdefault(key, []).append(i)
            return touched
        if nt and self.g != Granularity.BYTE:
            # A non-temporal store evicts its lines first: earlier stores there are flushed.
            lo, hi = self._align(op)
            for key in self._lines_in(op.medium, lo, hi):
                for p in self.lines[key]:
                    if not p.nontemporal:
                        p.flushed = True
                touched.add(key)
        a = op.offset
        while a < end:
            take = min(ATOM - a % ATOM, end - a)
            key = (op.medium, a - a % unit)
            self.lines.setdefault(key, []).append(Piece(i, a, take, nt))
            if key not in touched:
                touched.add(key)
                self.h.stores.setdefault(key, []).append(i)
            a += take
        return touched

    def _flush(self, op: Operation, drop: bool) -> set[Key]:
        lo, hi = self._align(op)
        keys = self._lines_in(op.medium, lo, hi)
        for key in keys:
            if drop:  # msync or clflush: durable at once (non-temporal stores wait)
                self.lines[key] = [p for p in self.lines[key] if p.nontemporal]
            else:
                for p in self.lines[key]:
                    if not p.nontemporal:
                        p.flushed = True
        return set(keys)

    def _fence(self) -> set[Key]:
        touched = set()
        for key, pieces in self.lines.items():
            if pieces:
                keep = [p for p in pieces if not p.flushed and not p.nontemporal]
                if len(keep) != len(pieces):
                    self.lines[key] = keep
                    touched.add(key)
        return touched


# -- a crash image over the history ------------------------------------------------------------


@dataclass
class LineFate:
    """What the failing image holds of one line that had stores in flight."""

    in_flight: int
    lost: int
    in_flight_bytes: int
    lost_bytes: int
    #: "kept" (every store in flight persisted), "lost", "torn" (a store in it persisted
    #: only some of its 8-byte atoms) or "reverted" (an unsafe shutdown took the line back
    #: to its last deep-flushed content).
    status: str


@dataclass
class Fate:
    lines: dict[Key, LineFate] = field(default_factory=dict)
    #: Store index -> "kept", "lost" or "torn", for stores with atoms in flight.
    stores: dict[int, str] = field(default_factory=dict)
    #: ``(store index, offset, size, line)`` of each atom lost.
    lost: list[tuple[int, int, int, Key]] = field(default_factory=list)
    #: Set when the recorded operations do not explain the simulator's crash state.
    mismatch: str = ""
    #: Lines in a bad block the crash's faults add (they read as zeros).
    bad: set[Key] = field(default_factory=set)


def medium_map(run: Run, state: object) -> list[int]:
    """Our medium index for each medium of a crash state."""
    media = getattr(state, "media", [])
    if not run.media_keys:
        return list(range(len(media)))
    return [run.media_keys.get(id(m), -1) for m in media]


def compare(run: Run, state: object, pieces: dict[Key, list[Piece]]) -> str:
    """Where the atoms in flight we derived differ from the simulator's crash state ("" if
    nowhere). Which of them are flushed is not compared: crash points with no store between
    them share one state, captured at the first."""
    mapping = medium_map(run, state)
    theirs: set[Key] = set()
    for u in getattr(state, "units", []):
        key = (mapping[u.medium_index], u.offset)
        if not u.wb and not u.nt_groups:
            continue  # an unsafe shutdown's fenced-only line: nothing in flight
        theirs.add(key)
        mine = pieces.get(key, [])
        wb = [p for p in mine if not p.nontemporal]
        nt = [p for p in mine if p.nontemporal]
        if [p.offset for p in wb] != [a.offset for a in u.wb]:
            return f"line +0x{u.offset:x}: {len(u.wb)} store atom(s) in flight, {len(wb)} recorded"
        if len(nt) != sum(len(g) for g in u.nt_groups):
            return f"line +0x{u.offset:x}: non-temporal atoms differ"
    extra = {k for k, v in pieces.items() if v} - theirs
    if extra:
        _, off = min(extra)
        return f"line +0x{off:x}: stores in flight that the simulator does not have"
    return ""


def fate(history: History, crash: Crash) -> Fate:
    """Which atoms the crash image kept and lost, line by line, mapped to their stores."""
    run = history.run
    state = crash.state
    pieces = history.in_flight.get(crash.position, {})
    out = Fate(mismatch=compare(run, state, pieces))
    mapping = medium_map(run, state)
    dev = dict(crash.deviations)
    kept_atoms: dict[int, int] = {}
    lost_atoms: dict[int, int] = {}
    reverted: set[Key] = set()
    for ui, u in enumerate(state.units):
        key = (mapping[u.medium_index], u.offset)
        mine = pieces.get(key, [])
        wb = [p for p in mine if not p.nontemporal]
        nt = [p for p in mine if p.nontemporal]
        opt = state.option(ui, dev.get(ui, 0))
        if opt.reverted:
            lost, kept = wb + nt, []
            reverted.add(key)
        else:
            lost, kept = wb[opt.kept :], wb[: opt.kept]
            groups: dict[tuple[int, int], list[Piece]] = {}
            for p in nt:
                groups.setdefault((p.offset, p.size), []).append(p)
            for g, pick in zip(groups.values(), opt.nt, strict=False):
                kept += g[: pick + 1]
                lost += g[pick + 1 :]
        for p in kept:
            kept_atoms[p.op] = kept_atoms.get(p.op, 0) + 1
        for p in lost:
            lost_atoms[p.op] = lost_atoms.get(p.op, 0) + 1
            out.lost.append((p.op, p.offset, p.size, key))
        out.lines[key] = LineFate(
            len(mine), len(lost), sum(p.size for p in mine), sum(p.size for p in lost), ""
        )
    for op in set(kept_atoms) | set(lost_atoms):
        if op not in lost_atoms:
            out.stores[op] = "kept"
        else:
            out.stores[op] = "torn" if op in kept_atoms else "lost"
    lost_by_line: dict[Key, set[int]] = {}
    for op, _, _, key in out.lost:
        lost_by_line.setdefault(key, set()).add(op)
    for key, lf in out.lines.items():
        ops = lost_by_line.get(key, set())
        if key in reverted:
            lf.status = "reverted"
        elif any(out.stores.get(op) == "torn" for op in ops):
            lf.status = "torn"
        elif ops:
            lf.status = "lost"
        else:
            lf.status = "kept"
    out.lost.sort()
    out.bad = _bad_lines(run, state, crash.faults, mapping)
    out.mismatch = crash.mismatch or out.mismatch or _against_report(crash, out, mapping)
    return out


def _against_report(crash: Crash, f: Fate, mapping: list[int]) -> str:
    """How the crash drawn differs from the one the checked run reported ("" if not)."""
    if crash.expected is None:
        return ""
    drawn = {k: (lf.in_flight, lf.lost) for k, lf in f.lines.items() if lf.lost}
    told = {
        (mapping[m] if m < len(mapping) else -1, off): v
        for (m, off), v in crash.expected.items()
        if v[1]
    }
    if drawn != told:
        return (
            f"the checked run lost {sum(v[1] for v in told.values())} atom(s) in "
            f"{len(told)} line(s) here, the run drawn {sum(v[1] for v in drawn.values())} in "
            f"{len(drawn)}"
        )
    return ""


SECTOR = 512


def _bad_lines(run: Run, state: object, faults: tuple[str, ...], mapping: list[int]) -> set[Key]:
    """The lines of the 512-byte sectors that ``badblock.[FILE.]SECTOR`` faults name."""
    out: set[Key] = set()
    for fault in faults:
        parts = fault.split(".")
        if parts[0] != "badblock" or len(parts) not in (2, 3):
            continue
        number = int(parts[1]) if len(parts) == 3 else 0
        if number >= len(mapping) or mapping[number] < 0:
            continue  # a file the simulator did not hold: no line of ours
        m = mapping[number]
        sector = int(parts[-1], 16)
        unit = run.units[m]
        out.update((m, a - a % unit) for a in range(sector, sector + SECTOR, min(unit, SECTOR)))
    return out
