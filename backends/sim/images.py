"""What a crash right now could leave behind, one persistence unit at a time.

At a crash every unit (a 64-byte line; a 4 KiB page, or a 512-byte sector with tearing, at
PAGE granularity) independently keeps its durable content plus:

* the first ``k`` of its pending write-back atoms, for any ``0 <= k <= n`` (the prefix rule:
  stores to one line reach the media in program order, and any prefix may have been evicted);
* any subset of its pending non-temporal atoms (no order among them before a fence).

Each unit's *options* are those choices deduplicated by the bytes they produce, ordered from
"everything persisted" to "nothing unguaranteed persisted" by how many atoms are lost. Units
are independent, so the number of distinct crash images is the product of the option counts
and an image is one option per unit. Option 0 of every unit is the all-persisted image.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pmemsim.errors import ErrorCode, InvalidArgumentError
from pmemsim.provenance import Frame
from pmemsim.snapshot import Snapshot

from .medium import ATOM, PAGE_MASK, PAGE_SHIFT, Medium, Rec

if TYPE_CHECKING:
    from .machine import Machine

__all__ = ["Atom", "CrashImage", "CrashState", "LineState", "Option", "Unit", "collect_units"]

#: Above this many candidate choices in one unit, enumeration refuses rather than stall.
MAX_UNIT_CHOICES = 1 << 20


@dataclass(frozen=True, slots=True)
class Atom:
    """One 8-byte-aligned piece of a store (a store is cut at every 8-byte boundary)."""

    seq: int
    offset: int
    data: bytes
    nontemporal: bool
    frame: Frame


@dataclass(frozen=True, slots=True)
class Option:
    """One way a unit can look after a crash."""

    #: How many of the unit's write-back atoms persisted (a prefix).
    kept: int
    #: Per group of non-temporal atoms at the same bytes: index of the one that landed last,
    #: or -1 if none did.
    nt: tuple[int, ...]
    #: Atoms lost relative to "everything persisted".
    lost: int


@dataclass(frozen=True, slots=True)
class LineState:
    """The in-flight state of one persistence unit."""

    source: str
    offset: int
    #: Address in the simulator's address space, if the unit is mapped.
    address: int | None
    #: "dirty" (some store not flushed), "flushed" (all flushed, fence pending).
    status: str
    #: Write-back atoms not yet guaranteed. In persistency.md terms: guaranteed stores are
    #: folded into the media, so lo is 0 and hi is this number.
    stores: int
    #: Of those, how many a fence would make durable now.
    flushed: int
    #: Non-temporal atoms awaiting a fence.
    nontemporal: int
    #: Distinct contents this unit can have after a crash now.
    images: int


class Unit:
    """One persistence unit with stores in flight, and its deduplicated crash options."""

    __slots__ = (
        "_floor",
        "_options",
        "flushed",
        "medium_index",
        "nt_groups",
        "offset",
        "size",
        "wb",
    )

    def __init__(self, medium_index: int, offset: int, size: int) -> None:
        self.medium_index = medium_index
        self.offset = offset
        self.size = size
        self.wb: list[Atom] = []
        self.nt_groups: list[list[Atom]] = []
        self.flushed = 0
        self._options: list[Option] | None = None
        self._floor = 0

    def add(self, atom: Atom) -> None:
        if not atom.nontemporal:
            self.wb.append(atom)
            return
        for g in self.nt_groups:
            if g[0].offset == atom.offset and len(g[0].data) == len(atom.data):
                g.append(atom)
                return
        self.nt_groups.append([atom])

    def applied(self, option: Option) -> list[Atom]:
        """The atoms an option keeps, in program order.

        Within a group of non-temporal atoms at the same bytes only the last one to land
        decides the content, so applying that one alone is enough.
        """
        chosen = list(self.wb[: option.kept])
        for g, pick in zip(self.nt_groups, option.nt, strict=True):
            if pick >= 0:
                chosen.append(g[pick])
        chosen.sort(key=lambda a: a.seq)
        return chosen

    def lost_atoms(self, option: Option) -> list[Atom]:
        """The atoms an option loses: the write-back suffix and each group's later atoms."""
        lost = list(self.wb[option.kept :])
        for g, pick in zip(self.nt_groups, option.nt, strict=True):
            lost.extend(g[pick + 1 :])
        lost.sort(key=lambda a: a.seq)
        return lost

    def content(self, base: bytes, option: Option) -> bytes:
        buf = bytearray(base)
        for a in self.applied(option):
            o = a.offset - self.offset
            buf[o : o + len(a.data)] = a.data
        return bytes(buf)

    def options(self, base: bytes) -> list[Option]:
        if self._options is None:
            self._options, self._floor = self._compute(base)
        return self._options

    def floor(self, base: bytes) -> int:
        """Index of the option whose content is ``base``: nothing unguaranteed persisted.

        Usually the last option, but not always: when losing every atom gives the same bytes
        as a choice that loses fewer (``x = 1; x = 0``), deduplication keeps the latter, which
        may sort anywhere.
        """
        self.options(base)
        return self._floor

    def _compute(self, base: bytes) -> tuple[list[Option], int]:
        n = len(self.wb)
        if not self.nt_groups:
            return self._prefix_options(base, n)
        total = (n + 1) * math.prod(len(g) + 1 for g in self.nt_groups)
        if total > MAX_UNIT_CHOICES:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"unit at +0x{self.offset:x} has {total} crash choices; too many to enumerate",
            )
        candidates = []
        for picks in itertools.product(*[range(len(g) - 1, -2, -1) for g in self.nt_groups]):
            nt_lost = sum(
                len(g) if p < 0 else len(g) - 1 - p
                for g, p in zip(self.nt_groups, picks, strict=True)
            )
            for k in range(n, -1, -1):
                candidates.append(Option(k, tuple(picks), (n - k) + nt_lost))
        candidates.sort(key=lambda o: o.lost)
        seen: set[bytes] = set()
        out: list[Option] = []
        floor = 0
        for opt in candidates:
            c = self.content(base, opt)
            if c not in seen:
                seen.add(c)
                if c == base:
                    floor = len(out)
                out.append(opt)
        return out, floor

    def _prefix_options(self, base: bytes, n: int) -> tuple[list[Option], int]:
        # Walk k = 0..n once, keeping a digest per distinct content; large units (pages) use
        # a 128-bit digest so memory stays one entry per option.
        buf = bytearray(base)
        small = self.size <= 64

        def key() -> bytes:
            return bytes(buf) if small else hashlib.blake2b(buf, digest_size=16).digest()

        base_key = key()
        first_k: dict[bytes, int] = {base_key: 0}
        for k, a in enumerate(self.wb, 1):
            o = a.offset - self.offset
            buf[o : o + len(a.data)] = a.data
            first_k[key()] = k  # a later k with equal content wins: it loses fewer atoms
        ks = sorted(set(first_k.values()), reverse=True)
        return [Option(k, (), n - k) for k in ks], ks.index(first_k[base_key])


class CrashState:
    """The crash images possible at one moment; a frozen copy, safe to keep."""

    def __init__(
        self,
        machine: Machine,
        media: Sequence[Medium],
        barrier: int,
        address_of: Callable[[Medium, int], int | None] | None = None,
    ) -> None:
        self.barrier = barrier
        self.media = list(media)
        self._address_of = address_of
        self.snapshots: list[Snapshot] = []
        # Pages holding pending stores, as loads see them: the all-persisted overlay.
        self._visible: list[dict[int, bytes]] = []
        self.units: list[Unit] = []
        self._bases: list[bytes] = []
        for mi, medium in enumerate(self.media):
            pages = medium.snapshot_pages()
            self.snapshots.append(
                Snapshot(medium.label, medium.size, pages, medium.loader, medium.source_ident)
            )
            overlay: dict[int, bytes] = {}
            for _, off, data, _, _, _ in medium.pending:
                for p in range(off >> PAGE_SHIFT, ((off + len(data) - 1) >> PAGE_SHIFT) + 1):
                    if p not in overlay:
                        overlay[p] = bytes(medium.visible[p])
            self._visible.append(overlay)
            units = collect_units(machine, medium, mi)
            for idx in sorted(units):
                u = units[idx]
                self.units.append(u)
                self._bases.append(medium.read_media(u.offset, u.size))

    # -- questions ---------------------------------------------------------------------

    def image_count(self) -> int:
        """Distinct crash images (by content) possible at this moment."""
        return math.prod(len(u.options(b)) for u, b in zip(self.units, self._bases, strict=True))

    def lines(self) -> list[LineState]:
        out = []
        for u, base in zip(self.units, self._bases, strict=True):
            m = self.media[u.medium_index]
            nt = sum(len(g) for g in u.nt_groups)
            status = "flushed" if u.flushed == len(u.wb) else "dirty"
            addr = self._address_of(m, u.offset) if self._address_of else None
            out.append(
                LineState(
                    m.label, u.offset, addr, status, len(u.wb), u.flushed, nt, len(u.options(base))
                )
            )
        return out

    def images(self) -> Iterator[CrashImage]:
        """Every distinct image, all-persisted first, in a fixed order."""
        counts = [len(u.options(b)) for u, b in zip(self.units, self._bases, strict=True)]
        for combo in itertools.product(*[range(c) for c in counts]):
            yield CrashImage(self, tuple((i, o) for i, o in enumerate(combo) if o))

    def image(self, deviations: Sequence[tuple[int, int]] = ()) -> CrashImage:
        """The image with unit ``i`` at option ``o`` for each ``(i, o)``; others persisted."""
        clean = []
        for i, o in sorted(deviations):
            if not 0 <= i < len(self.units):
                raise InvalidArgumentError(ErrorCode.EINVAL, f"no unit {i} at this crash point")
            opts = self.units[i].options(self._bases[i])
            clean.append((i, min(max(o, 0), len(opts) - 1)))
        return CrashImage(self, tuple((i, o) for i, o in clean if o))

    def persisted_image(self) -> CrashImage:
        """Everything visible persisted."""
        return CrashImage(self, ())

    def guaranteed_image(self) -> CrashImage:
        """Nothing that is not guaranteed persisted (every unit holds its durable content)."""
        floors = (u.floor(b) for u, b in zip(self.units, self._bases, strict=True))
        return CrashImage(self, tuple((i, f) for i, f in enumerate(floors) if f))

    def option(self, unit: int, index: int) -> Option:
        return self.units[unit].options(self._bases[unit])[index]


class CrashImage:
    """One crash image: each deviating unit's chosen option; every other unit persisted."""

    __slots__ = ("deviations", "state")

    def __init__(self, state: CrashState, deviations: tuple[tuple[int, int], ...]) -> None:
        self.state = state
        #: ``(unit index, option index)`` for units that did not persist everything.
        self.deviations = deviations

    def __repr__(self) -> str:
        return f"<CrashImage barrier={self.state.barrier} deviations={self.deviations}>"

    def lost(self) -> list[tuple[int, Atom]]:
        """``(unit index, atom)`` for every atom this image loses."""
        out = []
        for i, o in self.deviations:
            u = self.state.units[i]
            for a in u.lost_atoms(self.state.option(i, o)):
                out.append((i, a))
        return out

    def _medium_index(self, which: object) -> int:
        media = self.state.media
        if which is None:
            if len(media) != 1:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL,
                    f"this crash state spans {len(media)} sources; say which one",
                )
            return 0
        for i, m in enumerate(media):
            if which is m or which == m.label or getattr(which, "ident", None) == m.source_ident:
                return i
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{which!r} is not in this crash state")

    def snapshot(self, which: object = None) -> Snapshot:
        """The image of one source as a snapshot a fresh set can map (via Source.from_image)."""
        mi = self._medium_index(which)
        snap = self.state.snapshots[mi]
        pages: dict[int, bytes | bytearray] = dict(snap.pages)
        patched: dict[int, bytearray] = {
            p: bytearray(content) for p, content in self.state._visible[mi].items()
        }
        for i, o in self.deviations:
            u = self.state.units[i]
            if u.medium_index != mi:
                continue
            data = u.content(self.state._bases[i], self.state.option(i, o))
            start = u.offset & PAGE_MASK
            patched[u.offset >> PAGE_SHIFT][start : start + u.size] = data
        pages.update(patched)
        return Snapshot(snap.label, snap.size, pages, snap.loader, snap.source_ident)

    def read(self, offset: int, length: int, which: object = None) -> bytes:
        return self.snapshot(which).read(offset, length)


def collect_units(machine: Machine, medium: Medium, mi: int) -> dict[int, Unit]:
    """The units of ``medium`` with stores in flight, keyed by unit index."""
    units: dict[int, Unit] = {}
    for rec, flushed in medium.flushed_parts(machine.pending_flushes(medium)):
        _cut(units, mi, medium.unit, rec, flushed)
    return units


def _cut(
    units: dict[int, Unit], mi: int, unit: int, rec: Rec, flushed: list[tuple[int, int]]
) -> None:
    """Split one pending record into atoms, filed under their units.

    ``flushed``: the parts of the record a pending flush covers (whole lines, so an atom is
    either inside one or outside all of them).
    """
    seq, off, data, nt, code, lasti = rec
    pos = 0
    n = len(data)
    while pos < n:
        a_off = off + pos
        take = min(ATOM - (a_off % ATOM), n - pos)
        idx = a_off // unit
        u = units.get(idx)
        if u is None:
            u = units[idx] = Unit(mi, idx * unit, unit)
        u.add(Atom(seq, a_off, bytes(data[pos : pos + take]), nt, (code, lasti)))
        if flushed and not nt and any(s <= a_off < e for s, e in flushed):
            u.flushed += 1
        pos += take
