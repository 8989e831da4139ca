"""libpmem2 as a pmemsim backend: the set layer's part maps on real pmem2 maps.

Every part map lives in a pmem2 vm reservation (the set's own, or the user's), so
coalescing and first fit place maps at real addresses. Granularity is negotiated by
libpmem2 itself: the set's required granularity goes into the pmem2 config and the map
reports what it got. ``PMEM2_FORCE_GRANULARITY`` in the environment makes libpmem2 *pretend*
(docs/real.md): it then serves finer granularities than the platform has, with real cache
flush instructions but no msync, so nothing becomes durable on a file without DAX.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pmemsim.backend import Backend, BackendReservation, BackendSource, Pmem2Failure
from pmemsim.enums import Granularity
from pmemsim.errors import BackendUnavailableError, ErrorCode, Pmem2Code

from . import _ffi, address_space
from .capabilities import Capabilities, LibraryInfo
from .errors import check, failure, not_supported
from .map import RealFileMap, RealMap
from .reservation import RealReservation
from .source import RealSource

if TYPE_CHECKING:
    from pmemsim.source import Source

__all__ = ["FORCE_GRANULARITY", "HEADROOM", "GranularityProbe", "RealBackend"]

#: The environment variable that makes libpmem2 pretend a granularity (read at every map).
FORCE_GRANULARITY = "PMEM2_FORCE_GRANULARITY"
#: Free address space left after each new reservation, so that it can grow (as the
#: simulator leaves 1 GiB).
HEADROOM = 1 << 30
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class GranularityProbe:
    """What one map of a file in a directory gave for one required granularity."""

    required: Granularity
    #: The granularity the map got, or None if it failed.
    effective: Granularity | None
    pmem2_code: int | None = None
    message: str = ""


class RealBackend(Backend):
    """The platform this process runs on, through libpmem2.

    There is one such platform per process, so ``RealBackend()`` always returns the same
    object: ``Config(backend="real")`` and ``Reservation(..., backend="real")`` then agree.

    :param binding: an opened library (default: the process-wide one); tests pass one with
        functions hidden to check that a missing feature fails cleanly (a separate object).
    """

    name = "real"
    binding: _ffi.Binding
    _shared: ClassVar[RealBackend | None] = None

    def __new__(cls, *, binding: _ffi.Binding | None = None) -> RealBackend:
        if binding is not None:
            return super().__new__(cls)
        with _lock:
            if cls._shared is None:
                try:
                    shared = _ffi.binding()
                except _ffi.LibraryUnavailable as exc:
                    raise BackendUnavailableError(
                        ErrorCode.NOSUPP, f"backend 'real': {exc}"
                    ) from None
                made = super().__new__(cls)
                made.binding = shared
                cls._shared = made
            return cls._shared

    def __init__(self, *, binding: _ffi.Binding | None = None) -> None:
        if binding is not None:
            self.binding = binding

    def __repr__(self) -> str:
        return f"RealBackend({self.binding.info.path})"

    @property
    def library(self) -> LibraryInfo:
        return self.binding.info

    @property
    def capabilities(self) -> Capabilities:
        return self.binding.capabilities

    @staticmethod
    def forced_granularity() -> str | None:
        """The granularity libpmem2 is told to pretend, if any (see the module docstring)."""
        return os.environ.get(FORCE_GRANULARITY) or None

    # -- the backend contract ----------------------------------------------------------

    def open_source(self, source: Source) -> RealSource:
        return RealSource(self.binding, source)

    def reserve(self, size: int, address: int | None = None) -> RealReservation:
        b = self.binding
        if not b.capabilities.vm_reservations:
            raise not_supported("vm reservations", "pmem2_vm_reservation_new", b.info.path)
        box = b.ffi.new("struct pmem2_vm_reservation **")
        known = address_space.padding_is_predictable(b)
        if address is not None:
            check(b, b.lib.pmem2_vm_reservation_new(box, address, size), "pmem2_vm_reservation_new")
            end = address_space.padded_end(address, size) if known else None
            return RealReservation(b, box, end)
        if known:
            end = address_space.padded_end(0, size)
            for _ in range(3):  # another thread may take the range first
                # Free room after the padding lets the reservation grow when parts coalesce
                # (the kernel fills a hole from its top, so that room goes last).
                at = address_space.free_address(end + HEADROOM, address_space.alignment(size))
                if at is None:
                    break
                ret = b.lib.pmem2_vm_reservation_new(box, at, size)
                if ret == 0:
                    return RealReservation(b, box, at + end)
                if ret != Pmem2Code.MAPPING_EXISTS:
                    check(b, ret, "pmem2_vm_reservation_new")
        check(b, b.lib.pmem2_vm_reservation_new(box, 0, size), "pmem2_vm_reservation_new")
        return RealReservation(b, box)

    def map(
        self,
        source: BackendSource,
        offset: int,
        length: int,
        granularity: Granularity,
        reservation: BackendReservation,
        reservation_offset: int,
    ) -> RealMap:
        if not isinstance(source, RealSource) or not isinstance(reservation, RealReservation):
            raise Pmem2Failure(
                Pmem2Code.INVALID_FILE_HANDLE, "source or reservation is not the real backend's"
            )
        if source.closed:
            raise Pmem2Failure(Pmem2Code.FILE_HANDLE_NOT_SET, f"{source.label} is closed")
        reservation._live()  # a deleted one is freed memory to libpmem2
        b = self.binding
        lib, ffi = b.lib, b.ffi
        cfg = ffi.new("struct pmem2_config **")
        check(b, lib.pmem2_config_new(cfg), "pmem2_config_new")
        box = ffi.new("struct pmem2_map **")
        try:
            c = cfg[0]
            ret = lib.pmem2_config_set_required_store_granularity(c, int(granularity))
            check(b, ret, "pmem2_config_set_required_store_granularity")
            check(b, lib.pmem2_config_set_offset(c, offset), "pmem2_config_set_offset")
            check(b, lib.pmem2_config_set_length(c, length), "pmem2_config_set_length")
            ret = lib.pmem2_config_set_vm_reservation(c, reservation.ptr, reservation_offset)
            check(b, ret, "pmem2_config_set_vm_reservation")
            ret = lib.pmem2_map_new(box, c, source.ptr)
            if ret:
                raise failure(b, ret, "pmem2_map_new")
        finally:
            lib.pmem2_config_delete(cfg)
        m: RealMap
        if source.own_fd is not None:
            m = RealFileMap(b, source, box, reservation, offset, source.own_fd)
        else:
            m = RealMap(b, source, box, reservation, offset)
        if source.snapshot is not None:
            _fill(m, source, offset, length)
        return m

    # -- what a directory gets ---------------------------------------------------------

    def probe(self, directory: str | os.PathLike[str]) -> list[GranularityProbe]:
        """Map one page of a temporary file in ``directory`` at each required granularity."""
        from pmemsim.source import Source

        out = []
        with Source.temporary(directory) as src:
            src.grow(4096)
            bsrc = self.open_source(src)
            try:
                for g in Granularity:
                    res = self.reserve(4096)
                    try:
                        m = self.map(bsrc, 0, 4096, g, res, 0)
                    except Pmem2Failure as exc:
                        out.append(GranularityProbe(g, None, exc.code, exc.message))
                    else:
                        out.append(GranularityProbe(g, m.granularity))
                        m.unmap()
                    finally:
                        res.delete()
            finally:
                bsrc.close()
        return out


def _fill(m: RealMap, source: RealSource, offset: int, length: int) -> None:
    """Copy a snapshot's pages into a fresh (zeroed) map of it."""
    snap = source.snapshot
    assert snap is not None
    page = 4096
    end = min(offset + length, snap.size)
    for p in range(offset // page, -(-end // page)):
        if p not in snap.pages and snap.loader is None:
            continue  # absent pages read as zeros, which the map already holds
        start = p * page
        data = snap.page(p)[: min(page, end - start)]
        m.store(m.address + start - offset, data, sys._getframe())
