"""One libpmem2 map: loads and stores through a memoryview, the rest through the functions
libpmem2 picked for the map (pmem2_get_memmove_fn and friends), fetched once.

The set layer has checked every address against its part maps before it gets here. A map
of a file checks one more thing before it touches memory: that the file still covers the
range. A file truncated under a live mapping makes any access to the lost pages raise
SIGBUS, which would kill the interpreter; here it is a SourceError instead.
"""

from __future__ import annotations

import mmap
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from pmemsim.backend import BackendMap
from pmemsim.enums import Granularity, MemFlag
from pmemsim.errors import ErrorCode, error_for

from .errors import direct_error, failure, not_supported

if TYPE_CHECKING:
    from ._ffi import Binding
    from .reservation import RealReservation
    from .source import OwnFd, RealSource

__all__ = ["RealFileMap", "RealMap"]

_PAGE = mmap.PAGESIZE


def _delete_map(lib: Any, box: Any) -> int:
    return int(lib.pmem2_map_delete(box))


def _unmapped(*_: object) -> NoReturn:
    raise error_for(ErrorCode.INVALID_PMEM2_MAP, "this map has been unmapped")


class _Unmapped:
    """Stands in for the memoryview after unmap: any load or store is an exception."""

    __slots__ = ()

    def __getitem__(self, key: object) -> NoReturn:
        _unmapped()

    def __setitem__(self, key: object, value: object) -> NoReturn:
        _unmapped()


_UNMAPPED: Any = _Unmapped()


class RealMap(BackendMap):
    """A map of anonymous memory (nothing can shrink under it)."""

    __slots__ = (
        "_b",
        "_box",
        "_delta",
        "_drain",
        "_finalizer",
        "_flush",
        "_memmove",
        "_memset",
        "_mv",
        "_persist",
        "address",
        "granularity",
        "owner",
        "reservation",
        "size",
    )

    def __init__(
        self, b: Binding, owner: RealSource, box: Any, reservation: RealReservation, offset: int
    ) -> None:
        lib = b.lib
        ptr = box[0]
        self._b = b
        self._box = box
        self._finalizer = weakref.finalize(self, _delete_map, lib, box)
        self._finalizer.atexit = False  # see reservation.py
        self.owner = owner
        owner.map_made()
        self.reservation = reservation
        self.address: int = int(lib.pmem2_map_get_address(ptr))
        self.size: int = int(lib.pmem2_map_get_size(ptr))
        self.granularity = Granularity(lib.pmem2_map_get_store_granularity(ptr))
        #: address - source offset
        self._delta = self.address - offset
        self._mv: Any = memoryview(b.ffi.buffer(b.ffi.cast("char *", self.address), self.size))
        self._memmove: Callable[[int, bytes, int, int], None] = lib.pmem2_get_memmove_fn(ptr)
        self._memset: Callable[[int, int, int, int], None] = lib.pmem2_get_memset_fn(ptr)
        self._flush: Callable[[int, int], None] = lib.pmem2_get_flush_fn(ptr)
        self._drain: Callable[[], None] = lib.pmem2_get_drain_fn(ptr)
        self._persist: Callable[[int, int], None] = lib.pmem2_get_persist_fn(ptr)

    def __repr__(self) -> str:
        return f"<RealMap 0x{self.address:x} +{self.size} {self.granularity.name}>"

    def read(self, addr: int, length: int) -> bytes:
        o = addr - self.address
        return bytes(self._mv[o : o + length])

    def read_mcsafe(self, addr: int, length: int) -> bytes:
        """libpmem2's machine-check-safe read of the source behind ``[addr, addr + length)``
        (anonymous memory: PMEM2_E_SOURCE_TYPE_NOT_SUPPORTED, as libpmem2 answers)."""
        if not self._finalizer.alive:
            _unmapped()
        return self.owner.pread_mcsafe(addr - self._delta, length)

    def store(self, addr: int, data: bytes, caller: FrameType) -> None:
        o = addr - self.address
        self._mv[o : o + len(data)] = data

    def memmove(self, dest: int, src: bytes, flags: MemFlag, caller: FrameType) -> None:
        self._memmove(dest, src, len(src), flags)

    def memset(self, dest: int, value: int, length: int, flags: MemFlag, caller: FrameType) -> None:
        self._memset(dest, value, length, flags)

    def flush(self, addr: int, length: int, caller: FrameType) -> None:
        self._flush(addr, length)

    def drain(self, caller: FrameType) -> None:
        self._drain()

    def persist(self, addr: int, length: int) -> None:
        """libpmem2's persist for the map (flush and drain in one call)."""
        self._persist(addr, length)

    def deep_flush(self, addr: int, length: int, caller: FrameType) -> None:
        # libpmem2 refuses a deep flush of anonymous memory (NOSUPP), which would make every
        # part map of it impossible to remove (removal deep-flushes first). Anonymous memory
        # has nothing beyond the memory controller to flush to, so a persist stands in.
        self._persist(addr, length)

    def unmap(self) -> None:
        if not self._finalizer.alive:
            return
        self._mv.release()
        self._mv = _UNMAPPED
        self._memmove = self._memset = self._flush = self._persist = _unmapped
        self._drain = _unmapped
        ret = self._finalizer()
        self._released()
        self.owner.map_gone()
        if ret:
            raise direct_error(failure(self._b, ret, "pmem2_map_delete"), "cannot unmap")

    def _released(self) -> None:
        pass


class RealFileMap(RealMap):
    """A map of a file: every access first checks that the file still covers it.

    The check is one ``lseek`` (a C-level call, no Python frame) and one comparison on the
    common path; only a range past the current end takes the precise, slower look.
    """

    __slots__ = ("_fd", "_size")

    def __init__(
        self,
        b: Binding,
        owner: RealSource,
        box: Any,
        reservation: RealReservation,
        offset: int,
        fd: OwnFd,
    ) -> None:
        super().__init__(b, owner, box, reservation, offset)
        fd.acquire()
        self._fd = fd
        self._size: Callable[[], int] = fd.size

    def _check(self, addr: int, length: int) -> None:
        # Pages wholly past the end of the file raise SIGBUS when touched (the page that
        # holds the end is fine), so the file must reach into the last page touched.
        end = addr - self._delta + length
        size = self._size()
        if length and end > -(-size // _PAGE) * _PAGE:
            raise error_for(
                ErrorCode.SOURCE_FILE_IS_TOO_SMALL,
                f"{self.owner.label} shrank to {size} bytes under its mapping; "
                f"[{addr - self._delta}, {end}) of it is gone (touching it would be SIGBUS)",
            )

    def read(self, addr: int, length: int) -> bytes:
        if addr - self._delta + length > self._size():
            self._check(addr, length)
        o = addr - self.address
        return bytes(self._mv[o : o + length])

    def read_mcsafe(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        return super().read_mcsafe(addr, length)

    def store(self, addr: int, data: bytes, caller: FrameType) -> None:
        n = len(data)
        if addr - self._delta + n > self._size():
            self._check(addr, n)
        o = addr - self.address
        self._mv[o : o + n] = data

    def memmove(self, dest: int, src: bytes, flags: MemFlag, caller: FrameType) -> None:
        n = len(src)
        if dest - self._delta + n > self._size():
            self._check(dest, n)
        self._memmove(dest, src, n, flags)

    def memset(self, dest: int, value: int, length: int, flags: MemFlag, caller: FrameType) -> None:
        if dest - self._delta + length > self._size():
            self._check(dest, length)
        self._memset(dest, value, length, flags)

    def flush(self, addr: int, length: int, caller: FrameType) -> None:
        # A cache-line flush faults on a lost page like a load does (msync does not, but a
        # map's flush may be either).
        if addr - self._delta + length > self._size():
            self._check(addr, length)
        self._flush(addr, length)

    def persist(self, addr: int, length: int) -> None:
        self._check(addr, length)
        self._persist(addr, length)

    def deep_flush(self, addr: int, length: int, caller: FrameType) -> None:
        b = self._b
        if not b.capabilities.deep_flush:
            raise not_supported("deep flush", "pmem2_deep_flush", b.info.path)
        if not self._finalizer.alive:
            _unmapped()
        self._check(addr, length)
        ret = b.lib.pmem2_deep_flush(self._box[0], addr, length)
        if ret:
            raise failure(b, ret, "pmem2_deep_flush")

    def _released(self) -> None:
        # The descriptor may be closed (and its number reused) from now on.
        self._size = _unmapped
        self._fd.release()
