"""The set: parts mapped into part maps, and every data operation on them.

Behaviour follows libpmemset (docs/pmemset.md is the contract): the effective granularity is
fixed by the first map; where a part goes (its own reservation, coalesced with the previous
part map, or first fit in the user's reservation) is pmemsim.placement's choice; removing a
range removes whole parts and may split a part map. Every address is checked against the
part maps before a backend sees it, so misuse is an exception on every backend, never a
stray write.
"""

from __future__ import annotations

import sys
import threading
import weakref
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from types import FrameType
from typing import Any

from . import placement
from ._records import NamedTuple
from .backend import Backend, BackendMap, BackendSource, Pmem2Failure
from .badblocks import scan_badblocks
from .config import Config
from .enums import Coalescing, Granularity, MemFlag
from .errors import (
    ErrorCode,
    InvalidArgumentError,
    MediaError,
    Pmem2Code,
    PmemError,
    PoisonError,
    error_for,
)
from .events import (
    CopyEvent,
    Dispatcher,
    DrainEvent,
    EventType,
    FlushEvent,
    Kind,
    MoveEvent,
    PartAddEvent,
    PartRemoveEvent,
    RemoveRangeEvent,
    SdsUpdateEvent,
    SetEvent,
    TrackCallback,
    TrackHandle,
)
from .part import Descriptor, MappedPart, Part, PartMap
from .placement import Holder, Slot, attach, choose, detach, split, teardown, user_region
from .sds import acquire_use, check_sds, release_use
from .source import Source
from .view import View, _bytes

__all__ = ["SafeRead", "Set"]

_getframe = sys._getframe
StoreFn = Callable[[int, bytes, FrameType], None]
_MEM_MASK = MemFlag.valid_mask()
#: Every valid flag combination, built once: constructing an IntFlag costs about 0.8 us.
_MEM_FLAGS = tuple(MemFlag(i) for i in range(_MEM_MASK + 1))
_COPY_OR_DRAIN = Kind.COPY | Kind.DRAIN


class SafeRead(NamedTuple):
    """What a machine-check-safe read returns instead of raising on poisoned data.

    ``data`` is the bytes read, or None when the range touched a bad block; ``error`` is then
    the :class:`~pmemsim.errors.MediaError` (a PoisonError) saying where. Unpacks as
    ``data, error = s.read_mcsafe(addr, n)``.
    """

    data: bytes | None
    error: MediaError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _teardown(holders: list[Holder]) -> None:
    """Unmap everything, without deep flush and without events (deleting a set)."""
    for p in teardown(holders):
        _release_part(p)


def _release_part(p: MappedPart) -> None:
    release_use(p.key)
    if p.source.sds is not None:
        rec = p.source.sds
        p.source._sds = replace(rec, refcount=max(0, rec.refcount - 1))


def _still_mapped(segs: list[tuple[MappedPart, int, int]]) -> None:
    """After a "before" event: its callback may have removed what the operation is about to
    touch, or closed the set. Then nothing is written, as on libpmem2 (its unmapped map
    refuses every use)."""
    for p, _, _ in segs:
        if p.gone:
            raise error_for(
                ErrorCode.INVALID_PMEM2_MAP,
                f"the part map at 0x{p.address:x} was unmapped by an event callback",
            )


def _check_int(name: str, value: object, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid {name} {value!r}")
    return value


def _check_flags(flags: object) -> MemFlag:
    if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~_MEM_MASK or flags < 0:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid mem flags {flags!r}")
    return _MEM_FLAGS[flags]


def _map_error(exc: Pmem2Failure, what: str) -> PmemError:
    code = (
        ErrorCode.GRANULARITY_NOT_SUPPORTED
        if exc.code == Pmem2Code.GRANULARITY_NOT_SUPPORTED
        else ErrorCode.INVALID_PMEM2_MAP
    )
    return exc.as_error(code, what)


class Set:
    """Parts of one or more sources mapped as part maps, with their data operations.

    Create it from a :class:`Config` (a required granularity at least). Use it as a context
    manager or call :meth:`close`; closing unmaps everything without deep flush and without
    events, as deleting a libpmemset set does.
    """

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{config!r} is not a pmemsim.Config")
        cfg = config.validated()
        assert isinstance(cfg.backend, Backend) and cfg.granularity is not None
        self._cfg = cfg
        self.backend: Backend = cfg.backend
        self.required_granularity: Granularity = cfg.granularity
        self._events = Dispatcher(self, cfg.event_callback, cfg.user_arg)
        self._coalescing = Coalescing.NONE
        self._effective: Granularity | None = None
        self._holders: list[Holder] = []
        #: (start addresses, parts) in address order, replaced whole at every map and unmap:
        #: a data operation in another thread reads one consistent pair.
        self._index: tuple[list[int], list[MappedPart]] = ([], [])
        self._last: MappedPart | None = None
        self._previous: Holder | None = None
        self._user_region = user_region(cfg.reservation) if cfg.reservation else None
        #: A user's region is shared with other sets, maybe in other threads: placing into it
        #: or removing from it holds placement.lock. Regions of the set's own need nothing
        #: more than the set's lock (and then no lock order to keep with a backend's).
        self._region_lock: AbstractContextManager[object] = (
            placement.lock if self._user_region is not None else nullcontext()
        )
        self._finalizer = weakref.finalize(self, _teardown, self._holders)
        #: Held by every call that maps or unmaps (events fire under it: their callbacks may
        #: call the set again). Data operations do not take it (docs/concurrency.md).
        self._lock = threading.RLock()
        #: Bumped by every map and unmap (see _direct_store).
        self._generation = 0
        #: Fetched-once functions (pmem2_get_*_fn): the same object every time, never missing.
        self.persist_fn: Callable[[int, int], None] = self.persist
        self.flush_fn: Callable[[int, int], None] = self.flush
        self.drain_fn: Callable[[], None] = self.drain

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._holders)} part maps"
        return f"<Set {self.backend.name} {state}>"

    @property
    def _parts(self) -> list[MappedPart]:
        """Every part, in address order (tests and benchmarks reach the backend maps here)."""
        return self._index[1]

    # -- life cycle --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Unmap everything (no deep flush, no events)."""
        with self._lock:
            self._finalizer()
            self._generation += 1
            self._index = ([], [])
            self._last = None
            self._previous = None

    def __enter__(self) -> Set:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise error_for(ErrorCode.NO_PART_MAPPED, "the set is closed")

    @property
    def config(self) -> Config:
        """The set's own copy of its config."""
        return self._cfg

    # -- granularity and coalescing ----------------------------------------------------

    @property
    def granularity(self) -> Granularity:
        """The effective granularity, fixed by the first successful map."""
        if self._effective is None:
            raise error_for(ErrorCode.NO_PART_MAPPED, "no part has been mapped yet")
        return self._effective

    @property
    def coalescing(self) -> Coalescing:
        return self._coalescing

    @coalescing.setter
    def coalescing(self, value: Coalescing | int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1, 2):
            raise error_for(
                ErrorCode.INVALID_COALESCING_VALUE, f"invalid coalescing value {value!r}"
            )
        self._coalescing = Coalescing(value)

    # -- mapping -----------------------------------------------------------------------

    def map(self, part: Part) -> Descriptor:
        """Map ``part`` (consuming it) and return the descriptor of its part map.

        With coalescing the descriptor (and PART_ADD) covers the whole merged part map.
        """
        with self._lock:
            return self._map(part)

    def _map(self, part: Part) -> Descriptor:
        self._check_mappable(part)
        source = part.source
        bsrc = source.handle(self.backend)
        sds = check_sds(source, bsrc, self._cfg.acceptable_states)
        if source.badblock_detection:
            scan_badblocks(source, bsrc, self._events)
            # Its callbacks may have closed the set or the source, or mapped the part.
            self._check_mappable(part)
        size = bsrc.size
        offset, length = part.offset, part.length
        if length == 0:
            if size == 0:
                raise error_for(
                    ErrorCode.MAP_LENGTH_UNSET,
                    f"length 0 asks for the whole of empty {source!r}",
                )
            if offset >= size:
                raise error_for(
                    ErrorCode.OFFSET_OUT_OF_RANGE,
                    f"offset {offset} is beyond the end of {source!r}",
                )
            length = size - offset
        # libpmemset's order: the file's size first, then the length's alignment (checked
        # when the reservation is made).
        grown_from: int | None = None
        if offset + length > size and source.kind in ("file", "temporary"):
            if source.flags & source.flags.DO_NOT_GROW:
                raise error_for(
                    ErrorCode.SOURCE_FILE_IS_TOO_SMALL,
                    f"{source!r} is {size} bytes; the part needs {offset + length} "
                    "and DO_NOT_GROW is set",
                )
            source.grow(offset + length)
            grown_from = size
        try:
            align = self.backend.alignment
            if length % align:
                raise error_for(
                    ErrorCode.LENGTH_UNALIGNED, f"length {length} is not a multiple of {align}"
                )
            holder = self._place(bsrc, source, offset, length)
        except BaseException:
            if grown_from is not None:
                source.grow(grown_from)  # changes nothing on failure
            raise
        part.consumed = True
        self._previous = holder
        self._reindex()
        acquire_use(holder.parts[-1].key)
        # The record is updated before any event: a raising callback must not leave a
        # mapped part without its user on record.
        if sds is not None:
            state, record = sds
            source._sds = replace(record, refcount=record.refcount + 1)
        if self._events.listening & Kind.PART_ADD:
            self._events.fire(PartAddEvent(holder.address, holder.size, source))
        if sds is not None and self._events.listening & Kind.SDS_UPDATE:
            assert source._sds is not None
            self._events.fire(SdsUpdateEvent(source._sds, source, state))
        return Descriptor(holder.address, holder.size)

    def _check_mappable(self, part: Part) -> None:
        self._check_open()
        if not isinstance(part, Part):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{part!r} is not a pmemsim.Part")
        if part.consumed:
            raise error_for(ErrorCode.PART_NOT_FOUND, f"{part!r} was already mapped")
        if part.source.closed:
            raise error_for(ErrorCode.INVALID_PMEM2_SOURCE, f"{part.source!r} is closed")
        self._check_reservation()

    def _check_reservation(self) -> None:
        if self._user_region is not None and self._user_region.raw.deleted:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"the set's reservation {self._cfg.reservation!r} is closed"
            )

    def _unmapped(self, parts: list[MappedPart]) -> None:
        """Bookkeeping after parts are unmapped: users, and SDS records with SDS_UPDATE.

        Every part is released before the first event, so a raising callback cannot leave
        users on record for parts that are gone.
        """
        updates = []
        for p in parts:
            _release_part(p)
            if p.source.sds is not None:
                updates.append(SdsUpdateEvent(p.source.sds, p.source))
        if self._events.listening & Kind.SDS_UPDATE:
            for ev in updates:
                self._events.fire(ev)

    def _place(self, bsrc: BackendSource, source: Source, offset: int, length: int) -> Holder:
        with self._region_lock:
            self._check_reservation()  # again: another thread may have closed it meanwhile
            slot = choose(self.backend, self._coalescing, self._previous, self._user_region, length)
            try:
                bmap = self._map_at(bsrc, offset, length, slot)
            except BaseException:
                slot.undo()
                raise
            part = MappedPart(source, offset, length, slot.address, bmap, source.identity)
            return attach(slot, part, self._holders)

    def _map_at(self, bsrc: BackendSource, offset: int, length: int, slot: Slot) -> BackendMap:
        raw = slot.region.raw
        try:
            bmap = self.backend.map(
                bsrc, offset, length, self.required_granularity, raw, slot.address - raw.address
            )
        except Pmem2Failure as exc:
            raise _map_error(exc, "libpmem2 could not map the part") from None
        if self._effective is not None and bmap.granularity != self._effective:
            bmap.unmap()
            raise error_for(
                ErrorCode.GRANULARITY_MISMATCH,
                f"this part maps with {bmap.granularity.name} granularity; the set's is "
                f"{self._effective.name}",
            )
        self._effective = bmap.granularity
        return bmap

    def _reindex(self) -> None:
        parts = sorted((p for h in self._holders for p in h.parts), key=lambda p: p.address)
        self._index = ([p.address for p in parts], parts)
        self._last = None
        self._generation += 1

    def _direct_store(self, addr: int, length: int) -> tuple[int, StoreFn | None]:
        """The backend's store for ``[addr, addr + length)`` if one part holds all of it.

        Views cache it with the generation it belongs to; any map or unmap bumps the
        generation, so a cached store never outlives the mapping it writes to.
        """
        if not self.closed:
            starts, parts = self._index
            i = bisect_right(starts, addr) - 1
            if i >= 0 and addr + length <= parts[i].end:
                return self._generation, parts[i].map.store
        return self._generation, None

    # -- lookups -----------------------------------------------------------------------

    def first_part_map(self) -> PartMap | None:
        """The part map at the lowest address (a new handle), or None."""
        self._check_open()
        return PartMap(self, self._holders[0]) if self._holders else None

    def next_part_map(self, pmap: PartMap) -> PartMap | None:
        """The part map after ``pmap`` in address order (a new handle), or None."""
        h = self._own(pmap)
        i = self._holders.index(h)
        return PartMap(self, self._holders[i + 1]) if i + 1 < len(self._holders) else None

    def part_map_by_address(self, addr: int) -> PartMap:
        """The part map containing byte ``addr`` (a new handle)."""
        self._check_open()
        _check_int("address", addr)
        for h in self._holders:
            if h.address <= addr < h.end:
                return PartMap(self, h)
        raise error_for(ErrorCode.CANNOT_FIND_PART_MAP, f"no part map contains 0x{addr:x}")

    def part_maps(self) -> Iterator[Descriptor]:
        """Descriptors of every part map, in address order."""
        return iter([Descriptor(h.address, h.size) for h in self._holders])

    def _own(self, pmap: PartMap) -> Holder:
        self._check_open()
        if not isinstance(pmap, PartMap):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{pmap!r} is not a PartMap")
        h = pmap._live()
        if pmap._set is not self or h not in self._holders:
            raise error_for(ErrorCode.CANNOT_FIND_PART_MAP, f"{pmap!r} is not part of this set")
        return h

    # -- removing ----------------------------------------------------------------------

    def remove_part_map(self, pmap: PartMap) -> None:
        """Deep-flush, fire PART_REMOVE and unmap the part map; ``pmap`` becomes invalid.

        Fails with PART_MAP_POSSIBLE_USE_AFTER_DROP while another handle to it is alive.
        """
        with self._lock:
            h = self._own(pmap)
            if h.refs > 1:
                raise error_for(
                    ErrorCode.PART_MAP_POSSIBLE_USE_AFTER_DROP,
                    f"{h.refs - 1} other handle(s) to this part map are still alive; "
                    "drop them first",
                )
            caller = _getframe(1)
            self._deep_flush_range(h.address, h.size, caller)
            if self._events.listening & Kind.PART_REMOVE:
                self._events.fire(PartRemoveEvent(h.address, h.size))
            try:
                self._unmap_holder(h)  # nothing left to do if the callback closed the set
            finally:
                pmap.drop()
                self._reindex()

    def remove_range(self, addr: int, length: int) -> None:
        """Remove every part that overlaps ``[addr, addr + length)``, whole.

        Fires REMOVE_RANGE first (always), deep-flushes the range, then removes whole parts:
        a part map that loses every part fires PART_REMOVE; one that loses parts in the
        middle is split in two. A range that overlaps nothing succeeds and removes nothing
        (libpmemset's code; its manual claimed CANNOT_FIND_PART_MAP).
        """
        with self._lock:
            self._check_open()
            _check_int("address", addr)
            _check_int("length", length)
            if self._events.listening & Kind.REMOVE_RANGE:
                self._events.fire(RemoveRangeEvent(addr, length))
            if self.closed:
                return  # the callback closed the set: nothing is left to remove
            end = addr + length
            hit = [h for h in self._holders if h.address < end and addr < h.end] if length else []
            used = [h for h in hit if h.refs]
            if used:
                # libpmemset refuses once it reaches such a part map, after removing those
                # before it; refusing before removing anything leaves the set as it was.
                raise error_for(
                    ErrorCode.PART_MAP_POSSIBLE_USE_AFTER_DROP,
                    f"the part map at 0x{used[0].address:x} in the range has "
                    f"{used[0].refs} live handle(s); drop them first",
                )
            self._deep_flush_range(addr, length, _getframe(1))
            try:
                for h in hit:
                    if h.removed:  # an event callback removed it, or closed the set
                        continue
                    gone = [p for p in h.parts if p.address < end and addr < p.end]
                    if not gone:
                        continue
                    if len(gone) == len(h.parts):
                        if self._events.listening & Kind.PART_REMOVE:
                            self._events.fire(PartRemoveEvent(h.address, h.size))
                        self._unmap_holder(h)
                        continue
                    for p in gone:
                        p.unmap()
                    # The part map keeps its first run of parts, and stays the one a coalesced
                    # part grows (libpmemset keeps its part map object; a split adds the rest).
                    with self._region_lock:
                        split(h, [p for p in h.parts if p not in gone], self._holders)
                    self._unmapped(gone)
            finally:  # a raising callback must not leave the index pointing at unmapped parts
                self._reindex()

    def _unmap_holder(self, h: Holder) -> None:
        if h.removed:
            return  # an event callback closed the set (or removed it) meanwhile
        for p in h.parts:
            p.unmap()
        with self._region_lock:
            detach(h, self._holders)
        if self._previous is h:
            self._previous = self._neighbour(h)
        self._unmapped(h.parts)  # last: it fires events

    def _neighbour(self, h: Holder) -> Holder | None:
        """The part map that takes over from a removed previous part map for coalescing:
        libpmemset's pmemset_update_previous_part_map picks the one below it, else the one
        above it."""
        below = [x for x in self._holders if x.address < h.address]
        if below:
            return below[-1]
        return self._holders[0] if self._holders else None

    # -- address checking --------------------------------------------------------------

    def _segments(self, addr: int, length: int) -> list[tuple[MappedPart, int, int]]:
        """``[addr, addr + length)`` cut at part boundaries; every byte must be mapped."""
        self._check_open()
        if type(addr) is not int or addr < 0:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid address {addr!r}")
        if type(length) is not int or length < 0:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid length {length!r}")
        starts, parts = self._index
        i = bisect_right(starts, addr) - 1
        if i < 0 or not (addr < parts[i].end or (length == 0 and addr == parts[i].end)):
            raise error_for(ErrorCode.CANNOT_FIND_PART_MAP, f"0x{addr:x} is not in any part map")
        out = []
        pos, end = addr, addr + length
        while True:
            p = parts[i]
            take = min(end, p.end) - pos
            out.append((p, pos, take))
            pos += take
            if pos >= end:
                return out
            i += 1
            if i >= len(parts) or parts[i].address != pos:
                raise error_for(
                    ErrorCode.LENGTH_OUT_OF_RANGE,
                    f"[0x{addr:x}, 0x{end:x}) runs past the mapped range at 0x{pos:x}",
                )

    # -- data --------------------------------------------------------------------------

    def read(self, addr: int, length: int) -> bytes:
        """What a load of ``length`` bytes at ``addr`` sees.

        A range touching a bad block raises :class:`~pmemsim.errors.PoisonError` with the
        faulting address (the SIGBUS of real hardware); see :meth:`read_mcsafe`.
        """
        p = self._last
        if (
            p is not None
            and type(addr) is int
            and type(length) is int
            and length >= 0
            and p.address <= addr
            and addr + length <= p.address + p.length
        ):
            return p.map.read(addr, length)
        segs = self._segments(addr, length)
        if len(segs) == 1:
            self._last = segs[0][0]
        return b"".join(p.map.read(a, n) for p, a, n in segs)

    def read_mcsafe(self, addr: int, length: int) -> SafeRead:
        """Read like :meth:`read`, but a poisoned range is returned as an error, not raised.

        libpmem2's ``pmem2_source_pread_mcsafe`` on each part's source: ``SafeRead(data,
        None)``, or ``SafeRead(None, error)`` with the faulting address when the backend
        knows it. Bad arguments still raise, and so does a source that cannot do it
        (anonymous memory: NotSupportedError, as libpmem2 answers).
        """
        out = []
        for p, a, n in self._segments(addr, length):
            if not n:
                continue
            try:
                out.append(p.map.read_mcsafe(a, n))
            except PoisonError as poisoned:
                return SafeRead(None, poisoned)
            except Pmem2Failure as exc:
                if exc.code == Pmem2Code.IO_FAIL:
                    err = PoisonError(
                        ErrorCode.IO_FAIL,
                        f"poisoned read (media error) in [0x{a:x}, 0x{a + n:x})",
                        source=p.source.label,
                        pmem2_code=exc.code,
                        pmem2_message=exc.message,
                    )
                    return SafeRead(None, err)
                raise exc.as_error(
                    ErrorCode.NOSUPP, f"machine-check-safe read of {p.source!r}"
                ) from None
        return SafeRead(b"".join(out), None)

    def store(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """An ordinary store (cached, not flushed): what assignment through a pointer does."""
        self._store(addr, data, _getframe(1))

    def _store(self, addr: int, data: object, caller: FrameType) -> None:
        if type(data) is not bytes:
            data = _bytes(data)
        p = self._last
        n = len(data)
        if (
            p is None
            or type(addr) is not int
            or addr < p.address
            or addr + n > p.address + p.length
        ):
            segs = self._segments(addr, n)
            if len(segs) > 1:
                for sp, a, k in segs:
                    sp.map.store(a, data[a - addr : a - addr + k], caller)
                return
            p = self._last = segs[0][0]
        p.map.store(addr, data, caller)

    def memcpy(
        self,
        dest: int,
        src: bytes | bytearray | memoryview | int,
        length: int | None = None,
        flags: MemFlag | int = 0,
    ) -> None:
        """libpmemset's memcpy: copy, flush and drain as ``flags`` say (fires COPY, DRAIN).

        ``src`` is a buffer, or an address in the set (then ``length`` is required and the
        ranges must not overlap: use memmove for that).
        """
        p = self._last
        if (
            p is not None
            and type(src) is bytes
            and length is None
            and (type(flags) is int or type(flags) is MemFlag)
            and 0 <= flags <= _MEM_MASK
            and type(dest) is int
            and p.address <= dest
            and dest + len(src) <= p.address + p.length
            and not self._events.listening & _COPY_OR_DRAIN
        ):
            # _mem's common case, with its checks: one part, no listener. This path is what
            # the real backend's per-call overhead target (bench/bench_real.py) measures.
            p.map.memmove(dest, src, _MEM_FLAGS[flags], _getframe(1))
            return
        self._mem(Kind.COPY, dest, src, length, flags, _getframe(1))

    def memmove(
        self,
        dest: int,
        src: bytes | bytearray | memoryview | int,
        length: int | None = None,
        flags: MemFlag | int = 0,
    ) -> None:
        """Like memcpy, for ranges that may overlap (fires MOVE, DRAIN)."""
        self._mem(Kind.MOVE, dest, src, length, flags, _getframe(1))

    def _mem(
        self,
        kind: int,
        dest: int,
        src: object,
        length: int | None,
        flags: object,
        caller: FrameType,
    ) -> None:
        f = _check_flags(flags)
        if isinstance(src, int) and not isinstance(src, bool):
            if length is None:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, "copying from an address needs a length"
                )
            _check_int("length", length)
            if kind == Kind.COPY and src < dest + length and dest < src + length and length:
                raise InvalidArgumentError(ErrorCode.EINVAL, "memcpy ranges overlap; use memmove")
            self._segments(src, length)
            data = self.read(src, length)
        else:
            data = _bytes(src)
            if length is not None:
                _check_int("length", length)
                if length > len(data):
                    raise InvalidArgumentError(
                        ErrorCode.EINVAL, f"length {length} exceeds the {len(data)}-byte buffer"
                    )
                data = data[:length]
        segs = self._segments(dest, len(data))
        if len(segs) == 1:
            self._last = segs[0][0]
        listening = self._events.listening
        if listening & kind:
            ev_src = src if isinstance(src, int) else data
            ev = CopyEvent if kind == Kind.COPY else MoveEvent
            self._events.fire(ev(ev_src, dest, len(data), f))
            _still_mapped(segs)
        self._apply(segs, dest, data, f, caller)
        if not f & MemFlag.NODRAIN and listening & Kind.DRAIN:
            self._events.fire(DrainEvent())

    def _apply(
        self,
        segs: list[tuple[MappedPart, int, int]],
        dest: int,
        data: bytes,
        f: MemFlag,
        caller: FrameType,
    ) -> None:
        if len(segs) == 1:
            segs[0][0].map.memmove(dest, data, f, caller)
            return
        for p, a, n in segs:
            p.map.memmove(a, data[a - dest : a - dest + n], f | MemFlag.NODRAIN, caller)
        if not f & (MemFlag.NODRAIN | MemFlag.NOFLUSH):
            segs[-1][0].map.drain(caller)

    def memset(self, dest: int, value: int, length: int, flags: MemFlag | int = 0) -> None:
        """Fill ``length`` bytes with ``value`` (fires SET, DRAIN)."""
        self._memset(dest, value, length, flags, _getframe(1))

    def _memset(self, dest: int, value: int, length: int, flags: object, caller: FrameType) -> None:
        f = _check_flags(flags)
        if type(value) is not int or not 0 <= value <= 255:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"memset value {value!r} is not a byte")
        _check_int("length", length)
        segs = self._segments(dest, length)
        listening = self._events.listening
        if listening & Kind.SET:
            self._events.fire(SetEvent(dest, value, length, f))
            _still_mapped(segs)
        self._apply(segs, dest, bytes([value]) * length, f, caller)
        if not f & MemFlag.NODRAIN and listening & Kind.DRAIN:
            self._events.fire(DrainEvent())

    def flush(self, addr: int, length: int) -> None:
        """Flush ``[addr, addr + length)`` toward persistence; durable only after a drain."""
        self._flush(addr, length, _getframe(1))

    def _flush(self, addr: int, length: int, caller: FrameType) -> None:
        segs = self._segments(addr, length)
        if self._events.listening & Kind.FLUSH:
            self._events.fire(FlushEvent(addr, length))
            _still_mapped(segs)
        for p, a, n in segs:
            if n:
                p.map.flush(a, n, caller)

    def drain(self) -> None:
        """Wait for earlier flushes and non-temporal stores (a fence)."""
        self._drain(_getframe(1))

    def _drain(self, caller: FrameType) -> None:
        self._check_open()
        parts = self._index[1]
        if parts:
            parts[0].map.drain(caller)
        if self._events.listening & Kind.DRAIN:
            self._events.fire(DrainEvent())

    def persist(self, addr: int, length: int) -> None:
        """flush then drain: ``[addr, addr + length)`` is durable when this returns."""
        caller = _getframe(1)
        self._flush(addr, length, caller)
        self._drain(caller)

    def deep_flush(self, addr: int, length: int) -> None:
        """Flush through the memory controller for every part map meeting the range."""
        self._check_open()
        _check_int("address", addr)
        _check_int("length", length)
        self._deep_flush_range(addr, length, _getframe(1))

    def _deep_flush_range(self, addr: int, length: int, caller: FrameType) -> None:
        end = addr + length
        for p in self._index[1]:
            lo, hi = max(addr, p.address), min(end, p.end)
            if lo < hi:
                try:
                    p.map.deep_flush(lo, hi - lo, caller)
                except Pmem2Failure as exc:
                    raise exc.as_error(
                        ErrorCode.DEEP_FLUSH_FAIL, f"deep flush of 0x{lo:x} failed"
                    ) from None

    # -- views -------------------------------------------------------------------------

    def view(
        self, where: Descriptor | PartMap | int | None = None, size: int | None = None
    ) -> View:
        """A :class:`View` of a range: a descriptor, a part map, an address and size, or the
        first part map when nothing is given."""
        self._check_open()
        if where is None:
            if not self._holders:
                raise error_for(ErrorCode.NO_PART_MAPPED, "no part has been mapped yet")
            h = self._holders[0]
            address, length = h.address, h.size
        elif isinstance(where, (Descriptor, PartMap)):
            address, length = where.address, where.size
        else:
            address = _check_int("address", where)
            if size is None:
                raise InvalidArgumentError(ErrorCode.EINVAL, "a view at an address needs a size")
            length = size
        if size is not None and not isinstance(where, int):
            length = size
        self._segments(address, _check_int("size", length))
        return View(self, address, length)

    # -- tracking ----------------------------------------------------------------------

    def track(
        self,
        kinds: EventType | int,
        callback: TrackCallback | None,
        *,
        address: int | None = None,
        length: int | None = None,
        user_data: Any = None,
    ) -> TrackHandle:
        """Call ``callback(set, handle, event, user_data)`` for events of ``kinds``.

        With no ``address``: every such event. With ``address`` alone: events whose address
        is exactly that. With ``address`` and ``length`` (the prefix form): events whose
        range meets ``[address, address + length)``. Returns a handle for :meth:`untrack`.
        """
        self._check_open()
        return self._events.track(
            kinds, callback, address=address, length=length, user_data=user_data
        )

    def untrack(self, handle: TrackHandle) -> None:
        """Stop a track made by :meth:`track`."""
        if not isinstance(handle, TrackHandle):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{handle!r} is not a TrackHandle")
        self._events.untrack(handle)

    @property
    def tracks(self) -> tuple[TrackHandle, ...]:
        return self._events.tracks
