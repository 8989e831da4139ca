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

An *unsafe shutdown* (ADR fails) may also lose what was fenced but never deep-flushed: in that
mode every unit written since its last deep flush has one more option, *reverted*, holding its
content as of that deep flush (and none of its pending stores). Only the two ends are offered
(everything fenced kept, or all of it lost), not each intermediate drain of the controller's
queue: memory then stays proportional to the pages written, not to the stores.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from pmemsim._dataclass import replace
from pmemsim._records import NamedTuple
from pmemsim.digest import blake2b
from pmemsim.errors import ErrorCode, InvalidArgumentError
from pmemsim.provenance import Frame
from pmemsim.snapshot import Snapshot

from .medium import ATOM, PAGE, PAGE_MASK, PAGE_SHIFT, Medium, Rec
from .pagemap import PageMap

if TYPE_CHECKING:
    from .device import SimDevice
    from .machine import Machine

__all__ = [
    "Atom",
    "CrashImage",
    "CrashMode",
    "CrashState",
    "LineState",
    "Option",
    "Unit",
    "collect_units",
]


class CrashMode(enum.Enum):
    """What kind of crash a :class:`CrashState` describes."""

    #: Power fails and ADR works: whatever was fenced (reached the memory controller) survives.
    POWER_FAILURE = "power_failure"
    #: ADR fails too: data fenced but not deep-flushed may be lost, and every device's
    #: unsafe-shutdown count is one higher after the crash.
    UNSAFE_SHUTDOWN = "unsafe_shutdown"


#: Above this many candidate choices in one unit, enumeration refuses rather than stall.
MAX_UNIT_CHOICES = 1 << 20


class Atom(NamedTuple):
    """One 8-byte-aligned piece of a store (a store is cut at every 8-byte boundary)."""

    seq: int
    offset: int
    data: bytes
    nontemporal: bool
    frame: Frame


class Option(NamedTuple):
    """One way a unit can look after a crash."""

    #: How many of the unit's write-back atoms persisted (a prefix).
    kept: int
    #: Per group of non-temporal atoms at the same bytes: index of the one that landed last,
    #: or -1 if none did.
    nt: tuple[int, ...]
    #: Atoms lost relative to "everything persisted".
    lost: int
    #: Unsafe shutdown only: the unit lost everything since its last deep flush, fenced data
    #: included (``kept`` is 0 and no non-temporal atom landed).
    reverted: bool = False


class LineState(NamedTuple):
    """The in-flight state of one persistence unit."""

    source: str
    offset: int
    #: Address in the simulator's address space, if the unit is mapped.
    address: int | None
    #: "dirty" (some store not flushed), "flushed" (all flushed, fence pending), or, in an
    #: unsafe-shutdown state only, "fenced" (nothing pending, fenced data not deep-flushed).
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
    #: Unsafe-shutdown states only: the unit holds fenced data that no deep flush covered,
    #: so the crash may revert it to its last deep-flushed content.
    reverts: bool = False


class Unit:
    """One persistence unit with stores in flight, and its deduplicated crash options."""

    __slots__ = (
        "_floor",
        "_options",
        "deep",
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
        #: Unsafe shutdown: the content as of the last deep flush, if fenced data came since.
        self.deep: bytes | None = None
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
        """The atoms an option loses: the write-back suffix and each group's later atoms.

        A reverted option loses every pending atom (and fenced data, which has no atoms).
        """
        if option.reverted:
            return sorted(self.wb + [a for g in self.nt_groups for a in g], key=lambda a: a.seq)
        lost = list(self.wb[option.kept :])
        for g, pick in zip(self.nt_groups, option.nt, strict=True):
            lost.extend(g[pick + 1 :])
        lost.sort(key=lambda a: a.seq)
        return lost

    def content(self, base: bytes, option: Option) -> bytes:
        if option.reverted:
            assert self.deep is not None
            return self.deep
        buf = bytearray(base)
        for a in self.applied(option):
            o = a.offset - self.offset
            buf[o : o + len(a.data)] = a.data
        return bytes(buf)

    def options(self, base: bytes) -> list[Option]:
        if self._options is None:
            self._options, self._floor = self._compute(base)
            if self.deep is not None:
                self._add_reverted(base)
        return self._options

    def _add_reverted(self, base: bytes) -> None:
        """Unsafe shutdown: the deep-flushed content is one more option, and the floor."""
        assert self._options is not None and self.deep is not None
        contents = [self.content(base, o) for o in self._options]
        if self.deep in contents:  # e.g. fenced stores that put the old bytes back
            self._floor = contents.index(self.deep)
            return
        nt = sum(len(g) for g in self.nt_groups)
        rev = Option(0, (-1,) * len(self.nt_groups), len(self.wb) + nt, True)
        self._options.append(rev)
        self._floor = len(self._options) - 1

    def floor(self, base: bytes) -> int:
        """Index of the option whose content is ``base``: nothing unguaranteed persisted.

        Usually the last option, but not always: when losing every atom gives the same bytes
        as a choice that loses fewer (``x = 1; x = 0``), deduplication keeps the latter, which
        may sort anywhere. After an unsafe shutdown only deep-flushed data is guaranteed: the
        floor of a unit with fenced data since is its deep-flushed content.
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
            return bytes(buf) if small else blake2b(buf, digest_size=16).digest()

        base_key = key()
        first_k: dict[bytes, int] = {base_key: 0}
        for k, a in enumerate(self.wb, 1):
            o = a.offset - self.offset
            buf[o : o + len(a.data)] = a.data
            first_k[key()] = k  # a later k with equal content wins: it loses fewer atoms
        ks = sorted(set(first_k.values()), reverse=True)
        return [Option(k, (), n - k) for k in ks], ks.index(first_k[base_key])


class CrashState:
    """The crash images possible at one moment; a frozen copy, safe to keep.

    ``mode`` says which crash: a power failure (the default) or an unsafe shutdown, where
    data fenced but not deep-flushed may be lost too and every device's unsafe-shutdown count
    goes up by one (the images' snapshots carry the new count, see :meth:`CrashImage.snapshot`).
    """

    def __init__(
        self,
        machine: Machine,
        media: Sequence[Medium],
        barrier: int,
        address_of: Callable[[Medium, int], int | None] | None = None,
        *,
        mode: CrashMode | str = CrashMode.POWER_FAILURE,
        device_of: Callable[[Medium], SimDevice | None] | None = None,
    ) -> None:
        try:
            self.mode = CrashMode(mode)
        except ValueError:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"crash mode must be one of {[m.value for m in CrashMode]}, not {mode!r}",
            ) from None
        self.barrier = barrier
        self.media = list(media)
        self._address_of = address_of
        #: One per medium; the pages are a PageMap shared with the states before and after.
        self.snapshots: list[Snapshot] = []
        #: Device id -> its unsafe-shutdown count as the restarted machine reads it.
        self.usc: dict[bytes, int] = {}
        self.units: list[Unit] = []
        self._bases: list[bytes] = []
        #: Per medium: page number -> indexes of the units in it (the pages with something
        #: in flight, whose all-persisted content is not the media's).
        self._unit_pages: list[dict[int, list[int]]] = []
        # Built on first use: per (medium, page), its all-persisted content; per medium, the
        # media with those pages in (what every image of this state starts from).
        self._persisted: dict[tuple[int, int], bytes] = {}
        self._persisted_maps: dict[int, PageMap[bytes | bytearray]] = {}
        unsafe = self.mode is CrashMode.UNSAFE_SHUTDOWN
        for mi, medium in enumerate(self.media):
            pages = medium.snapshot_pages()
            dev = device_of(medium) if device_of is not None else None
            if dev is not None:
                self.usc[dev.id] = dev.usc + 1 if unsafe else dev.usc
            self.snapshots.append(
                Snapshot(
                    medium.label,
                    medium.size,
                    pages,
                    medium.loader,
                    medium.source_ident,
                    device_id=None if dev is None else dev.id,
                    usc=None if dev is None else self.usc[dev.id],
                    badblocks=tuple(medium.badblocks),
                    unsafe_shutdown=unsafe,
                )
            )
            units = collect_units(machine, medium, mi)
            if unsafe:
                _mark_reverts(medium, mi, units, pages)
            by_page: dict[int, list[int]] = {}
            for idx in sorted(units):
                u = units[idx]
                by_page.setdefault(u.offset >> PAGE_SHIFT, []).append(len(self.units))
                self.units.append(u)
                self._bases.append(medium.read_media(u.offset, u.size))
            self._unit_pages.append(by_page)

    @property
    def unsafe_shutdown(self) -> bool:
        return self.mode is CrashMode.UNSAFE_SHUTDOWN

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
            if not u.wb and not nt:
                status = "fenced"  # only fenced data, which an unsafe shutdown may revert
            out.append(
                LineState(
                    m.label,
                    u.offset,
                    addr,
                    status,
                    len(u.wb),
                    u.flushed,
                    nt,
                    len(u.options(base)),
                    u.deep is not None,
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

    def base(self, unit: int) -> bytes:
        """Unit ``unit``'s durable content (what it holds if it loses everything in flight)."""
        return self._bases[unit]

    # -- pages ---------------------------------------------------------------------------

    def units_in_page(self, page: int, medium: int = 0) -> list[int]:
        """Indexes of the units with something in flight in page ``page`` of a medium."""
        return self._unit_pages[medium].get(page, [])

    def persisted_page(self, page: int, medium: int = 0) -> bytes | bytearray | None:
        """Page ``page`` of the all-persisted image, or None where the page was never
        written (it holds the medium's base content: its loader's, or zeros).

        Frozen: the same object for as long as the page does not change, in this state and
        the ones after it, so caching by identity is sound."""
        units = self._unit_pages[medium].get(page)
        frozen = self.snapshots[medium].pages.get(page)
        if not units:
            return frozen
        key = (medium, page)
        hit = self._persisted.get(key)
        if hit is None:
            buf = bytearray(self.snapshots[medium].page(page) if frozen is None else frozen)
            for i in units:
                u, base = self.units[i], self._bases[i]
                o = u.offset & PAGE_MASK
                buf[o : o + u.size] = u.content(base, u.options(base)[0])
            hit = self._persisted[key] = bytes(buf)
        return hit

    def changed_pages(self, since: CrashState | None, medium: int = 0) -> list[int]:
        """Pages whose all-persisted content may differ between ``since`` and this state
        (a superset: media pages compared by identity, plus the pages either state has
        stores in flight in), ascending. ``since=None``: every page this state holds.

        Costs what changed between the two states, not the pool."""
        m = self.media[medium]
        pages = self.snapshots[medium].pages
        j = None
        if since is not None:
            j = next((k for k, other in enumerate(since.media) if other is m), None)
        if since is None or j is None:
            out = set(pages)
        else:
            before = since.snapshots[j].pages
            out = set(PageMap.of(pages).diff(PageMap.of(before)))
            out.update(since._unit_pages[j])
        out.update(self._unit_pages[medium])
        return sorted(out)

    def _persisted_map(self, medium: int) -> PageMap[bytes | bytearray]:
        hit = self._persisted_maps.get(medium)
        if hit is None:
            changes = {p: self.persisted_page(p, medium) for p in self._unit_pages[medium]}
            pages = PageMap.of(self.snapshots[medium].pages)
            hit = self._persisted_maps[medium] = pages.updated(changes)
        return hit


class CrashImage:
    """One crash image: each deviating unit's chosen option; every other unit persisted."""

    __slots__ = ("deviations", "state")

    def __init__(self, state: CrashState, deviations: tuple[tuple[int, int], ...]) -> None:
        self.state = state
        #: ``(unit index, option index)`` for units that did not persist everything.
        self.deviations = deviations

    def __repr__(self) -> str:
        return f"<CrashImage barrier={self.state.barrier} deviations={self.deviations}>"

    def reverted(self) -> list[int]:
        """Units this image reverts to their last deep-flushed content (unsafe shutdown only):
        they lose fenced data as well as every pending atom."""
        return [i for i, o in self.deviations if self.state.option(i, o).reverted]

    def lost(self) -> list[tuple[int, Atom]]:
        """``(unit index, atom)`` for every atom this image loses (for a reverted unit, its
        pending atoms: the fenced data it lost is in :meth:`reverted`)."""
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
            if which is m:
                return i
        # A Source by its ident; a medium only as itself: its own ident counts the
        # simulator's media, not sources, and may equal another medium's source_ident.
        ident = None if isinstance(which, Medium) else getattr(which, "ident", None)
        for i, m in enumerate(media):
            if which == m.label or (ident is not None and ident == m.source_ident):
                return i
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{which!r} is not in this crash state")

    def snapshot(self, which: object = None) -> Snapshot:
        """The image of one source as a snapshot a fresh set can map (via Source.from_image).

        Its pages share everything but the deviating ones with the crash state's."""
        mi = self._medium_index(which)
        state = self.state
        pages = state._persisted_map(mi)
        if self.deviations:
            pages = pages.updated(self._patched(mi))
        return replace(state.snapshots[mi], pages=pages)

    def page(self, page: int, which: object = None) -> bytes:
        """One page of the image (cheap: the deviations in that page only)."""
        mi = self._medium_index(which)
        patched = self._patched(mi, page)
        if page in patched:
            return bytes(patched[page])
        content = self.state.persisted_page(page, mi)
        return self.state.snapshots[mi].page(page) if content is None else bytes(content)

    def _patched(self, mi: int, only: int | None = None) -> dict[int, bytearray]:
        """The pages of medium ``mi`` (or just page ``only``) that deviations change."""
        state = self.state
        out: dict[int, bytearray] = {}
        for i, o in self.deviations:
            u = state.units[i]
            p = u.offset >> PAGE_SHIFT
            if u.medium_index != mi or (only is not None and p != only):
                continue
            page = out.get(p)
            if page is None:
                start = state.persisted_page(p, mi)
                if start is None:
                    start = state.snapshots[mi].page(p)
                page = out[p] = bytearray(start)
            at = u.offset & PAGE_MASK
            page[at : at + u.size] = u.content(state._bases[i], state.option(i, o))
        return out

    def read(self, offset: int, length: int, which: object = None) -> bytes:
        return self.snapshot(which).read(offset, length)


def _mark_reverts(
    medium: Medium, mi: int, units: dict[int, Unit], pages: Mapping[int, bytes | bytearray]
) -> None:
    """Unsafe shutdown: give every unit whose media content changed since its last deep flush
    that content, adding the units that have nothing pending."""
    if not medium.deep:
        return
    size = medium.unit
    for p, old in medium.deep.items():
        cur = pages.get(p)
        if cur is None or cur == old:
            continue
        base = p << PAGE_SHIFT
        for o in range(0, PAGE, size):
            was = old[o : o + size]
            if cur[o : o + size] != was:
                idx = (base + o) // size
                u = units.get(idx)
                if u is None:
                    u = units[idx] = Unit(mi, idx * size, size)
                u.deep = bytes(was)


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
