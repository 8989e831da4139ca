"""Address space for libpmem2's vm reservations, and the padding libpmem2 forgets to free.

libpmem2 (1.12.1, and PMDK's sources to their end) maps every vm reservation larger than
asked: ``align_up(size, align) + align`` bytes, ``align`` being 2 MiB (1 GiB from 2 GiB up),
so that it can align the address; it extends and shrinks that padded range, but
``pmem2_vm_reservation_delete`` unmaps only the ``[address, address + size)`` the user sees.
Every reservation made and deleted so leaves a PROT_NONE mapping of about 2 MiB behind: one
more line in /proc/self/maps each time, until vm.max_map_count (65,530 here) is reached and
no mmap in the whole process succeeds any more.

So the backend places each reservation itself, at an address aligned as libpmem2 aligns
(the padding then lies wholly after the reservation, with a known extent), follows that
extent through extends and shrinks, and unmaps what is left after a delete. It does this
only once it has checked, once per process, that the installed libpmem2 leaves exactly the
predicted padding behind (:func:`padding_is_predictable`); a libpmem2 that behaves otherwise
is left alone, leaking as before, rather than having the backend unmap a range that may not
be its own.
"""

from __future__ import annotations

import mmap
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._ffi import Binding

__all__ = [
    "alignment",
    "free_address",
    "is_mapped",
    "padded_end",
    "padding_is_predictable",
    "unmap",
]

PAGE = mmap.PAGESIZE
_MIB2 = 2 << 20
_GIB = 1 << 30
_PROT_NONE = 0
# Linux's values (x86-64 and AArch64 alike); Python's mmap module lacks MAP_NORESERVE.
_MAP_NORESERVE = 0x4000
_MAP_FAILED = (1 << 64) - 1

_LIBC_DECLARATIONS = """
uintptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, long offset);
int munmap(uintptr_t addr, size_t length);
int mincore(uintptr_t addr, size_t length, unsigned char *vec);
"""

_lock = threading.Lock()
_libc: Any = None
_ffi: Any = None
_predictable: bool | None = None


def _c() -> tuple[Any, Any]:
    global _libc, _ffi
    with _lock:
        if _libc is None:
            import cffi  # type: ignore[import-untyped]

            ffi = cffi.FFI()
            ffi.cdef(_LIBC_DECLARATIONS)
            _libc, _ffi = ffi.dlopen(None), ffi
    return _libc, _ffi


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def alignment(size: int) -> int:
    """The alignment libpmem2 picks for a reservation of ``size`` bytes."""
    return _GIB if size >= 2 * _GIB else _MIB2


def padded_end(address: int, size: int) -> int:
    """The end of what libpmem2 maps for a reservation of ``size`` bytes at ``address``."""
    align = alignment(size)
    return address + _align_up(size, align) + align


def free_address(length: int, align: int) -> int | None:
    """An ``align``-aligned address with ``length`` free bytes after it, right now (another
    thread may take it before the caller does), or None if the kernel has no such range."""
    libc, _ = _c()
    total = length + align
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
    base = int(libc.mmap(0, total, _PROT_NONE, flags, -1, 0))
    if base == _MAP_FAILED:
        return None
    libc.munmap(base, total)
    return _align_up(base, align)


def is_mapped(address: int, length: int) -> bool:
    """Whether every page of ``[address, address + length)`` is mapped (mincore succeeds
    only then)."""
    libc, ffi = _c()
    vec = ffi.new("unsigned char[]", max(1, _align_up(length, PAGE) // PAGE))
    return int(libc.mincore(address, length, vec)) == 0


def unmap(address: int, length: int) -> None:
    """Give ``[address, address + length)`` back to the kernel."""
    if length > 0:
        libc, _ = _c()
        libc.munmap(address, length)


def padding_is_predictable(b: Binding) -> bool:
    """Whether this libpmem2 maps and leaves behind exactly the padding :func:`padded_end`
    predicts (checked once per process, with one page-sized reservation)."""
    global _predictable
    if _predictable is None:
        try:
            _predictable = _probe(b)
        except Exception:  # no cffi libc, no mincore: leave libpmem2's mappings alone
            _predictable = False
    return _predictable


def _probe(b: Binding) -> bool:
    lib = b.lib
    end = padded_end(0, PAGE)
    address = free_address(end + PAGE, alignment(PAGE))
    if address is None:
        return False
    box = b.ffi.new("struct pmem2_vm_reservation **")
    if lib.pmem2_vm_reservation_new(box, address, PAGE):
        return False
    padded = is_mapped(address, end) and not is_mapped(address + end, PAGE)
    if lib.pmem2_vm_reservation_delete(box):
        return False
    left = not is_mapped(address, PAGE) and is_mapped(address + PAGE, end - PAGE)
    if padded and left:
        unmap(address + PAGE, end - PAGE)
        return True
    return False
