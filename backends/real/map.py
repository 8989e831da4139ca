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
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

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
T = TypeVar("T")


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
    """A map of anonymous memory (nothing can shrink under it).

    Another thread may unmap it (closing the set, removing the part map) while a call is in
    C: libpmem2's copy runs without the GIL, and a munmap under it is SIGSEGV. So every call
    that touches the mapping is counted in ``_busy`` while it runs, and :meth:`unmap` first
    makes every later call refuse (MapError), then unmaps only once no call is in flight
    (the last call to leave does it). ``list.append`` and ``list.pop`` are atomic, and each
    side writes before it reads what the other wrote, so one of them always sees the other.
    The append is inside the ``try``: an exception raised asynchronously just after it (an
    interrupted run, see pmemsim.explore.budget) still pops.
    """

    __slots__ = (
        "_b",
        "_box",
        "_busy",
        "_claim",
        "_delta",
        "_doomed",
        "_drain",
        "_finalizer",
        "_flush",
        "_memmove",
        "_memset",
        "_mv",
        "_persist",
        "_view",
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
        reservation.map_made()
        self.address: int = int(lib.pmem2_map_get_address(ptr))
        self.size: int = int(lib.pmem2_map_get_size(ptr))
        self.granularity = Granularity(lib.pmem2_map_get_store_granularity(ptr))
        #: address - source offset
        self._delta = self.address - offset
        self._view = memoryview(b.ffi.buffer(b.ffi.cast("char *", self.address), self.size))
        self._mv: Any = self._view
        self._memmove: Callable[[int, bytes, int, int], None] = lib.pmem2_get_memmove_fn(ptr)
        self._memset: Callable[[int, int, int, int], None] = lib.pmem2_get_memset_fn(ptr)
        self._flush: Callable[[int, int], None] = lib.pmem2_get_flush_fn(ptr)
        self._drain: Callable[[], None] = lib.pmem2_get_drain_fn(ptr)
        self._persist: Callable[[int, int], None] = lib.pmem2_get_persist_fn(ptr)
        #: One entry per call in flight, in any thread.
        self._busy: list[None] = []
        #: Unmapping was asked for; the one who pops the token unmaps.
        self._doomed = False
        self._claim = [None]

    def __repr__(self) -> str:
        return f"<RealMap 0x{self.address:x} +{self.size} {self.granularity.name}>"

    def read(self, addr: int, length: int) -> bytes:
        busy = self._busy
        try:
            busy.append(None)
            o = addr - self.address
            return bytes(self._mv[o : o + length])
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def read_mcsafe(self, addr: int, length: int) -> bytes:
        """libpmem2's machine-check-safe read of the source behind ``[addr, addr + length)``
        (anonymous memory: PMEM2_E_SOURCE_TYPE_NOT_SUPPORTED, as libpmem2 answers)."""
        return self._guarded(self._read_mcsafe, addr, length)

    def _read_mcsafe(self, addr: int, length: int) -> bytes:
        if self._doomed:
            _unmapped()
        return self.owner.pread_mcsafe(addr - self._delta, length)

    def store(self, addr: int, data: bytes, caller: FrameType) -> None:
        busy = self._busy
        try:
            busy.append(None)
            o = addr - self.address
            self._mv[o : o + len(data)] = data
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def memmove(self, dest: int, src: bytes, flags: MemFlag, caller: FrameType) -> None:
        busy = self._busy
        try:
            busy.append(None)
            self._memmove(dest, src, len(src), flags)
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def memset(self, dest: int, value: int, length: int, flags: MemFlag, caller: FrameType) -> None:
        self._guarded(self._mem_set, dest, value, length, flags)

    def _mem_set(self, dest: int, value: int, length: int, flags: MemFlag) -> None:
        self._memset(dest, value, length, flags)

    def flush(self, addr: int, length: int, caller: FrameType) -> None:
        self._guarded(self._flush_range, addr, length)

    def _flush_range(self, addr: int, length: int) -> None:
        self._flush(addr, length)

    def drain(self, caller: FrameType) -> None:
        self._drain()  # a fence touches no memory: nothing to guard

    def persist(self, addr: int, length: int) -> None:
        """libpmem2's persist for the map (flush and drain in one call)."""
        self._guarded(self._persist_range, addr, length)

    def _persist_range(self, addr: int, length: int) -> None:
        self._persist(addr, length)

    def deep_flush(self, addr: int, length: int, caller: FrameType) -> None:
        # libpmem2 refuses a deep flush of anonymous memory (NOSUPP), which would make every
        # part map of it impossible to remove (removal deep-flushes first). Anonymous memory
        # has nothing beyond the memory controller to flush to, so a persist stands in.
        self._guarded(self._persist_range, addr, length)

    def _guarded(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` counted as in flight; ``call`` reads the map's functions itself,
        after the count (an unmap may have replaced them)."""
        busy = self._busy
        try:
            busy.append(None)
            return call(*args)
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def unmap(self) -> None:
        if self._doomed or not self._finalizer.alive:
            return
        # First every later call refuses, then (now, or when the last call in flight
        # leaves) the mapping goes.
        self._mv = _UNMAPPED
        self._memmove = self._memset = self._flush = self._persist = _unmapped
        self._drain = _unmapped
        self._doomed = True
        self.reservation.map_doomed()
        self._finish()

    def _finish(self) -> None:
        if self._busy:
            return
        try:
            self._claim.pop()
        except IndexError:
            return  # another thread unmaps
        self._view.release()
        ret = self._finalizer()
        self._released()
        self.owner.map_gone()
        self.reservation.map_gone()
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
        busy = self._busy
        try:
            busy.append(None)
            if addr - self._delta + length > self._size():
                self._check(addr, length)
            o = addr - self.address
            return bytes(self._mv[o : o + length])
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def _read_mcsafe(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        return super()._read_mcsafe(addr, length)

    def store(self, addr: int, data: bytes, caller: FrameType) -> None:
        busy = self._busy
        try:
            busy.append(None)
            n = len(data)
            if addr - self._delta + n > self._size():
                self._check(addr, n)
            o = addr - self.address
            self._mv[o : o + n] = data
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def memmove(self, dest: int, src: bytes, flags: MemFlag, caller: FrameType) -> None:
        busy = self._busy
        try:
            busy.append(None)
            n = len(src)
            if dest - self._delta + n > self._size():
                self._check(dest, n)
            self._memmove(dest, src, n, flags)
        finally:
            busy.pop()
            if self._doomed:
                self._finish()

    def _mem_set(self, dest: int, value: int, length: int, flags: MemFlag) -> None:
        if dest - self._delta + length > self._size():
            self._check(dest, length)
        self._memset(dest, value, length, flags)

    def _flush_range(self, addr: int, length: int) -> None:
        # A cache-line flush faults on a lost page like a load does (msync does not, but a
        # map's flush may be either).
        if addr - self._delta + length > self._size():
            self._check(addr, length)
        self._flush(addr, length)

    def _persist_range(self, addr: int, length: int) -> None:
        self._check(addr, length)
        self._persist(addr, length)

    def deep_flush(self, addr: int, length: int, caller: FrameType) -> None:
        b = self._b
        if not b.capabilities.deep_flush:
            raise not_supported("deep flush", "pmem2_deep_flush", b.info.path)
        self._guarded(self._deep_flush, addr, length)

    def _deep_flush(self, addr: int, length: int) -> None:
        if self._doomed:
            _unmapped()
        self._check(addr, length)
        b = self._b
        ret = b.lib.pmem2_deep_flush(self._box[0], addr, length)
        if ret:
            raise failure(b, ret, "pmem2_deep_flush")

    def _released(self) -> None:
        # The descriptor may be closed (and its number reused) from now on.
        self._size = _unmapped
        self._fd.release()
