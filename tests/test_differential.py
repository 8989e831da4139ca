"""Differential conformance: every test body here runs against the simulator and libpmem2.

The ``rig`` fixture is parametrized over the backends; a body states what must happen (the
references: docs/pmemset.md, pmemset.md and libpmem2.md), never which backend it runs on, so
one body holds both to the same contents, events, error classes and codes. The simulator is
configured as the machine libpmem2 runs on here (``differential.offered``). The Hypothesis
state machine that runs random operation sequences on both side by side is in
test_differential_machine.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from differential import (
    BACKENDS,
    PAGE,
    Rig,
    backend_or_skip,
    fails,
    offered,
    pattern,
    rig_on,
)

import pmemsim as pm
from pmemsim import ErrorCode as E
from pmemsim import Pmem2Code as P2

G = pm.Granularity
F = pm.MemFlag
SF = pm.SourceFlag
FS = ("ext4", "tmpfs")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> pm.Backend:
    return backend_or_skip(request.param)


@pytest.fixture
def rig(backend: pm.Backend, tmp_path: Path) -> Iterator[Rig]:
    yield from rig_on(backend, tmp_path)


# -- sources ---------------------------------------------------------------------------


class TestSources:
    @pytest.mark.parametrize("fs", FS)
    def test_whole_file_maps_its_content(self, rig: Rig, fs: str) -> None:
        content = pattern(3 * PAGE)
        s = rig.set()
        d = s.map(pm.Part(rig.file(fs=fs, content=content)))
        assert d.size == 3 * PAGE
        assert s.read(d.address, d.size) == content
        assert rig.kinds() == ["PART_ADD"]

    @pytest.mark.parametrize("fs", FS)
    def test_part_of_a_file_at_an_offset(self, rig: Rig, fs: str) -> None:
        content = pattern(4 * PAGE)
        s = rig.set()
        d = s.map(pm.Part(rig.file(fs=fs, content=content), PAGE, 2 * PAGE))
        assert s.read(d.address, d.size) == content[PAGE : 3 * PAGE]

    @pytest.mark.parametrize("fs", FS)
    def test_file_grows_to_fit_a_part(self, rig: Rig, fs: str) -> None:
        s = rig.set()
        src = rig.file(fs=fs, flags=SF.CREATE_ALWAYS)
        d = s.map(pm.Part(src, PAGE, 2 * PAGE))
        assert os.path.getsize(rig.path(fs=fs)) == 3 * PAGE
        assert s.read(d.address, d.size) == bytes(2 * PAGE)

    @pytest.mark.parametrize("fs", FS)
    def test_persisted_data_is_in_the_file_after_close(self, rig: Rig, fs: str) -> None:
        s = rig.set()
        src = rig.file(fs=fs, flags=SF.CREATE_ALWAYS)
        d = s.map(pm.Part(src, 0, 2 * PAGE))
        s.memcpy(d.address + 100, pattern(300))  # flags 0: flushed and drained
        s.store(d.address + PAGE, b"stored")
        s.persist(d.address + PAGE, 6)
        s.close()
        src.close()
        data = rig.path(fs=fs).read_bytes()
        assert data[100:400] == pattern(300)
        assert data[PAGE : PAGE + 6] == b"stored"
        assert data[:100] == bytes(100)

    @pytest.mark.parametrize("fs", FS)
    def test_two_maps_of_one_file_see_each_other(self, rig: Rig, fs: str) -> None:
        s = rig.set()
        src = rig.file(fs=fs, size=PAGE)
        a = s.map(pm.Part(src, 0, PAGE))
        b = s.map(pm.Part(src, 0, PAGE))
        assert a.address != b.address
        s.memcpy(a.address + 8, b"shared")
        assert s.read(b.address + 8, 6) == b"shared"

    @pytest.mark.parametrize("fs", FS)
    def test_temporary_source_vanishes(self, rig: Rig, fs: str) -> None:
        before = sorted(os.listdir(rig.dirs[fs]))
        s = rig.set()
        src = rig.temporary(fs)
        d = s.map(pm.Part(src, 0, 2 * PAGE))
        s.memset(d.address, 0x5A, 2 * PAGE)
        assert s.read(d.address + PAGE, 4) == b"\x5a" * 4
        s.close()
        src.close()
        assert sorted(os.listdir(rig.dirs[fs])) == before

    def test_anonymous_memory_is_zeroed_at_every_map(self, rig: Rig) -> None:
        s = rig.set()
        src = rig.anon(2 * PAGE)
        d = s.map(pm.Part(src))
        s.memset(d.address, 0xFF, d.size)
        with s.first_part_map() as pm_:  # type: ignore[union-attr]
            s.remove_part_map(pm_)
        d2 = s.map(pm.Part(src))
        assert s.read(d2.address, d2.size) == bytes(2 * PAGE)

    def test_two_maps_of_anonymous_memory_are_separate(self, rig: Rig) -> None:
        s = rig.set()
        src = rig.anon(PAGE)
        a = s.map(pm.Part(src))
        b = s.map(pm.Part(src))
        s.memcpy(a.address, b"only in a")
        assert s.read(b.address, 9) == bytes(9)

    @pytest.mark.parametrize("fs", FS)
    def test_source_closed_while_mapped(self, rig: Rig, fs: str) -> None:
        s = rig.set()
        src = rig.file(fs=fs, content=b"x" * PAGE)
        d = s.map(pm.Part(src))
        src.close()
        s.memcpy(d.address, b"after close")
        assert s.read(d.address, 12) == b"after closex"
        with fails(pm.SourceError, E.INVALID_PMEM2_SOURCE):
            s.map(pm.Part(src))
        s.close()  # the last map going lets go of the file, with what was persisted
        assert rig.path(fs=fs).read_bytes()[:12] == b"after closex"

    @pytest.mark.parametrize("fs", FS)
    def test_touching_what_a_shrunk_file_lost(self, rig: Rig, fs: str) -> None:
        # In C, touching a page the file no longer covers is SIGBUS; here it must be an
        # error that changes nothing, on every backend.
        s = rig.set()
        d = s.map(pm.Part(rig.file(fs=fs, content=pattern(2 * PAGE))))
        os.truncate(rig.path(fs=fs), PAGE)
        assert s.read(d.address, 8) == pattern(8)  # what the file still covers works
        for call in (
            lambda: s.read(d.address + PAGE, 4),
            lambda: s.store(d.address + PAGE, b"lost"),
            lambda: s.memcpy(d.address + PAGE - 2, b"lost"),
            lambda: s.memset(d.address + PAGE, 0, 1),
            lambda: s.persist(d.address, 2 * PAGE),
        ):
            with fails(pm.SourceError, E.SOURCE_FILE_IS_TOO_SMALL):
                call()
        assert s.read(d.address, PAGE) == pattern(PAGE)

    @pytest.mark.parametrize("required", list(G))
    def test_image_source(
        self, rig: Rig, required: pm.Granularity, request: pytest.FixtureRequest
    ) -> None:
        # docs/simulator.md: an image gets what the platform offers files (it stands for a
        # crashed file on the same device).
        if rig.name == "real" and offered("file") != G.BYTE:
            request.applymarker(
                pytest.mark.xfail(
                    strict=True,
                    reason="the real backend puts images in anonymous memory, which is BYTE",
                )
            )
        snap = pm.Snapshot("image", 2 * PAGE, {1: b"a" * PAGE})
        s = rig.set(required)
        part = pm.Part(rig.keep(pm.Source.from_image(snap)))
        if offered("file") > required:
            with fails(pm.MapError, E.GRANULARITY_NOT_SUPPORTED, P2.GRANULARITY_NOT_SUPPORTED):
                s.map(part)
            return
        d = s.map(part)
        assert s.granularity == offered("file")
        assert s.read(d.address + PAGE - 1, 2) == b"\0a"
        s.memcpy(d.address + PAGE, b"b")
        assert s.read(d.address + PAGE, 2) == b"ba"
        assert snap.read(PAGE, 2) == b"aa"  # mapping an image never changes it


# -- granularity -----------------------------------------------------------------------


KINDS = ("ext4", "tmpfs", "anonymous")


class TestGranularity:
    def _source(self, rig: Rig, kind: str) -> pm.Source:
        return rig.anon(PAGE) if kind == "anonymous" else rig.file(fs=kind, size=PAGE)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("required", list(G))
    def test_the_platform_table(self, rig: Rig, kind: str, required: pm.Granularity) -> None:
        s = rig.set(required)
        part = pm.Part(self._source(rig, kind), 0, PAGE)
        if offered(kind) > required:
            with fails(pm.MapError, E.GRANULARITY_NOT_SUPPORTED, P2.GRANULARITY_NOT_SUPPORTED):
                s.map(part)
            assert not part.consumed
            assert list(s.part_maps()) == []
            assert rig.kinds() == []
        else:
            s.map(part)
            assert s.granularity == offered(kind)

    def test_mismatch_between_anonymous_and_file(self, rig: Rig) -> None:
        s = rig.set(G.PAGE)
        s.map(pm.Part(rig.anon(PAGE)))
        src = rig.file(flags=SF.CREATE_ALWAYS)
        if offered("file") == offered("anonymous"):
            s.map(pm.Part(src, 0, PAGE))
            assert len(list(s.part_maps())) == 2
            return
        rig.take_events()
        with fails(pm.MapError, E.GRANULARITY_MISMATCH):
            s.map(pm.Part(src, 0, PAGE))
        assert os.path.getsize(rig.path()) == 0  # grown for the map, shrunk back
        assert len(list(s.part_maps())) == 1
        assert rig.kinds() == []
        assert s.granularity == G.BYTE

    def test_not_set(self, rig: Rig) -> None:
        with fails(pm.InvalidArgumentError, E.GRANULARITY_NOT_SET):
            pm.Set(pm.Config(backend=rig.backend))

    def test_unknown_before_the_first_map(self, rig: Rig) -> None:
        s = rig.set()
        with fails(pm.LookupFailure, E.NO_PART_MAPPED):
            _ = s.granularity


# -- mapping misuse --------------------------------------------------------------------


class TestMapMisuse:
    def test_empty_file(self, rig: Rig) -> None:
        s = rig.set()
        with fails(pm.SourceError, E.MAP_LENGTH_UNSET):
            s.map(pm.Part(rig.file(flags=SF.CREATE_ALWAYS)))

    def test_offset_past_the_end_of_the_whole_file(self, rig: Rig) -> None:
        s = rig.set()
        with fails(pm.RangeError, E.OFFSET_OUT_OF_RANGE):
            s.map(pm.Part(rig.file(size=PAGE), PAGE))

    @pytest.mark.parametrize("length", [100, PAGE + 1])
    def test_unaligned_length(self, rig: Rig, length: int) -> None:
        s = rig.set()
        with fails(pm.InvalidArgumentError, E.LENGTH_UNALIGNED):
            s.map(pm.Part(rig.file(size=2 * PAGE), 0, length))

    @pytest.mark.parametrize("required", list(G))
    @pytest.mark.parametrize("kind", KINDS)
    def test_unaligned_offset(self, rig: Rig, kind: str, required: pm.Granularity) -> None:
        # libpmem2 checks the offset before the granularity: OFFSET_UNALIGNED whatever the
        # required granularity.
        s = rig.set(required)
        src = rig.anon(2 * PAGE) if kind == "anonymous" else rig.file(fs=kind, size=2 * PAGE)
        part = pm.Part(src, 100, PAGE)
        with fails(pm.MapError, E.INVALID_PMEM2_MAP, P2.OFFSET_UNALIGNED):
            s.map(part)
        assert not part.consumed
        assert list(s.part_maps()) == []
        if kind != "anonymous":
            assert os.path.getsize(rig.path(fs=kind)) == 2 * PAGE
        assert rig.kinds() == []

    def test_beyond_a_file_that_must_not_grow(self, rig: Rig) -> None:
        s = rig.set()
        rig.file(size=PAGE).close()
        src = rig.file(flags=SF.DO_NOT_GROW)
        with fails(pm.SourceError, E.SOURCE_FILE_IS_TOO_SMALL):
            s.map(pm.Part(src, 0, 2 * PAGE))
        assert os.path.getsize(rig.path()) == PAGE

    @pytest.mark.parametrize(("offset", "length"), [(0, 2 * PAGE), (PAGE, PAGE), (2 * PAGE, PAGE)])
    def test_beyond_anonymous_memory(self, rig: Rig, offset: int, length: int) -> None:
        s = rig.set()
        with fails(pm.MapError, E.INVALID_PMEM2_MAP, P2.MAP_RANGE):
            s.map(pm.Part(rig.anon(PAGE), offset, length))

    def test_directory(self, rig: Rig) -> None:
        with fails(pm.InvalidArgumentError, E.INVALID_SOURCE_TYPE):
            pm.Source.from_file(rig.dirs["ext4"])

    def test_missing_file(self, rig: Rig) -> None:
        with fails(pm.SourceError, E.INVALID_SOURCE_PATH):
            pm.Source.from_file(rig.path("missing"))

    def test_temporary_in_a_missing_folder(self, rig: Rig) -> None:
        with fails(pm.SourceError, E.INVALID_SOURCE_PATH):
            pm.Source.temporary(rig.path("missing"))

    def test_read_only_file(self, rig: Rig) -> None:
        p = rig.path("ro")
        p.write_bytes(bytes(PAGE))
        p.chmod(0o400)
        immutable = False
        if os.geteuid() == 0:  # root opens a 0400 file for writing; an immutable one it cannot
            immutable = (
                subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0
            )
            if not immutable:
                pytest.skip("running as root without chattr +i: every file is writable")
        try:
            with fails(pm.SourceError, E.INVALID_SOURCE_PATH):
                pm.Source.from_file(p)
        finally:
            if immutable:
                subprocess.run(["chattr", "-i", str(p)], check=True)

    def test_consumed_part(self, rig: Rig) -> None:
        s = rig.set()
        part = pm.Part(rig.anon(PAGE))
        s.map(part)
        with fails(pm.LookupFailure, E.PART_NOT_FOUND):
            s.map(part)

    def test_closed_source(self, rig: Rig) -> None:
        s = rig.set()
        src = rig.file(size=PAGE)
        src.close()
        with fails(pm.SourceError, E.INVALID_PMEM2_SOURCE):
            s.map(pm.Part(src))

    def test_closed_set(self, rig: Rig) -> None:
        s = rig.set()
        d = s.map(pm.Part(rig.anon(PAGE)))
        s.close()
        with fails(pm.LookupFailure, E.NO_PART_MAPPED):
            s.read(d.address, 1)
        with fails(pm.LookupFailure, E.NO_PART_MAPPED):
            s.map(pm.Part(rig.anon(PAGE)))


# -- reservations and coalescing -------------------------------------------------------


class TestReservations:
    def test_first_fit_and_reuse(self, rig: Rig) -> None:
        res = rig.reservation(4 * PAGE)
        s = rig.set(reservation=res)
        src = rig.file(size=4 * PAGE)
        ds = [s.map(pm.Part(src, i * PAGE, PAGE)) for i in range(3)]
        assert [d.address - res.address for d in ds] == [0, PAGE, 2 * PAGE]
        with fails(pm.MapError, E.CANNOT_FIT_PART_MAP):
            s.map(pm.Part(src, 0, 2 * PAGE))
        with s.part_map_by_address(ds[1].address) as middle:
            s.remove_part_map(middle)
        d = s.map(pm.Part(src, 3 * PAGE, PAGE))
        assert d.address == res.address + PAGE

    def test_reservation_with_maps_cannot_close(self, rig: Rig) -> None:
        res = pm.Reservation(2 * PAGE, backend=rig.backend)
        s = rig.set(reservation=res)
        s.map(pm.Part(rig.anon(PAGE)))
        with fails(pm.StateError, E.PART_MAP_POSSIBLE_USE_AFTER_DROP, P2.VM_RESERVATION_NOT_EMPTY):
            res.close()
        assert not res.closed
        s.close()
        res.close()
        assert res.closed
        res.close()  # again: nothing

    @pytest.mark.parametrize(
        ("size", "code"), [(0, E.EINVAL), (-PAGE, E.EINVAL), (PAGE + 1, E.LENGTH_UNALIGNED)]
    )
    def test_invalid_reservation_size(self, rig: Rig, size: int, code: E) -> None:
        with fails(pm.InvalidArgumentError, code):
            pm.Reservation(size, backend=rig.backend)

    def test_reservation_at_a_taken_address(self, rig: Rig) -> None:
        res = rig.reservation(2 * PAGE)
        with fails(pm.MapError, E.CANNOT_FIT_PART_MAP, P2.MAPPING_EXISTS):
            pm.Reservation(PAGE, address=res.address, backend=rig.backend)

    def test_reservation_at_an_unaligned_address(self, rig: Rig) -> None:
        res = rig.reservation(2 * PAGE)
        with fails(pm.MapError, E.CANNOT_FIT_PART_MAP, P2.ADDRESS_UNALIGNED):
            pm.Reservation(PAGE, address=res.address + 100, backend=rig.backend)

    def test_reservation_of_another_backend(self, rig: Rig) -> None:
        from pmemsim_backends.sim import SimBackend

        other = pm.Reservation(PAGE, backend=SimBackend())
        with fails(pm.InvalidArgumentError, E.EINVAL):
            rig.set(reservation=other)

    @pytest.mark.parametrize("mode", [pm.Coalescing.FULL, pm.Coalescing.OPPORTUNISTIC])
    def test_coalescing_in_a_reservation(self, rig: Rig, mode: pm.Coalescing) -> None:
        res = rig.reservation(4 * PAGE)
        s = rig.set(reservation=res)
        s.coalescing = mode
        src = rig.file(size=3 * PAGE, content=pattern(3 * PAGE))
        ds = [s.map(pm.Part(src, i * PAGE, PAGE)) for i in range(3)]
        assert [(d.address - res.address, d.size) for d in ds] == [
            (0, PAGE),
            (0, 2 * PAGE),
            (0, 3 * PAGE),
        ]
        ev = rig.take_events()
        assert [(e.type.name, e.addr - res.address, e.len) for e in ev] == [
            ("PART_ADD", 0, PAGE),
            ("PART_ADD", 0, 2 * PAGE),
            ("PART_ADD", 0, 3 * PAGE),
        ]
        assert all(e.source is src for e in ev)
        assert s.read(res.address, 3 * PAGE) == pattern(3 * PAGE)
        # Removing the middle part splits the part map in two.
        s.remove_range(res.address + PAGE + 10, 1)
        assert [(d.address - res.address, d.size) for d in s.part_maps()] == [
            (0, PAGE),
            (2 * PAGE, PAGE),
        ]
        assert [(e.type.name, e.addr - res.address, e.len) for e in rig.take_events()] == [
            ("REMOVE_RANGE", PAGE + 10, 1)
        ]

    def test_full_coalescing_fails_when_the_range_is_taken(self, rig: Rig) -> None:
        res = rig.reservation(3 * PAGE)
        s = rig.set(reservation=res)
        src = rig.anon(PAGE)
        ds = [s.map(pm.Part(src)) for _ in range(3)]
        with s.part_map_by_address(ds[1].address) as middle:
            s.remove_part_map(middle)
        s.coalescing = pm.Coalescing.FULL  # the previous part map ends the reservation
        part = pm.Part(src)
        with fails(pm.MapError, E.CANNOT_COALESCE_PARTS):
            s.map(part)
        assert not part.consumed
        s.coalescing = pm.Coalescing.OPPORTUNISTIC  # falls back to first fit
        assert s.map(part).address == res.address + PAGE

    @pytest.mark.parametrize("value", [3, -1, True, 1.0])
    def test_invalid_coalescing(self, rig: Rig, value: Any) -> None:
        s = rig.set()
        with fails(pm.InvalidArgumentError, E.INVALID_COALESCING_VALUE):
            s.coalescing = value


# -- lookups and removal ---------------------------------------------------------------


class TestLookups:
    def test_walk_in_address_order(self, rig: Rig) -> None:
        res = rig.reservation(4 * PAGE)
        s = rig.set(reservation=res)
        assert s.first_part_map() is None
        src = rig.anon(2 * PAGE)
        ds = [s.map(pm.Part(src, 0, n * PAGE)) for n in (1, 2)]
        walked = []
        pmap = s.first_part_map()
        while pmap is not None:
            walked.append(pmap.descriptor)
            pmap = s.next_part_map(pmap)
        assert walked == ds == list(s.part_maps())
        assert s.part_map_by_address(ds[1].address + 2 * PAGE - 1).descriptor == ds[1]
        with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
            s.part_map_by_address(ds[1].address + 2 * PAGE)

    def test_dropped_handle(self, rig: Rig) -> None:
        s = rig.set()
        s.map(pm.Part(rig.anon(PAGE)))
        pmap = s.first_part_map()
        assert pmap is not None
        pmap.drop()
        with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
            _ = pmap.address
        with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
            s.remove_part_map(pmap)
        with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
            s.next_part_map(pmap)
        assert len(list(s.part_maps())) == 1

    def test_possible_use_after_drop(self, rig: Rig) -> None:
        s = rig.set()
        d = s.map(pm.Part(rig.anon(PAGE)))
        rig.take_events()
        a, b = s.first_part_map(), s.part_map_by_address(d.address)
        assert a is not None
        with fails(pm.StateError, E.PART_MAP_POSSIBLE_USE_AFTER_DROP):
            s.remove_part_map(a)
        assert rig.kinds() == []
        assert s.read(d.address, 1) == b"\0"
        b.drop()
        s.remove_part_map(a)
        assert [(e.type.name, e.addr, e.len) for e in rig.take_events()] == [
            ("PART_REMOVE", d.address, PAGE)
        ]
        assert not a.valid
        with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
            s.read(d.address, 1)

    def test_removing_what_is_not_there(self, rig: Rig) -> None:
        s = rig.set()
        d = s.map(pm.Part(rig.anon(PAGE)))
        rig.take_events()
        s.remove_range(d.address + PAGE, PAGE)
        s.remove_range(d.address, 0)
        assert [(e.type.name, e.addr, e.len) for e in rig.take_events()] == [
            ("REMOVE_RANGE", d.address + PAGE, PAGE),
            ("REMOVE_RANGE", d.address, 0),
        ]
        assert list(s.part_maps()) == [d]

    @pytest.mark.parametrize(("addr", "length"), [(-1, 1), (0, -1), (1.0, 1), (0, None)])
    def test_remove_range_malformed(self, rig: Rig, addr: Any, length: Any) -> None:
        s = rig.set()
        s.map(pm.Part(rig.anon(PAGE)))
        rig.take_events()
        with fails(pm.InvalidArgumentError, E.EINVAL):
            s.remove_range(addr, length)
        assert rig.kinds() == []

    def test_one_range_over_two_part_maps(self, rig: Rig) -> None:
        res = rig.reservation(3 * PAGE)
        s = rig.set(reservation=res)
        src = rig.file(size=2 * PAGE)
        a, b = (s.map(pm.Part(src, i * PAGE, PAGE)) for i in range(2))
        rig.take_events()
        s.remove_range(a.address + PAGE - 1, 2)
        assert [(e.type.name, e.addr, e.len) for e in rig.take_events()] == [
            ("REMOVE_RANGE", a.address + PAGE - 1, 2),
            ("PART_REMOVE", a.address, PAGE),
            ("PART_REMOVE", b.address, PAGE),
        ]
        assert s.first_part_map() is None


# -- data ------------------------------------------------------------------------------

MEM_FLAGS = [
    F.NONE,
    F.NODRAIN,
    F.NONTEMPORAL,
    F.TEMPORAL,
    F.WC,
    F.WB,
    F.NOFLUSH,
    F.NOFLUSH | F.NODRAIN,
    F.NONTEMPORAL | F.NODRAIN,
    F.TEMPORAL | F.WB | F.NODRAIN,
    F.NONTEMPORAL | F.WC | F.NOFLUSH,
]


@pytest.fixture
def two_pages(rig: Rig) -> tuple[pm.Set, pm.Descriptor]:
    """A set with one two-page file part map (on ext4); no events recorded yet."""
    s = rig.set()
    d = s.map(pm.Part(rig.file(size=2 * PAGE)))
    rig.take_events()
    return s, d


class TestData:
    @pytest.mark.parametrize("flags", MEM_FLAGS)
    @pytest.mark.parametrize("length", [1, 100, 256, PAGE + 10])
    def test_memcpy(
        self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor], flags: pm.MemFlag, length: int
    ) -> None:
        s, d = two_pages
        data = pattern(length, seed=length)
        s.memcpy(d.address + 30, data, flags=flags)
        assert s.read(d.address + 30, length) == data
        assert s.read(d.address, 30) == bytes(30)
        expected = [("COPY", data, d.address + 30, length, flags)]
        if not flags & F.NODRAIN:
            expected.append(("DRAIN",))  # type: ignore[arg-type]
        assert [_plain(e) for e in rig.take_events()] == expected

    @pytest.mark.parametrize("flags", MEM_FLAGS)
    def test_memmove_overlapping(
        self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor], flags: pm.MemFlag
    ) -> None:
        s, d = two_pages
        s.store(d.address, pattern(500))
        rig.take_events()
        s.memmove(d.address + 100, d.address, 400, flags)
        assert s.read(d.address, 500) == pattern(100) + pattern(400)
        expected = [("MOVE", d.address, d.address + 100, 400, flags)]
        if not flags & F.NODRAIN:
            expected.append(("DRAIN",))  # type: ignore[arg-type]
        assert [_plain(e) for e in rig.take_events()] == expected

    @pytest.mark.parametrize("flags", MEM_FLAGS)
    def test_memset(
        self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor], flags: pm.MemFlag
    ) -> None:
        s, d = two_pages
        s.memset(d.address + PAGE - 5, 0xA5, 10, flags)
        assert s.read(d.address + PAGE - 6, 12) == b"\0" + b"\xa5" * 10 + b"\0"
        expected = [("SET", d.address + PAGE - 5, 0xA5, 10, flags)]
        if not flags & F.NODRAIN:
            expected.append(("DRAIN",))  # type: ignore[arg-type]
        assert [_plain(e) for e in rig.take_events()] == expected

    def test_copy_within_the_set(self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = two_pages
        s.store(d.address, b"source bytes")
        rig.take_events()
        s.memcpy(d.address + PAGE, d.address, 12)
        assert s.read(d.address + PAGE, 12) == b"source bytes"
        assert [_plain(e) for e in rig.take_events()] == [
            ("COPY", d.address, d.address + PAGE, 12, F.NONE),
            ("DRAIN",),
        ]

    def test_typed_stores_and_view(self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = two_pages
        v = s.view(d)
        v.u64[3] = 2**64 - 2
        v.i32[0] = -5
        v.pack_into("<HQ", 100, 7, 9)
        v[200:203] = b"xyz"
        assert (v.u64[3], v.i32[0], v.unpack_from("<HQ", 100), v[200:203]) == (
            2**64 - 2,
            -5,
            (7, 9),
            b"xyz",
        )
        assert rig.kinds() == []  # ordinary stores fire nothing

    def test_a_copy_across_two_adjacent_part_maps(self, rig: Rig) -> None:
        res = rig.reservation(2 * PAGE)
        s = rig.set(reservation=res)
        src = rig.file(size=2 * PAGE)
        s.map(pm.Part(src, 0, PAGE))
        s.map(pm.Part(src, PAGE, PAGE))
        data = pattern(200)
        s.memcpy(res.address + PAGE - 100, data, flags=F.NONTEMPORAL)
        s.persist(res.address + PAGE - 100, 200)
        assert s.read(res.address + PAGE - 100, 200) == data

    @pytest.mark.parametrize("flags", [1 << 6, -1, True, 1.0, "0"])
    def test_invalid_flags(
        self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor], flags: Any
    ) -> None:
        s, d = two_pages
        for call in (
            lambda: s.memcpy(d.address, b"abc", flags=flags),
            lambda: s.memmove(d.address, d.address + 8, 3, flags),
            lambda: s.memset(d.address, 1, 3, flags),
        ):
            with fails(pm.InvalidArgumentError, E.EINVAL):
                call()
        assert s.read(d.address, 16) == bytes(16)
        assert rig.kinds() == []

    def test_out_of_range(self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = two_pages
        for addr, code, cls in (
            (d.address + d.size, E.CANNOT_FIND_PART_MAP, pm.LookupFailure),
            (d.address - 1, E.CANNOT_FIND_PART_MAP, pm.LookupFailure),
            (d.address + d.size - 2, E.LENGTH_OUT_OF_RANGE, pm.RangeError),
        ):
            for call in (
                lambda a=addr: s.store(a, b"four"),
                lambda a=addr: s.memcpy(a, b"four"),
                lambda a=addr: s.memset(a, 1, 4),
                lambda a=addr: s.memmove(a, d.address, 4),
                lambda a=addr: s.memmove(d.address, a, 4),
                lambda a=addr: s.read(a, 4),
                lambda a=addr: s.flush(a, 4),
                lambda a=addr: s.persist(a, 4),
            ):
                with fails(cls, code):  # type: ignore[arg-type]
                    call()
        assert s.read(d.address, d.size) == bytes(d.size)
        assert rig.kinds() == []

    def test_view_bounds(self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = two_pages
        v = s.view(d.address, 64)
        with fails(pm.RangeError, E.OFFSET_OUT_OF_RANGE):
            v.u64[8] = 1
        with fails(pm.RangeError, E.LENGTH_OUT_OF_RANGE):
            v.write(60, b"12345")
        with fails(pm.InvalidArgumentError, E.EINVAL):
            v.u8[0] = 256
        assert s.read(d.address, 72) == bytes(72)

    def test_overlapping_memcpy(self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = two_pages
        with fails(pm.InvalidArgumentError, E.EINVAL):
            s.memcpy(d.address + 4, d.address, 8)
        with fails(pm.InvalidArgumentError, E.EINVAL):
            s.memset(d.address, 256, 1)
        assert rig.kinds() == []


class TestPersistence:
    def test_flush_drain_persist_events(
        self, rig: Rig, two_pages: tuple[pm.Set, pm.Descriptor]
    ) -> None:
        s, d = two_pages
        s.store(d.address + 10, b"data")
        s.flush(d.address + 10, 4)
        s.drain()
        s.persist(d.address + PAGE, 100)
        s.persist_fn(d.address, 1)
        s.flush_fn(d.address, 1)
        s.drain_fn()
        assert [_plain(e) for e in rig.take_events()] == [
            ("FLUSH", d.address + 10, 4),
            ("DRAIN",),
            ("FLUSH", d.address + PAGE, 100),
            ("DRAIN",),
            ("FLUSH", d.address, 1),
            ("DRAIN",),
            ("FLUSH", d.address, 1),
            ("DRAIN",),
        ]
        assert s.persist_fn is s.persist_fn

    @pytest.mark.parametrize("fs", FS)
    def test_deep_flush_of_a_file(self, rig: Rig, fs: str) -> None:
        s = rig.set()
        d = s.map(pm.Part(rig.file(fs=fs, size=2 * PAGE)))
        rig.take_events()
        s.store(d.address, b"deep")
        s.persist(d.address, 4)
        s.deep_flush(d.address, d.size)
        s.deep_flush(d.address - PAGE, 3 * PAGE)  # clipped to the part maps
        s.view(d).deep_flush()
        assert rig.kinds() == ["FLUSH", "DRAIN"]

    def test_remove_anonymous_part_map(self, rig: Rig) -> None:
        s = rig.set()
        d = s.map(pm.Part(rig.anon(PAGE)))
        s.memcpy(d.address, b"gone")
        rig.take_events()
        pmap = s.first_part_map()
        assert pmap is not None
        s.remove_part_map(pmap)
        assert [_plain(e) for e in rig.take_events()] == [("PART_REMOVE", d.address, PAGE)]

    def test_drain_on_an_empty_set(self, rig: Rig) -> None:
        s = rig.set()
        s.drain()
        assert rig.kinds() == ["DRAIN"]


def _plain(e: Any) -> tuple[Any, ...]:
    """An event as a tuple of its fields, with its type's name first."""
    t = e.type.name
    if t in ("COPY", "MOVE"):
        return (t, e.src, e.dest, e.len, e.flags)
    if t == "SET":
        return (t, e.dest, e.value, e.len, e.flags)
    if t in ("FLUSH", "PART_REMOVE", "REMOVE_RANGE"):
        return (t, e.addr, e.len)
    if t == "PART_ADD":
        return (t, e.addr, e.len, e.source)
    return (t,)
