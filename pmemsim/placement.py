"""Where a new part map goes: reservations, coalescing and first fit.

Every part map lives in a *region*: a reservation made for it alone (grown in place when a
later part coalesces with it, deleted with its last part map), or the user's
:class:`~pmemsim.Reservation`, shared by every set configured with it and filled first fit.
This module chooses the range for a part (:func:`choose`), records the part map once the
backend has mapped it (:func:`attach`), and forgets it again (:func:`detach`,
:func:`split`, :func:`teardown`). It knows nothing of events or data; the set calls it.
"""

from __future__ import annotations

import threading
import weakref
from bisect import insort
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .backend import ADDRESS_LIMIT, Backend, BackendReservation, Pmem2Failure, beyond_address_space
from .enums import Coalescing
from .errors import ErrorCode, error_for

if TYPE_CHECKING:
    from .config import Reservation
    from .part import MappedPart

__all__ = ["Holder", "Region", "Slot", "attach", "choose", "detach", "split", "teardown"]


class Region:
    """A reservation as the set layer uses it: owned (made for one part map) or the user's."""

    __slots__ = ("__weakref__", "holders", "owned", "raw")

    def __init__(self, raw: BackendReservation, owned: bool) -> None:
        self.raw = raw
        self.owned = owned
        #: The part maps in it, in address order; of every set using it (a user's).
        self.holders: list[Holder] = []

    @property
    def end(self) -> int:
        return self.raw.address + self.raw.size


class Holder:
    """The state of one part map: its extent, its parts and its region."""

    __slots__ = ("address", "parts", "refs", "region", "removed", "size")

    def __init__(self, address: int, size: int, parts: list[MappedPart], region: Region) -> None:
        self.address = address
        self.size = size
        self.parts = parts
        self.region = region
        #: Live PartMap handles to it.
        self.refs = 0
        self.removed = False

    @property
    def end(self) -> int:
        return self.address + self.size


#: Held while a user's region changes (choose-map-attach, detach, split, closing the
#: reservation): it is shared by every set configured with it, and sets by threads.
lock = threading.RLock()


def _by_address(h: Holder) -> int:
    return h.address


#: One Region per user reservation, shared by every set configured with it, so that first
#: fit and coalescing see the part maps of the other sets too.
_USER_REGIONS: weakref.WeakKeyDictionary[Reservation, Region] = weakref.WeakKeyDictionary()


def user_region(reservation: Reservation) -> Region:
    # Under the lock: two threads first using a reservation at once (a set made in one, the
    # reservation closed in another) made a Region each, so first fit in one did not see the
    # other's part maps (two maps on one range: INVALID_PMEM2_MAP) and close counted none.
    with lock:
        region = _USER_REGIONS.get(reservation)
        if region is None:
            region = _USER_REGIONS[reservation] = Region(reservation.raw, owned=False)
        return region


@dataclass(slots=True)
class Slot:
    """The range chosen for a part, and how to give it back if the map fails."""

    region: Region
    address: int
    #: The part map this part extends (coalescing), or None for a new part map.
    grows: Holder | None = None
    #: Bytes the region was extended by to make room.
    grew: int = 0

    def undo(self) -> None:
        """The backend could not map the part: leave the regions as they were."""
        raw = self.region.raw
        if self.grew:
            raw.shrink(raw.size - self.grew, self.grew)
        elif self.grows is None and self.region.owned:
            raw.delete()


def choose(
    backend: Backend,
    coalescing: Coalescing,
    previous: Holder | None,
    user: Region | None,
    length: int,
) -> Slot:
    """Where ``length`` bytes go: after ``previous`` when coalescing, else first fit in the
    user's region or a new region of their own.

    FULL coalescing that finds the range after ``previous`` taken fails with
    CANNOT_COALESCE_PARTS; OPPORTUNISTIC then places the part as NONE would.
    """
    if coalescing != Coalescing.NONE and previous is not None and not previous.removed:
        slot = _after(previous, length)
        if slot is not None:
            return slot
        if coalescing == Coalescing.FULL:
            raise error_for(
                ErrorCode.CANNOT_COALESCE_PARTS,
                f"the range after the part map at 0x{previous.address:x} is taken",
            )
    if user is not None:
        return Slot(user, first_fit(user, length))
    try:
        if length >= ADDRESS_LIMIT:
            raise beyond_address_space(length)
        raw = backend.reserve(length)
    except Pmem2Failure as exc:
        raise exc.as_error(ErrorCode.INVALID_PMEM2_MAP, "cannot reserve address space") from None
    return Slot(Region(raw, owned=True), raw.address)


def first_fit(region: Region, length: int) -> int:
    """The lowest address in ``region`` with ``length`` free bytes."""
    pos = region.raw.address
    for h in region.holders:
        if h.address - pos >= length:
            return pos
        pos = max(pos, h.end)
    if region.end - pos >= length:
        return pos
    raise error_for(
        ErrorCode.CANNOT_FIT_PART_MAP,
        f"no free range of {length} bytes in the reservation at 0x{region.raw.address:x}",
    )


def _after(prev: Holder, length: int) -> Slot | None:
    """The range right after ``prev``, if it is free (an owned region grows to hold it)."""
    region = prev.region
    start, end = prev.end, prev.end + length
    if any(h is not prev and h.address < end and start < h.end for h in region.holders):
        return None
    grew = max(0, end - region.end)
    if grew:
        if not region.owned or grew >= ADDRESS_LIMIT:
            return None
        try:
            region.raw.extend(grew)
        except Pmem2Failure:
            return None
    return Slot(region, start, prev, grew)


def attach(slot: Slot, part: MappedPart, holders: list[Holder]) -> Holder:
    """Record ``part``, mapped at ``slot``: a new part map in ``holders`` (address order), or
    the part map it extends."""
    h = slot.grows
    if h is not None:
        h.parts.append(part)
        h.size += part.length
        return h
    h = Holder(part.address, part.length, [part], slot.region)
    insort(slot.region.holders, h, key=_by_address)
    insort(holders, h, key=_by_address)
    return h


def detach(h: Holder, holders: list[Holder]) -> None:
    """Forget an unmapped part map; its own region goes with it."""
    h.removed = True
    holders.remove(h)
    region = h.region
    region.holders.remove(h)
    if region.owned and not region.holders:
        region.raw.delete()


def split(h: Holder, remaining: list[MappedPart], holders: list[Holder]) -> None:
    """``h`` keeps only ``remaining``: its first contiguous run; every later run becomes a
    part map of its own."""
    runs: list[list[MappedPart]] = []
    for p in remaining:
        if runs and runs[-1][-1].end == p.address:
            runs[-1].append(p)
        else:
            runs.append([p])
    first, *rest = runs
    h.parts = first
    h.address = first[0].address
    h.size = first[-1].end - h.address
    for run in rest:
        nh = Holder(run[0].address, run[-1].end - run[0].address, run, h.region)
        insort(h.region.holders, nh, key=_by_address)
        insort(holders, nh, key=_by_address)


def teardown(holders: list[Holder]) -> list[MappedPart]:
    """Unmap every part map (deleting a set: no deep flush, no events); returns the parts."""
    parts = []
    for h in list(holders):
        for p in h.parts:
            p.unmap()
            parts.append(p)
        if h.region.owned:
            detach(h, holders)
        else:
            with lock:
                detach(h, holders)
    return parts
