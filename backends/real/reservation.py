"""libpmem2 virtual-memory reservations: where every part map is placed.

The set layer gives each part map a reservation of its own, or places it first-fit in a
user's reservation; coalescing extends the reservation in place, which libpmem2 does only
if the range after it is free (PMEM2_E_MAP_EXISTS otherwise), as on a real machine.

libpmem2 maps more than it is asked for and unmaps only what it was asked for
(address_space.py): a reservation whose padding is known (``padded_end``) gives that back
itself after libpmem2's delete.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from pmemsim.backend import BackendReservation, Pmem2Failure
from pmemsim.errors import Pmem2Code

from . import address_space
from .errors import check

if TYPE_CHECKING:
    from ._ffi import Binding

__all__ = ["RealReservation"]


class _Extent:
    """What libpmem2 really has mapped for a reservation: up to ``end`` (None: unknown, so
    nothing is unmapped beyond what libpmem2 unmaps itself), growing and shrinking in steps
    of ``align`` (libpmem2 fixes it when it creates the reservation)."""

    __slots__ = ("align", "end")

    def __init__(self, end: int | None, align: int) -> None:
        self.end = end
        self.align = align

    def round(self, address: int) -> int:
        return -(-address // self.align) * self.align


def _delete_reservation(lib: Any, box: Any, extent: _Extent) -> int:
    # Fails harmlessly (VM_RESERVATION_NOT_EMPTY) if maps are somehow left: the range then
    # stays reserved, which is safe.
    rsv = box[0]
    stop = int(lib.pmem2_vm_reservation_get_address(rsv)) + int(
        lib.pmem2_vm_reservation_get_size(rsv)
    )
    ret = int(lib.pmem2_vm_reservation_delete(box))
    if ret == 0 and extent.end is not None:
        address_space.unmap(stop, extent.end - stop)
    return ret


class RealReservation(BackendReservation):
    """A pmem2 vm reservation; ``padded_end`` is where libpmem2's mapping of it ends, when
    the backend knows (it placed the reservation itself)."""

    def __init__(self, b: Binding, box: Any, padded_end: int | None = None) -> None:
        self.b = b
        self.ptr = box[0]
        self.deleted = False
        self._box = box
        # Maps in it: mapped, and doomed but still in use by a call in another thread
        # (map.py); a delete waits for the last of those.
        self._lock = threading.Lock()
        self._mapped = 0
        self._doomed = 0
        self._delete_when_empty = False
        size = int(b.lib.pmem2_vm_reservation_get_size(self.ptr))
        self._extent = _Extent(padded_end, address_space.alignment(size))
        self._finalizer = weakref.finalize(self, _delete_reservation, b.lib, box, self._extent)
        # At exit the set layer deletes what it still holds; nothing else needs releasing,
        # and a late delete from here would leave the set layer a dangling pointer.
        self._finalizer.atexit = False
        self._refresh()

    def __repr__(self) -> str:
        return f"<RealReservation 0x{self.address:x} +{self.size}>"

    def _refresh(self) -> None:
        lib = self.b.lib
        self.address = int(lib.pmem2_vm_reservation_get_address(self.ptr))
        self.size = int(lib.pmem2_vm_reservation_get_size(self.ptr))

    def _live(self) -> None:
        if self.deleted or not self._finalizer.alive:
            raise Pmem2Failure(
                Pmem2Code.INVALID_ADDRESS_REQUEST_TYPE, "the reservation was deleted"
            )

    def extend(self, size: int) -> None:
        self._live()
        b = self.b
        check(b, b.lib.pmem2_vm_reservation_extend(self.ptr, size), "pmem2_vm_reservation_extend")
        self._refresh()
        ext = self._extent
        if ext.end is not None:
            # libpmem2 maps up to the next alignment boundary when the new end passes its
            # mapping's end.
            ext.end = max(ext.end, ext.round(self.address + self.size))

    def shrink(self, offset: int, size: int) -> None:
        self._live()
        b = self.b
        ret = b.lib.pmem2_vm_reservation_shrink(self.ptr, offset, size)
        check(b, ret, "pmem2_vm_reservation_shrink")
        self._refresh()
        ext = self._extent
        if ext.end is not None:
            if offset == 0:
                # From the front libpmem2 forgets part of its own tail; what it still has
                # mapped is no longer certain, so leave it be.
                ext.end = None
            else:
                ext.end = min(ext.end, ext.round(self.address + self.size))

    def delete(self) -> None:
        if self.deleted or not self._finalizer.alive:
            return
        with self._lock:
            if self._mapped:
                raise Pmem2Failure(
                    Pmem2Code.VM_RESERVATION_NOT_EMPTY, "the reservation still holds maps"
                )
            self.deleted = True
            if self._doomed:
                self._delete_when_empty = True  # when the last unmapped map is gone
                return
        self._delete()

    def _delete(self) -> None:
        b = self.b
        ret = _delete_reservation(b.lib, self._box, self._extent)
        self._finalizer.detach()
        check(b, ret, "pmem2_vm_reservation_delete")

    def map_made(self) -> None:
        with self._lock:
            self._mapped += 1

    def map_doomed(self) -> None:
        """A map in it is unmapped, as far as anyone may use it (map.py)."""
        with self._lock:
            self._mapped -= 1
            self._doomed += 1

    def map_gone(self) -> None:
        """... and now really unmapped."""
        with self._lock:
            self._doomed -= 1
            last = self._delete_when_empty and not self._doomed and not self._mapped
            if last:
                self._delete_when_empty = False
        if last:
            self._delete()
