"""libpmem2 virtual-memory reservations: where every part map is placed.

The set layer gives each part map a reservation of its own, or places it first-fit in a
user's reservation; coalescing extends the reservation in place, which libpmem2 does only
if the range after it is free (PMEM2_E_MAP_EXISTS otherwise), as on a real machine.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pmemsim.backend import BackendReservation, Pmem2Failure
from pmemsim.errors import Pmem2Code

from .errors import check

if TYPE_CHECKING:
    from ._ffi import Binding

__all__ = ["RealReservation"]


def _delete_reservation(lib: Any, box: Any) -> None:
    # Fails harmlessly (VM_RESERVATION_NOT_EMPTY) if maps are somehow left: the range then
    # stays reserved, which is safe.
    lib.pmem2_vm_reservation_delete(box)


class RealReservation(BackendReservation):
    def __init__(self, b: Binding, box: Any) -> None:
        self.b = b
        self.ptr = box[0]
        self.deleted = False
        self._finalizer = weakref.finalize(self, _delete_reservation, b.lib, box)
        # At exit the set layer deletes what it still holds; nothing else needs releasing,
        # and a late delete from here would leave the set layer a dangling pointer.
        self._finalizer.atexit = False
        self._box = box
        self._refresh()

    def __repr__(self) -> str:
        return f"<RealReservation 0x{self.address:x} +{self.size}>"

    def _refresh(self) -> None:
        lib = self.b.lib
        self.address = int(lib.pmem2_vm_reservation_get_address(self.ptr))
        self.size = int(lib.pmem2_vm_reservation_get_size(self.ptr))

    def _live(self) -> None:
        if self.deleted or not self._finalizer.alive:
            raise Pmem2Failure(Pmem2Code.INVALID_ADDRESS_REQUEST_TYPE, "reservation deleted")

    def extend(self, size: int) -> None:
        self._live()
        b = self.b
        check(b, b.lib.pmem2_vm_reservation_extend(self.ptr, size), "pmem2_vm_reservation_extend")
        self._refresh()

    def shrink(self, offset: int, size: int) -> None:
        self._live()
        b = self.b
        ret = b.lib.pmem2_vm_reservation_shrink(self.ptr, offset, size)
        check(b, ret, "pmem2_vm_reservation_shrink")
        self._refresh()

    def delete(self) -> None:
        if self.deleted or not self._finalizer.alive:
            return
        b = self.b
        check(b, b.lib.pmem2_vm_reservation_delete(self._box), "pmem2_vm_reservation_delete")
        self.deleted = True
        self._finalizer.detach()
