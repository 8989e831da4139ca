"""The simulator as a pmemsim backend: sources become media, maps translate addresses.

Addresses live in a simulated 47-bit address space. A file (or temporary file) has one
medium per simulator, keyed by its inode, so two sets that map the same file see the same
cache state, as two processes on one machine would. An anonymous source gives a fresh,
zeroed medium at every map, as libpmem2's anonymous maps do.

A user's file receives nothing but its persisted media image, and only when its source is
closed (``Source.close()``, the end of a ``with`` block, or garbage collection): the pages
that changed are written, holding exactly what was guaranteed durable by then. Stores that
were never flushed and fenced never reach the file.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import sys
import threading
import weakref
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Concatenate, NoReturn, ParamSpec, TypeVar

from pmemsim.backend import (
    Backend,
    BackendMap,
    BackendReservation,
    BackendSource,
    Pmem2Failure,
    beyond_address_space,
)
from pmemsim.enums import Granularity, MemFlag
from pmemsim.errors import ErrorCode, InvalidArgumentError, Pmem2Code, error_for
from pmemsim.events import BadBlock
from pmemsim.provenance import HELPERS, blamed

from .device import InjectedBadBlocks, SimDevice
from .images import CrashImage, CrashMode, CrashState, LineState, collect_units
from .intervals import IntervalSet
from .lint import Finding, LintLog
from .machine import Barrier, Machine, Observer, Statistics, Tap
from .medium import LINE, PAGE, PAGE_SHIFT, Medium

if TYPE_CHECKING:
    from pmemsim.source import Source

__all__ = ["SimBackend"]

#: What devices and bad blocks are filed under: a file's (st_dev, st_ino), or an image
#: source's ("image", ident).
Key = tuple[object, ...]

_BASE = 0x10_0000_0000
_ALIGN = 1 << 30  # new reservations start on 1 GiB boundaries, leaving room to grow
_TOP = 1 << 47
_MOVNT = MemFlag.NONTEMPORAL | MemFlag.WC
_MOV = MemFlag.TEMPORAL | MemFlag.WB


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Run ``method`` holding its object's ``lock`` (the simulator's)."""

    def locked(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(self, *args, **kwargs)

    locked.__name__, locked.__qualname__ = method.__name__, method.__qualname__
    locked.__doc__ = method.__doc__
    return locked


class AddressSpace:
    """Reserved ranges of the simulated address space."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def is_free(self, start: int, end: int) -> bool:
        i = bisect_left(self._ranges, (start, start))
        if i > 0 and self._ranges[i - 1][1] > start:
            return False
        return not (i < len(self._ranges) and self._ranges[i][0] < end)

    def take(self, start: int, end: int) -> None:
        insort(self._ranges, (start, end))

    def release(self, start: int, end: int) -> None:
        self._ranges.remove((start, end))

    def find(self, size: int) -> int:
        addr = _BASE
        for s, e in self._ranges:
            if addr + size + _ALIGN <= s:
                return addr
            addr = max(addr, -(-(e + _ALIGN) // _ALIGN) * _ALIGN)
        if addr + size > _TOP:
            raise beyond_address_space(size)
        return addr


class SimReservation(BackendReservation):
    def __init__(self, space: AddressSpace, address: int, size: int, lock: threading.RLock) -> None:
        self.lock = lock
        self.space = space
        self.address = address
        self.size = size
        self.maps: list[SimMap] = []
        self.deleted = False

    def _live(self) -> None:
        if self.deleted:
            raise Pmem2Failure(
                Pmem2Code.INVALID_ADDRESS_REQUEST_TYPE, "the reservation was deleted"
            )

    @_locked
    def extend(self, size: int) -> None:
        self._live()
        end = self.address + self.size
        if end + size > _TOP:
            raise beyond_address_space(size)
        if not self.space.is_free(end, end + size):
            # libpmem2: MAP_FIXED_NOREPLACE failing with EEXIST.
            raise Pmem2Failure(Pmem2Code.MAPPING_EXISTS, "the range after the reservation is taken")
        self.space.release(self.address, end)
        self.size += size
        self.space.take(self.address, self.address + self.size)

    @_locked
    def shrink(self, offset: int, size: int) -> None:
        self._live()
        if not (offset == 0 or offset + size == self.size) or size >= self.size:
            raise Pmem2Failure(Pmem2Code.OFFSET_OUT_OF_RANGE, "shrink only at either end")
        lo, hi = self.address + offset, self.address + offset + size
        if any(m.address < hi and lo < m.address + m.size for m in self.maps):
            raise Pmem2Failure(Pmem2Code.VM_RESERVATION_NOT_EMPTY, "maps in the shrunk range")
        self.space.release(self.address, self.address + self.size)
        if offset == 0:
            self.address += size
        self.size -= size
        self.space.take(self.address, self.address + self.size)

    @_locked
    def delete(self) -> None:
        if self.maps:
            raise Pmem2Failure(Pmem2Code.VM_RESERVATION_NOT_EMPTY, "reservation still has maps")
        if not self.deleted:
            self.space.release(self.address, self.address + self.size)
            self.deleted = True


class _FileLoader:
    """Reads a file's pages lazily, for a medium and for the crash images taken from it.

    A crash image keeps the loader for the pages it never copied and may outlive the source,
    so a loader owns a descriptor of its own (closed when the last user of the loader goes
    away), and before the simulator writes a page into the file it saves the old content in
    every other loader still alive: an image never shows data written after it was taken.
    """

    __slots__ = ("__weakref__", "fd", "saved")

    def __init__(self, fd: int) -> None:
        # A description of its own: the file's lock (see _File) goes with the simulator's
        # descriptor, not with the crash images that outlive it.
        self.fd = _reopen(fd, os.O_RDONLY)
        self.saved: dict[int, bytes] = {}
        weakref.finalize(self, os.close, self.fd)

    def __call__(self, p: int) -> bytes:
        page = self.saved.get(p)
        return page if page is not None else os.pread(self.fd, PAGE, p << PAGE_SHIFT)

    def preserve(self, p: int) -> None:
        if p not in self.saved:
            self.saved[p] = os.pread(self.fd, PAGE, p << PAGE_SHIFT)


def _reopen(fd: int, flags: int) -> int:
    """A descriptor of ``fd``'s file with an open file description of its own (a lock on it
    is its own), or a plain dup where /proc is missing."""
    try:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)
    except OSError:
        return os.dup(fd)


#: Every file a simulator of this process holds, by (st_dev, st_ino).
_HELD: weakref.WeakValueDictionary[tuple[int, int], _File] = weakref.WeakValueDictionary()
_held_lock = threading.Lock()


class _File:
    """One file as the simulator holds it: our own descriptor and its medium.

    A simulated machine keeps its stores in its own caches and writes a file back only when
    its source closes, so two machines on one file would not see each other's stores and
    the last write-back would win. So a file is held by one simulator at a time: another
    SimBackend of this process, or a simulator in another process (an exclusive ``flock``
    on our descriptor), is refused with a SourceError until the holder lets go.
    """

    @classmethod
    def hold(
        cls, source: Source, key: tuple[int, int], loaders: weakref.WeakSet[_FileLoader]
    ) -> _File:
        assert source.fd is not None
        with _held_lock:
            other = _HELD.get(key)
            if other is not None and not other.released:
                raise error_for(
                    ErrorCode.INVALID_PMEM2_SOURCE,
                    f"{source.label} is mapped by another simulator (SimBackend) of this "
                    "process; two simulated machines on one file would not see each other's "
                    "stores: close that one's sources first",
                )
            # Our own descriptor: the user may close theirs while we still need to load.
            fd = _reopen(source.fd, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise error_for(
                    ErrorCode.INVALID_PMEM2_SOURCE,
                    f"{source.label} is locked by another process (a simulator holding it, "
                    "or a program that flock()s it): a simulated machine needs the file to "
                    "itself",
                ) from None
            except OSError:
                pass  # a file system without flock: only this process is checked
            f = _HELD[key] = cls(fd, loaders)
            return f

    def __init__(self, fd: int, loaders: weakref.WeakSet[_FileLoader]) -> None:
        self.fd = fd
        self.released = False
        self.medium: Medium | None = None
        self.users = 0
        #: Every loader of this file that the simulator gave out and that is still alive.
        self.loaders = loaders
        self.loader: _FileLoader | None = self._new_loader()

    def _new_loader(self) -> _FileLoader:
        loader = _FileLoader(self.fd)
        self.loaders.add(loader)
        return loader

    def write_back(self) -> None:
        """Write the persisted media image of the changed pages into the file."""
        medium = self.medium
        if medium is None or not medium.changed:
            return
        size = os.fstat(self.fd).st_size
        pages = [p for p in sorted(medium.changed) if p << PAGE_SHIFT < size]
        # The medium holds every page it changes, so it can move to a fresh loader; the old
        # one lives on only if crash images still use it, and then keeps the old content.
        self.loader = self._new_loader()
        medium.loader = self.loader
        for loader in list(self.loaders):
            if loader is not self.loader:
                for p in pages:
                    loader.preserve(p)
        for p in pages:
            start = p << PAGE_SHIFT
            os.pwrite(self.fd, medium.media[p][: min(PAGE, size - start)], start)
        medium.changed.clear()


class SimSource(BackendSource):
    """A source as the simulator holds it: a shared medium, or a fresh one per map."""

    def __init__(
        self,
        backend: SimBackend,
        source: Source,
        granularity: Granularity,
        file: _File | None = None,
        key: Key | None = None,
    ) -> None:
        self.backend = backend
        self.lock = backend.lock
        self.source = source
        self.granularity = granularity
        self.file = file
        #: What devices and bad blocks are keyed by: a file's (st_dev, st_ino), an image
        #: source's ("image", ident); None for anonymous memory (it has neither).
        self.key = key
        #: The image medium (files keep theirs in ``file``; anonymous memory has none).
        self.medium: Medium | None = None
        self.closed = False
        if file is not None:
            file.users += 1

    @property
    def size(self) -> int:
        if self.file is not None:
            return os.fstat(self.file.fd).st_size
        return self.source.size

    def medium_for_map(self) -> Medium:
        existing = self.file.medium if self.file is not None else self.medium
        if existing is not None:
            existing.size = max(existing.size, self.size)
            return existing
        b = self.backend
        snap = self.source.snapshot
        medium = Medium(
            b.machine,
            next(b._idents),
            self.source.label,
            self.size,
            self.granularity,
            b.unit_for(self.granularity),
            self.file.loader if self.file is not None else snap.loader if snap else None,
            snap.pages if snap is not None else None,
            self.source.ident,
            b._badblocks.setdefault(self.key, []) if self.key is not None else None,
            self.key,
        )
        b._media.append(medium)
        if self.file is not None:
            self.file.medium = medium
        elif self.source.kind != "anonymous":
            self.medium = medium
        return medium

    def release(self, medium: Medium) -> None:
        if self.source.kind == "anonymous":
            self.backend._forget(medium)
        elif self.closed:
            self._let_go_if_unused()

    # -- device id, unsafe-shutdown count, bad blocks (files and images, as in libpmem2) ---

    def _fault_key(self) -> Key:
        if self.key is None:
            raise Pmem2Failure(Pmem2Code.NOSUPP, f"{self.source.label} lives on no device")
        return self.key

    def device_id(self) -> bytes:
        return self.backend._device_for(self._fault_key()).id

    def usc(self) -> int:
        return self.backend._device_for(self._fault_key()).usc

    def badblocks(self) -> list[BadBlock]:
        return list(self.backend._badblocks.get(self._fault_key(), ()))

    @_locked
    def clear_badblock(self, badblock: BadBlock) -> None:
        blocks = self.backend._badblocks.get(self._fault_key(), [])
        if badblock not in blocks:
            raise Pmem2Failure(Pmem2Code.NO_BAD_BLOCK_FOUND, f"{badblock} is not a bad block")
        blocks.remove(badblock)
        end = min(badblock.offset + badblock.length, self.size)
        if badblock.offset < end:
            self.medium_for_map().erase(badblock.offset, end)

    @_locked
    def close(self) -> None:
        """Write the persisted media image back to the file; the last user lets go of it."""
        if self.closed or self.file is None:
            self.closed = True
            return
        self.closed = True
        f = self.file
        f.write_back()
        f.users -= 1
        self._let_go_if_unused()

    def _let_go_if_unused(self) -> None:
        """Close the file once no source uses it and nothing maps it.

        A source closed while a set still maps it keeps the file open until the last map
        goes: the medium may still need to load pages it never touched.
        """
        f = self.file
        if f is None or f.users > 0:
            return
        medium = f.medium
        if medium is not None and any(m.medium is medium for m in self.backend._maps):
            return
        f.write_back()
        # Let go of every descriptor not held by a crash image (a temporary file must
        # vanish), and of the medium: later crash states must not show a file that is gone.
        f.released = True
        os.close(f.fd)
        f.loader = None
        if medium is not None:
            medium.loader = None
            self.backend._forget(medium)
        self.backend._files = {k: v for k, v in self.backend._files.items() if v is not f}


def _unmapped(*_: object) -> NoReturn:
    raise error_for(ErrorCode.INVALID_PMEM2_MAP, "this map has been unmapped")


class SimMap(BackendMap):
    """A map of a medium. Every operation holds the simulator's lock: one simulated machine
    executes one operation at a time, whichever thread issues it (docs/concurrency.md)."""

    __slots__ = (
        "_check",
        "_delta",
        "_lock",
        "address",
        "dead",
        "granularity",
        "machine",
        "medium",
        "owner",
        "reservation",
        "size",
        "threshold",
    )

    def __init__(
        self,
        owner: SimSource,
        medium: Medium,
        offset: int,
        address: int,
        size: int,
        reservation: SimReservation,
    ) -> None:
        self.owner = owner
        self.medium = medium
        self.machine = medium.machine
        self.address = address
        self.size = size
        self.granularity = medium.granularity
        self.reservation = reservation
        self.threshold = owner.backend.movnt_threshold
        self._delta = address - offset
        # ``with`` (not acquire(); try:): an exception raised asynchronously right after
        # acquire() returns (explore's RunTimer interrupts a run with one) would leave the
        # lock held for ever; ``with`` releases it.
        self._lock = owner.backend.lock
        #: Unmapped: a call that found this map before it went must not touch the medium.
        self.dead = False
        #: Checked before every access: whether a file still covers the range (SimFileMap),
        #: or, once unmapped, a refusal; None (nothing to check) otherwise.
        self._check: Callable[[int, int], None] | None = None

    def offset_of(self, addr: int) -> int:
        return addr - self._delta

    def read(self, addr: int, length: int) -> bytes:
        with self._lock:
            if self._check is not None:
                self._check(addr, length)
            m = self.medium
            if self.machine.read_tap is not None:
                self.machine.read_tap(m, addr - self._delta, length)
            if m.badblocks:  # the one check a medium without bad blocks pays
                err = m.poisoned(addr - self._delta, length)
                if err is not None:
                    raise err.at(err.offset + self._delta if err.offset is not None else None)
            return m.read(addr - self._delta, length)

    def read_mcsafe(self, addr: int, length: int) -> bytes:
        if self.owner.key is None:
            raise Pmem2Failure(
                Pmem2Code.SOURCE_TYPE_NOT_SUPPORTED,
                "anonymous memory has no source to read machine-check-safely",
            )
        return self.read(addr, length)

    def store(self, addr: int, data: bytes, caller: FrameType) -> None:
        if data:
            if HELPERS.active:
                caller = blamed(caller)
            with self._lock:
                if self._check is not None:
                    self._check(addr, len(data))
                m = self.medium
                if m.wb_durable:
                    seq = m.store(addr - self._delta, data, (caller.f_code, caller.f_lasti), False)
                else:
                    seq = m.store_wb(addr - self._delta, data, caller.f_code, caller.f_lasti)
                if self.machine.tap is not None:
                    self.machine._tapped(
                        "store", m, addr - self._delta, len(data), caller, bytes(data), False, seq
                    )

    def _nontemporal(self, flags: MemFlag, length: int) -> bool:
        if flags & _MOVNT:
            return True
        if flags & _MOV:
            return False
        return length >= self.threshold

    def memmove(self, dest: int, src: bytes, flags: MemFlag, caller: FrameType) -> None:
        self._mem(dest, src, flags, caller)

    def memset(self, dest: int, value: int, length: int, flags: MemFlag, caller: FrameType) -> None:
        self._mem(dest, bytes([value & 0xFF]) * length, flags, caller)

    def _mem(self, dest: int, data: bytes, flags: MemFlag, caller: FrameType) -> None:
        if not data:
            return
        if HELPERS.active:
            caller = blamed(caller)
        with self._lock:
            if self._check is not None:
                self._check(dest, len(data))
            self._copy(dest - self._delta, data, flags, caller)

    def _copy(self, off: int, data: bytes, flags: MemFlag, caller: FrameType) -> None:
        frame = (caller.f_code, caller.f_lasti)
        tap = self.machine.tap
        if flags & MemFlag.NOFLUSH:
            # libpmem2: a plain copy, nothing flushed and nothing drained.
            seq = self.medium.store(off, data, frame, False)
            if tap is not None:
                self.machine._tapped("store", self.medium, off, len(data), caller, data, False, seq)
            return
        gran = self.granularity
        if gran == Granularity.BYTE:
            # libpmem2's eADR memmove: non-temporal stores for the NONTEMPORAL flag only (not
            # WC, not by length), temporal stores otherwise, never a flush.
            nt = bool(flags & MemFlag.NONTEMPORAL)
        else:
            # At PAGE libpmem2 copies and then msyncs the range (its "nonpmem" memmove),
            # whatever the flags: non-temporal stores do not make a page durable.
            nt = gran != Granularity.PAGE and self._nontemporal(flags, len(data))
        seq = self.medium.store(off, data, frame, nt)
        if tap is not None:
            self.machine._tapped("store", self.medium, off, len(data), caller, data, nt, seq)
        if not nt and gran != Granularity.BYTE:
            self.machine.flush(self.medium, off, off + len(data), caller)
        if not flags & MemFlag.NODRAIN:
            self.machine.fence(self.granularity, caller)

    def flush(self, addr: int, length: int, caller: FrameType) -> None:
        with self._lock:
            if self._check is not None:
                self._check(addr, length)
            off = addr - self._delta
            self.machine.flush(self.medium, off, off + length, caller)

    def drain(self, caller: FrameType) -> None:
        with self._lock:
            self.machine.fence(self.granularity, caller)

    def deep_flush(self, addr: int, length: int, caller: FrameType) -> None:
        with self._lock:
            if self._check is not None:
                self._check(addr, length)
            off = addr - self._delta
            self.machine.deep_flush(self.medium, off, off + length, caller)

    def unmap(self) -> None:
        with self._lock:
            if self.dead:
                return
            self.dead = True
            self._check = _unmapped
            self.reservation.maps.remove(self)
            self.owner.backend._maps.remove(self)
            self.owner.release(self.medium)


class SimFileMap(SimMap):
    """A map of a file: every access first checks that the file still covers it.

    On real hardware touching a page that a truncation took away is SIGBUS; libpmem2's
    backend here raises SOURCE_FILE_IS_TOO_SMALL instead, and so must the simulator, or
    the two would disagree on the same misuse. One ``lseek`` per access, files only.
    """

    __slots__ = ()

    def __init__(
        self,
        owner: SimSource,
        medium: Medium,
        offset: int,
        address: int,
        size: int,
        reservation: SimReservation,
    ) -> None:
        super().__init__(owner, medium, offset, address, size, reservation)
        self._check = self._covers

    def _covers(self, addr: int, length: int) -> None:
        # The page holding the file's end is still there; pages wholly past it are not.
        end = addr - self._delta + length
        fd = self.owner.file.fd  # type: ignore[union-attr]  # a file map has a file
        if length and end > os.lseek(fd, 0, os.SEEK_END):
            size = os.lseek(fd, 0, os.SEEK_END)
            if end > -(-size // PAGE) * PAGE:
                raise error_for(
                    ErrorCode.SOURCE_FILE_IS_TOO_SMALL,
                    f"{self.owner.source.label} shrank to {size} bytes under its mapping; "
                    f"[{addr - self._delta}, {end}) of it is gone",
                )


class SimBackend(Backend):
    """A simulated machine: caches, a memory controller and persistent media.

    :param granularity: what the simulated platform offers for files and images: CACHE_LINE
        (ADR, the default), BYTE (eADR) or PAGE (no DAX: msync).
    :param anonymous_granularity: the same for anonymous sources (default: ``granularity``;
        libpmem2 itself gives BYTE there).
    :param flush_instruction: ``"clwb"`` and ``"clflushopt"`` (the default, conservative
        semantics: a flush takes effect at the next fence) or ``"clflush"`` (Intel: ordered at
        its own position). On AMD keep the default.
    :param movnt_threshold: copies at least this long use non-temporal stores (libpmem2: 256).
    :param page_tearing: at PAGE granularity, let each 512-byte sector of a page persist
        separately instead of assuming whole-page writes.
    :param lint: gather pmemcheck-style findings at every fence.
    """

    name = "sim"
    wants_provenance = True

    def __init__(
        self,
        granularity: Granularity = Granularity.CACHE_LINE,
        *,
        anonymous_granularity: Granularity | None = None,
        flush_instruction: str = "clwb",
        movnt_threshold: int = 256,
        page_tearing: bool = False,
        lint: bool = True,
    ) -> None:
        if flush_instruction not in {"clwb", "clflushopt", "clflush"}:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"flush_instruction must be clwb, clflushopt or clflush, not {flush_instruction!r}",
            )
        if not isinstance(movnt_threshold, int) or movnt_threshold < 0:
            raise InvalidArgumentError(ErrorCode.EINVAL, "movnt_threshold must be an int >= 0")
        self.granularity = Granularity(granularity)
        self.anonymous_granularity = Granularity(
            granularity if anonymous_granularity is None else anonymous_granularity
        )
        self.flush_instruction = flush_instruction
        self.movnt_threshold = movnt_threshold
        self.page_tearing = page_tearing
        self.machine = Machine(clflush=flush_instruction == "clflush", lint=lint)
        #: Held by every operation on the machine, its media and its address space: one
        #: simulated machine executes one operation at a time (docs/concurrency.md).
        self.lock = threading.RLock()
        self.space = AddressSpace()
        self._idents = itertools.count(1)
        self._media: list[Medium] = []
        self._maps: list[SimMap] = []
        self._files: dict[tuple[int, int], _File] = {}
        self._loaders: dict[tuple[int, int], weakref.WeakSet[_FileLoader]] = {}
        self._devices: dict[bytes, SimDevice] = {}
        self.default_device = self.device(b"pmemsim-device-0")
        self._device_of: dict[Key, bytes] = {}
        #: Bad blocks per key; a medium holds its key's list itself (shared, sorted in place).
        self._badblocks: dict[Key, list[BadBlock]] = {}
        #: Keys of the image sources this simulator opened, and the devices they carry.
        self._images: set[Key] = set()
        self._image_devices: dict[Key, SimDevice] = {}

    def __repr__(self) -> str:
        return (
            f"SimBackend({self.granularity.name}, flush={self.flush_instruction}, "
            f"movnt_threshold={self.movnt_threshold})"
        )

    def unit_for(self, granularity: Granularity) -> int:
        if granularity == Granularity.PAGE:
            return 512 if self.page_tearing else PAGE
        return LINE

    # -- the backend contract ----------------------------------------------------------

    def open_source(self, source: Source) -> SimSource:
        with self.lock:
            if source.kind == "anonymous":
                return SimSource(self, source, self.anonymous_granularity)
            if source.fd is None:
                return SimSource(self, source, self.granularity, key=self._image_key(source))
            st = os.fstat(source.fd)
            key = (st.st_dev, st.st_ino)
            f = self._files.get(key)
            if f is None:
                loaders = self._loaders.setdefault(key, weakref.WeakSet())
                f = self._files[key] = _File.hold(source, key, loaders)
            return SimSource(self, source, self.granularity, f, key)

    # -- devices and bad blocks --------------------------------------------------------

    def device(self, device_id: bytes) -> SimDevice:
        """The simulated device with this id (created on first use)."""
        if not isinstance(device_id, bytes) or not device_id:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid device id {device_id!r}")
        dev = self._devices.get(device_id)
        if dev is None:
            dev = self._devices[device_id] = SimDevice(device_id)
        return dev

    def _image_key(self, source: Source) -> Key:
        """An image source's key; the first time, it takes the device reading and the bad
        blocks its snapshot carries (a private device: the image's world, not this machine's)."""
        key: Key = ("image", source.ident)
        if key not in self._images:
            self._images.add(key)
            snap = source.snapshot
            assert snap is not None
            blocks = self._badblocks.setdefault(key, [])
            blocks.extend(bb for bb in snap.badblocks if bb not in blocks)
            blocks.sort(key=lambda b: b.offset)
            if snap.device_id is not None:
                self._image_devices[key] = SimDevice(snap.device_id, snap.usc or 0)
        return key

    def _key(self, where: Source | str | os.PathLike[str] | Key) -> Key:
        if isinstance(where, tuple):
            return where
        if getattr(where, "kind", None) == "image":
            return self._image_key(where)  # type: ignore[arg-type]
        fd = getattr(where, "fd", None)
        if fd is None and not isinstance(where, (str, os.PathLike)):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where!r} is not a file or an image: anonymous memory has no device",
            )
        st = os.fstat(fd) if fd is not None else os.stat(where)  # type: ignore[arg-type]
        return (st.st_dev, st.st_ino)

    def _device_for(self, key: Key) -> SimDevice:
        if key in self._images:
            dev = self._image_devices.get(key)
            if dev is None:
                raise Pmem2Failure(Pmem2Code.NOSUPP, "this image carries no device")
            return dev
        return self.device(self._device_of.get(key, self.default_device.id))

    def _medium_device(self, medium: Medium) -> SimDevice | None:
        if medium.key is None:
            return None
        try:
            return self._device_for(medium.key)
        except Pmem2Failure:
            return None

    def device_of(self, where: Source | str | os.PathLike[str] | Key) -> SimDevice:
        """The device a file (a file source or a path) lives on: the default one unless
        :meth:`assign_device` said otherwise. For an image source, the device its snapshot
        carries (a private copy: raising its count changes no file's device)."""
        try:
            return self._device_for(self._key(where))
        except Pmem2Failure as exc:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{where!r}: {exc.message}") from None

    def assign_device(self, where: Source | str | os.PathLike[str], device_id: bytes) -> SimDevice:
        """Put a file on another device (several files may share one)."""
        dev = self.device(device_id)
        key = self._key(where)
        if key in self._images:
            raise InvalidArgumentError(ErrorCode.EINVAL, "an image keeps the device it came from")
        self._device_of[key] = device_id
        return dev

    @_locked
    def inject_badblock(
        self, where: Source | str | os.PathLike[str], offset: int, length: int
    ) -> BadBlock:
        """Make ``[offset, offset + length)`` of a file or an image source a bad block.

        Loads through any map that touch it raise :class:`pmemsim.errors.PoisonError` until
        it is cleared; bad-block detection at map time reports it.
        """
        if type(offset) is not int or type(length) is not int or offset < 0 or length <= 0:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"invalid bad block at {offset!r}, {length!r} bytes"
            )
        bb = BadBlock(offset, length)
        blocks = self._badblocks.setdefault(self._key(where), [])
        if bb not in blocks:
            blocks.append(bb)
            blocks.sort(key=lambda b: b.offset)  # in place: media share this list
        return bb

    def inject_random_badblocks(
        self,
        where: Source | str | os.PathLike[str],
        count: int,
        *,
        seed: int | None = None,
        length: int = 512,
        start: int = 0,
        end: int | None = None,
    ) -> InjectedBadBlocks:
        """``count`` distinct bad blocks of ``length`` bytes (512: Linux's sectors), aligned
        to ``length``, chosen at random in ``[start, end)`` (default: the whole source).

        The same seed and arguments give the same blocks on a source of the same size. With
        no seed one is drawn and printed to stderr; it is returned with the blocks either way.
        """
        for name, value, low in (("count", count, 0), ("length", length, 1), ("start", start, 0)):
            if type(value) is not int or value < low:
                raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid {name} {value!r}")
        if seed is not None and type(seed) is not int:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"the seed must be an int, not {seed!r}")
        size = self._size_of(where)
        stop = size if end is None else end
        if type(stop) is not int or stop > size or stop < start:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"invalid end {end!r} for a source of {size} bytes"
            )
        first, last = -(-start // length), stop // length
        if count > max(0, last - first):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{count} blocks of {length} bytes do not fit in [{start}, {stop})",
            )
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 32)
            print(f"pmemsim: inject_random_badblocks seed={seed}", file=sys.stderr)
        picks = sorted(random.Random(seed).sample(range(first, last), count))
        blocks = tuple(self.inject_badblock(where, i * length, length) for i in picks)
        return InjectedBadBlocks(seed, blocks)

    def _size_of(self, where: Source | str | os.PathLike[str]) -> int:
        snap = getattr(where, "snapshot", None)
        if snap is not None:
            return int(snap.size)
        fd = getattr(where, "fd", None)
        if fd is None and not isinstance(where, (str, os.PathLike)):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{where!r} is not a file or an image")
        st = os.fstat(fd) if fd is not None else os.stat(where)  # type: ignore[arg-type]
        return st.st_size

    def badblocks(self, where: Source | str | os.PathLike[str]) -> list[BadBlock]:
        """A file's or an image source's bad blocks, by offset."""
        return list(self._badblocks.get(self._key(where), ()))

    @_locked
    def reserve(self, size: int, address: int | None = None) -> SimReservation:
        if size <= 0 or size % PAGE:
            raise Pmem2Failure(Pmem2Code.LENGTH_UNALIGNED, f"reservation size {size} unaligned")
        if address is None:
            address = self.space.find(size)
        elif address + size > _TOP:
            raise beyond_address_space(size)  # the kernel's ENOMEM past the user's 47 bits
        elif address % PAGE:
            raise Pmem2Failure(Pmem2Code.ADDRESS_UNALIGNED, f"address 0x{address:x} unaligned")
        elif not self.space.is_free(address, address + size):
            # libpmem2: MAP_FIXED_NOREPLACE failing with EEXIST.
            raise Pmem2Failure(Pmem2Code.MAPPING_EXISTS, f"range at 0x{address:x} is taken")
        self.space.take(address, address + size)
        return SimReservation(self.space, address, size, self.lock)

    @_locked
    def map(
        self,
        source: BackendSource,
        offset: int,
        length: int,
        granularity: Granularity,
        reservation: BackendReservation,
        reservation_offset: int,
    ) -> SimMap:
        assert isinstance(source, SimSource) and isinstance(reservation, SimReservation)
        reservation._live()
        if offset % PAGE:
            raise Pmem2Failure(Pmem2Code.OFFSET_UNALIGNED, f"offset {offset} is not page aligned")
        if offset + length > source.size:
            raise Pmem2Failure(Pmem2Code.MAP_RANGE, "the range is beyond the end of the source")
        address = reservation.address + reservation_offset
        if reservation_offset % PAGE or reservation_offset + length > reservation.size:
            raise Pmem2Failure(Pmem2Code.LENGTH_OUT_OF_RANGE, "map does not fit the reservation")
        if any(
            m.address < address + length and address < m.address + m.size for m in reservation.maps
        ):
            raise Pmem2Failure(Pmem2Code.MAPPING_EXISTS, "range already mapped")
        # libpmem2 checks the offset and the range first: the granularity is known only once
        # it has looked at how the source can be mapped.
        if source.granularity > granularity:
            raise Pmem2Failure(
                Pmem2Code.GRANULARITY_NOT_SUPPORTED,
                f"the simulated platform offers {source.granularity.name} for this source; "
                f"{granularity.name} was required",
            )
        medium = source.medium_for_map()
        cls = SimFileMap if source.file is not None else SimMap
        m = cls(source, medium, offset, address, length, reservation)
        reservation.maps.append(m)
        self._maps.append(m)
        return m

    def _forget(self, medium: Medium) -> None:
        self._media.remove(medium)
        self.machine.flushes[:] = [(m, f) for m, f in self.machine.flushes if m is not medium]
        self.machine.unfenced.discard(medium)

    # -- what the simulator can tell ---------------------------------------------------

    @property
    def media(self) -> tuple[Medium, ...]:
        return tuple(self._media)

    def _address(self, medium: Medium, offset: int) -> int | None:
        for m in self._maps:
            if m.medium is medium:
                rel = offset - (m.address - m._delta)
                if 0 <= rel < m.size:
                    return m.address + rel
        return None

    @_locked
    def crash_state(self, mode: CrashMode | str = CrashMode.POWER_FAILURE) -> CrashState:
        """What a crash right now could leave behind (a frozen copy).

        ``mode="power_failure"`` (the default): ADR works, so whatever was fenced survives.
        ``mode="unsafe_shutdown"``: ADR fails too; data fenced but not deep-flushed may be
        lost as well and the images carry every device's unsafe-shutdown count plus one.
        """
        return CrashState(
            self.machine,
            self._media,
            self.machine.barriers,
            self._address,
            mode=mode,
            device_of=self._medium_device,
        )

    def materialise(
        self, image: CrashImage, path: str | os.PathLike[str], which: object = None
    ) -> None:
        """Write one source's crash image into the file at ``path`` (created if needed), as
        the machine finds it after the restart; after an unsafe shutdown the device the
        source lived on counts one more unsafe shutdown (once, however many images of the
        crash are written). The simulator must not hold the file: close its sources first.
        """
        snap = image.snapshot(which)
        p = os.fspath(path)
        if os.path.exists(p) and self._key(p) in self._files:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"the simulator still holds {p}: close its sources first"
            )
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if snap.loader is None:
                # Every byte is in the pages (the rest reads as zeros): start from a hole.
                os.ftruncate(fd, 0)
                os.ftruncate(fd, snap.size)
                for page_no in sorted(snap.pages):
                    start = page_no << PAGE_SHIFT
                    if start < snap.size:
                        os.pwrite(fd, snap.page(page_no)[: snap.size - start], start)
            else:
                # The loader may read this very file: overwrite page by page, never truncate.
                os.ftruncate(fd, snap.size)
                for page_no in range(-(-snap.size // PAGE)):
                    start = page_no << PAGE_SHIFT
                    os.pwrite(fd, snap.page(page_no)[: snap.size - start], start)
        finally:
            os.close(fd)
        if snap.unsafe_shutdown and snap.device_id is not None and snap.usc is not None:
            dev = self.device(snap.device_id)
            dev.usc = max(dev.usc, snap.usc)

    def image_count(self) -> int:
        """How many distinct crash images are possible right now."""
        return self.crash_state().image_count()

    def lines(self) -> list[LineState]:
        """Every unit with stores in flight: dirty or flushed-but-not-fenced."""
        return self.crash_state().lines()

    @_locked
    def statistics(self) -> Statistics:
        m = self.machine
        dirty = flushed = persistent = 0
        for medium in self._media:
            units = collect_units(m, medium, 0)
            u = medium.unit
            durable = IntervalSet()
            for s, e in medium.durable_ranges():
                durable.add(s - s % u, -(-e // u) * u)
            in_flight_durable = 0
            for unit in units.values():
                if unit.wb and unit.flushed < len(unit.wb):
                    dirty += 1
                else:
                    flushed += 1
                if durable.overlaps(unit.offset, unit.offset + u):
                    in_flight_durable += 1
            persistent += durable.total() // u - in_flight_durable
        return Statistics(
            m.stores,
            m.store_bytes,
            m.flush_count,
            m.fence_count,
            m.deep_flush_count,
            dirty,
            flushed,
            persistent,
        )

    @_locked
    def lint(self) -> list[Finding]:
        """Findings so far, every store that is not durable right now, and what the fence
        ending the current epoch would find in it (see Medium._lint_epoch)."""
        log = self.machine.lint
        if log is None:
            return []
        trailing = LintLog()
        now = LintLog()
        for medium in self._media:
            flushes = self.machine.pending_flushes(medium)
            if medium.granularity == Granularity.CACHE_LINE:
                medium._lint_epoch(flushes, trailing)
            medium._lint_in_flight(flushes, now)
        found = log.merged(trailing).findings() if trailing else log.findings()
        return now.findings() + found

    def on_barrier(self, observer: Observer) -> None:
        """Call ``observer(barrier)`` just before every barrier takes effect."""
        self.machine.observers.append(observer)

    def remove_barrier_observer(self, observer: Observer) -> None:
        self.machine.observers.remove(observer)

    def set_tap(self, tap: Tap | None) -> None:
        """Call ``tap(op)`` for every store, flush, fence and deep flush (None: stop)."""
        self.machine.tap = tap

    def set_read_tap(self, tap: Callable[[Medium, int, int], None] | None) -> None:
        """Call ``tap(medium, offset, length)`` for every read (None: stop)."""
        self.machine.read_tap = tap

    def iter_maps(self) -> Iterator[SimMap]:
        return iter(tuple(self._maps))


__all__ += ["Barrier"]
