"""Part maps: lookups, effective granularity, placement (coalescing, user reservations),
removal (remove_part_map, remove_range) and closing a set."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim.errors import ErrorCode

PAGE = 4096
CL = pm.Granularity.CACHE_LINE
BYTE = pm.Granularity.BYTE

MakeSet = Callable[..., pm.Set]


class Recorder:
    """An event callback that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, s: pm.Set, event: Any, arg: Any) -> None:
        self.events.append(event)

    def kinds(self) -> list[pm.EventType]:
        return [e.type for e in self.events]

    def clear(self) -> None:
        self.events.clear()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def anon_part(pages: int = 1) -> pm.Part:
    return pm.Part(pm.Source.anonymous(pages * PAGE))


def descs(s: pm.Set) -> list[tuple[int, int]]:
    return [(d.address, d.size) for d in s.part_maps()]


def walk(s: pm.Set) -> list[tuple[int, int]]:
    """The part maps as first / next see them."""
    out = []
    pmap = s.first_part_map()
    while pmap is not None:
        out.append((pmap.address, pmap.size))
        nxt = s.next_part_map(pmap)
        pmap.drop()
        pmap = nxt
    return out


# -- lookups -------------------------------------------------------------------------------


class TestLookups:
    def test_empty_set(self, make_set: MakeSet) -> None:
        s = make_set()
        assert s.first_part_map() is None
        assert list(s.part_maps()) == []
        with pytest.raises(pm.LookupFailure) as ei:
            s.part_map_by_address(0x10_0000_0000)
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP

    def test_first_next_in_address_order(self, sim: SimBackend, make_set: MakeSet) -> None:
        res = pm.Reservation(3 * PAGE, backend=sim)
        s = make_set(reservation=res)
        a = s.map(anon_part())
        b = s.map(anon_part())
        c = s.map(anon_part())
        assert [a.address, b.address, c.address] == [res.address + i * PAGE for i in range(3)]
        with s.part_map_by_address(a.address) as pa:
            s.remove_part_map(pa)
        d = s.map(anon_part())  # mapped last, lowest address
        assert d.address == res.address
        expected = [(d.address, PAGE), (b.address, PAGE), (c.address, PAGE)]
        assert walk(s) == expected
        assert descs(s) == expected

    def test_next_of_last_is_none(self, make_set: MakeSet) -> None:
        s = make_set()
        s.map(anon_part())
        first = s.first_part_map()
        assert first is not None
        assert s.next_part_map(first) is None

    def test_walk_separate_reservations(self, make_set: MakeSet) -> None:
        s = make_set()
        ds = [s.map(anon_part(n)) for n in (1, 2, 3)]
        assert walk(s) == sorted((d.address, d.size) for d in ds)
        assert sorted(d.size for d in ds) == [PAGE, 2 * PAGE, 3 * PAGE]

    def test_by_address(self, make_set: MakeSet) -> None:
        s = make_set()
        a = s.map(anon_part(2))
        b = s.map(anon_part(1))
        for addr, want in [
            (a.address, a),
            (a.address + 1, a),
            (a.address + a.size - 1, a),
            (b.address, b),
            (b.address + b.size - 1, b),
        ]:
            with s.part_map_by_address(addr) as pmap:
                assert pmap.descriptor == want
                assert (pmap.address, pmap.size) == (want.address, want.size)
        for addr in (a.address - 1, a.address + a.size, b.address + b.size, 0):
            with pytest.raises(pm.LookupFailure) as ei:
                s.part_map_by_address(addr)
            assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP

    @pytest.mark.parametrize("addr", [-1, True, 1.0, "0x1000", None])
    def test_by_address_invalid(self, make_set: MakeSet, addr: Any) -> None:
        s = make_set()
        s.map(anon_part())
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.part_map_by_address(addr)
        assert ei.value.code == ErrorCode.EINVAL

    def test_handles_to_one_part_map_are_equal(self, make_set: MakeSet) -> None:
        s = make_set()
        d = s.map(anon_part(2))
        e = s.map(anon_part(1))
        p1 = s.first_part_map()
        p2 = s.part_map_by_address(d.address + 5)
        p3 = s.part_map_by_address(e.address)
        assert p1 == p2
        assert hash(p1) == hash(p2)
        assert p1 != p3

    def test_next_of_dropped_handle(self, make_set: MakeSet) -> None:
        s = make_set()
        s.map(anon_part())
        pmap = s.first_part_map()
        assert pmap is not None
        pmap.drop()
        assert not pmap.valid
        with pytest.raises(pm.LookupFailure) as ei:
            s.next_part_map(pmap)
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        with pytest.raises(pm.LookupFailure):
            _ = pmap.address

    def test_next_of_handle_of_another_set(self, make_set: MakeSet) -> None:
        s, t = make_set(), make_set()
        s.map(anon_part())
        t.map(anon_part())
        other = t.first_part_map()
        assert other is not None
        with pytest.raises(pm.LookupFailure) as ei:
            s.next_part_map(other)
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP

    def test_next_needs_a_part_map(self, make_set: MakeSet) -> None:
        s = make_set()
        s.map(anon_part())
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.next_part_map(s.first_part_map().descriptor)  # type: ignore[arg-type, union-attr]
        assert ei.value.code == ErrorCode.EINVAL


# -- effective granularity -----------------------------------------------------------------


class TestGranularity:
    def test_no_part_mapped_before_first_map(self, make_set: MakeSet) -> None:
        s = make_set()
        with pytest.raises(pm.LookupFailure) as ei:
            _ = s.granularity
        assert ei.value.code == ErrorCode.NO_PART_MAPPED

    @pytest.mark.parametrize(
        ("platform", "required"),
        [
            (CL, CL),
            (CL, pm.Granularity.PAGE),
            (BYTE, CL),
            (BYTE, BYTE),
            (BYTE, pm.Granularity.PAGE),
        ],
    )
    def test_effective_is_what_the_platform_gives(
        self, platform: pm.Granularity, required: pm.Granularity
    ) -> None:
        sim = SimBackend(platform)
        with pm.Set(pm.Config(granularity=required, backend=sim)) as s:
            s.map(anon_part())
            assert s.granularity is platform
            assert s.required_granularity is required

    @pytest.mark.parametrize(
        ("platform", "required"),
        [(CL, BYTE), (pm.Granularity.PAGE, BYTE), (pm.Granularity.PAGE, CL)],
    )
    def test_not_supported_when_required_is_finer(
        self, platform: pm.Granularity, required: pm.Granularity
    ) -> None:
        sim = SimBackend(platform)
        with pm.Set(pm.Config(granularity=required, backend=sim)) as s:
            part = anon_part()
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.GRANULARITY_NOT_SUPPORTED
            assert ei.value.pmem2_code == pm.Pmem2Code.GRANULARITY_NOT_SUPPORTED
            assert not part.consumed
            assert list(s.part_maps()) == []
            assert list(sim.iter_maps()) == []
            with pytest.raises(pm.LookupFailure) as e2:
                _ = s.granularity
            assert e2.value.code == ErrorCode.NO_PART_MAPPED

    @pytest.mark.parametrize("file_first", [True, False])
    def test_mismatch(self, tmp_path: Path, file_first: bool) -> None:
        sim = SimBackend(CL, anonymous_granularity=BYTE)
        (tmp_path / "f").write_bytes(bytes(PAGE))
        with (
            pm.Source.from_file(tmp_path / "f") as src,
            pm.Set(pm.Config(granularity=CL, backend=sim)) as s,
        ):
            file_part, anon = pm.Part(src), anon_part()
            first, second = (file_part, anon) if file_first else (anon, file_part)
            d = s.map(first)
            assert s.granularity is (CL if file_first else BYTE)
            with pytest.raises(pm.MapError) as ei:
                s.map(second)
            assert ei.value.code == ErrorCode.GRANULARITY_MISMATCH
            assert ei.value.code_name == "PMEMSET_E_GRANULARITY_MISMATCH"
            assert not second.consumed
            assert descs(s) == [(d.address, d.size)]
            assert len(list(sim.iter_maps())) == 1
            assert s.granularity is (CL if file_first else BYTE)

    def test_mismatch_while_coalescing_changes_nothing(self, tmp_path: Path) -> None:
        sim = SimBackend(CL, anonymous_granularity=BYTE)
        (tmp_path / "f").write_bytes(bytes(2 * PAGE))
        with (
            pm.Source.from_file(tmp_path / "f") as src,
            pm.Set(pm.Config(granularity=CL, backend=sim)) as s,
        ):
            d = s.map(pm.Part(src, 0, PAGE))
            s.coalescing = pm.Coalescing.FULL
            with pytest.raises(pm.MapError) as ei:
                s.map(anon_part())
            assert ei.value.code == ErrorCode.GRANULARITY_MISMATCH
            assert descs(s) == [(d.address, PAGE)]
            # The range after the part map is free again: a matching part still coalesces.
            d2 = s.map(pm.Part(src, PAGE, PAGE))
            assert (d2.address, d2.size) == (d.address, 2 * PAGE)

    def test_fixed_for_good(self, tmp_path: Path) -> None:
        sim = SimBackend(CL, anonymous_granularity=BYTE)
        (tmp_path / "f").write_bytes(bytes(PAGE))
        with (
            pm.Source.from_file(tmp_path / "f") as src,
            pm.Set(pm.Config(granularity=CL, backend=sim)) as s,
        ):
            d = s.map(anon_part())
            s.remove_range(d.address, d.size)
            assert list(s.part_maps()) == []
            assert s.granularity is BYTE  # removing every part map does not reset it
            with pytest.raises(pm.MapError) as ei:
                s.map(pm.Part(src))
            assert ei.value.code == ErrorCode.GRANULARITY_MISMATCH


# -- coalescing ----------------------------------------------------------------------------


COALESCING = [pm.Coalescing.OPPORTUNISTIC, pm.Coalescing.FULL]


class TestCoalescing:
    def test_default_is_none(self, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        assert s.coalescing is pm.Coalescing.NONE
        a = s.map(anon_part(2))
        b = s.map(anon_part(1))
        assert (a.size, b.size) == (2 * PAGE, PAGE)
        assert len(descs(s)) == 2
        assert b.address != a.end  # never placed right after without coalescing
        assert [(e.addr, e.len) for e in rec.events] == [(a.address, a.size), (b.address, b.size)]

    @pytest.mark.parametrize("mode", COALESCING)
    def test_merges_with_previous(self, make_set: MakeSet, rec: Recorder, mode: Any) -> None:
        s = make_set(event_callback=rec)
        s.coalescing = mode
        src_a, src_b, src_c = (pm.Source.anonymous(n * PAGE) for n in (2, 1, 3))
        a = s.map(pm.Part(src_a))
        b = s.map(pm.Part(src_b))
        c = s.map(pm.Part(src_c))
        assert (a.address, a.size) == (a.address, 2 * PAGE)
        assert (b.address, b.size) == (a.address, 3 * PAGE)
        assert (c.address, c.size) == (a.address, 6 * PAGE)
        assert descs(s) == [(a.address, 6 * PAGE)]
        assert walk(s) == [(a.address, 6 * PAGE)]
        assert [(e.type, e.addr, e.len, e.source) for e in rec.events] == [
            (pm.EventType.PART_ADD, a.address, 2 * PAGE, src_a),
            (pm.EventType.PART_ADD, a.address, 3 * PAGE, src_b),
            (pm.EventType.PART_ADD, a.address, 6 * PAGE, src_c),
        ]
        # Every part of the merged map is its own memory.
        for off, tag in [(0, b"a"), (2 * PAGE, b"b"), (3 * PAGE, b"c"), (6 * PAGE - 1, b"z")]:
            s.store(a.address + off, tag)
        assert s.read(a.address + 2 * PAGE - 1, 3) == b"\0b\0"
        assert s.read(a.address + 6 * PAGE - 1, 1) == b"z"
        with s.part_map_by_address(a.address + 5 * PAGE) as pmap:
            assert pmap.descriptor == pm.Descriptor(a.address, 6 * PAGE)

    @pytest.mark.parametrize("mode", COALESCING)
    def test_no_previous_part_map_behaves_like_none(self, make_set: MakeSet, mode: Any) -> None:
        s = make_set()
        s.coalescing = mode
        d = s.map(anon_part(2))
        assert d.size == 2 * PAGE
        assert descs(s) == [(d.address, 2 * PAGE)]

    @pytest.mark.parametrize("mode", COALESCING)
    def test_previous_removed_and_none_left_behaves_like_none(
        self, sim: SimBackend, make_set: MakeSet, mode: Any
    ) -> None:
        s = make_set()
        a = s.map(anon_part())
        s.coalescing = mode
        blocker = pm.Reservation(PAGE, address=a.end, backend=sim)
        with s.part_map_by_address(a.address) as pmap:
            s.remove_part_map(pmap)
        d = s.map(anon_part())  # no previous part map: FULL does not fail
        assert descs(s) == [(d.address, PAGE)]
        blocker.close()

    def test_full_fails_when_range_after_is_taken(
        self, sim: SimBackend, make_set: MakeSet, rec: Recorder
    ) -> None:
        s = make_set(event_callback=rec)
        a = s.map(anon_part())
        s.coalescing = pm.Coalescing.FULL
        blocker = pm.Reservation(PAGE, address=a.end, backend=sim)
        rec.clear()
        part = anon_part()
        with pytest.raises(pm.MapError) as ei:
            s.map(part)
        assert ei.value.code == ErrorCode.CANNOT_COALESCE_PARTS
        assert not part.consumed
        assert descs(s) == [(a.address, PAGE)]
        assert len(list(sim.iter_maps())) == 1
        assert rec.events == []
        # Once the range is free, the same part coalesces.
        blocker.close()
        d = s.map(part)
        assert (d.address, d.size) == (a.address, 2 * PAGE)

    def test_full_fails_when_only_part_of_the_range_is_taken(
        self, sim: SimBackend, make_set: MakeSet
    ) -> None:
        s = make_set()
        a = s.map(anon_part())
        s.coalescing = pm.Coalescing.FULL
        blocker = pm.Reservation(PAGE, address=a.end + 2 * PAGE, backend=sim)
        with pytest.raises(pm.MapError) as ei:
            s.map(anon_part(3))
        assert ei.value.code == ErrorCode.CANNOT_COALESCE_PARTS
        d = s.map(anon_part(2))  # fits before the blocker
        assert (d.address, d.size) == (a.address, 3 * PAGE)
        blocker.close()

    @pytest.mark.parametrize("mode", COALESCING)
    def test_failed_coalesced_map_gives_the_range_back(
        self, tmp_path: Path, sim: SimBackend, make_set: MakeSet, mode: Any
    ) -> None:
        s = make_set()
        a = s.map(anon_part())
        s.coalescing = mode
        (tmp_path / "f").write_bytes(bytes(PAGE))
        with pm.Source.from_file(tmp_path / "f") as src:
            part = pm.Part(src, 100, PAGE)  # libpmem2 refuses the unaligned offset
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.INVALID_PMEM2_MAP
            assert not part.consumed
            assert src.size == PAGE
        assert descs(s) == [(a.address, PAGE)]
        # The grown reservation was shrunk back: the range after the part map is free.
        pm.Reservation(PAGE, address=a.end, backend=sim).close()

    def test_opportunistic_falls_back(
        self, sim: SimBackend, make_set: MakeSet, rec: Recorder
    ) -> None:
        s = make_set(event_callback=rec)
        a = s.map(anon_part())
        s.coalescing = pm.Coalescing.OPPORTUNISTIC
        blocker = pm.Reservation(PAGE, address=a.end, backend=sim)
        rec.clear()
        b = s.map(anon_part(2))
        assert b.size == 2 * PAGE
        assert b.address not in (a.address, a.end)
        assert sorted(descs(s)) == sorted([(a.address, PAGE), (b.address, 2 * PAGE)])
        assert [(e.addr, e.len) for e in rec.events] == [(b.address, 2 * PAGE)]
        # The fallback part map is now the previous one: the next part grows it.
        c = s.map(anon_part())
        assert (c.address, c.size) == (b.address, 3 * PAGE)
        blocker.close()

    def test_switching_affects_later_maps_only(self, make_set: MakeSet) -> None:
        s = make_set()
        a = s.map(anon_part())
        b = s.map(anon_part())
        before = descs(s)
        s.coalescing = pm.Coalescing.FULL
        assert descs(s) == before  # switching merges nothing by itself
        c = s.map(anon_part())
        assert (c.address, c.size) == (b.address, 2 * PAGE)  # merged with the previous (b)
        s.coalescing = pm.Coalescing.NONE
        d = s.map(anon_part())
        assert d.size == PAGE and d.address != c.end
        s.coalescing = pm.Coalescing.OPPORTUNISTIC
        e = s.map(anon_part())
        assert (e.address, e.size) == (d.address, 2 * PAGE)
        assert sorted(descs(s)) == sorted(
            [(a.address, PAGE), (b.address, 2 * PAGE), (d.address, 2 * PAGE)]
        )

    @pytest.mark.parametrize("value", [0, 1, 2])
    def test_plain_ints_accepted(self, make_set: MakeSet, value: int) -> None:
        s = make_set()
        s.coalescing = value
        assert s.coalescing is pm.Coalescing(value)

    @pytest.mark.parametrize("value", [3, -1, 100, True, False, 1.0, "FULL", None])
    def test_invalid_value(self, make_set: MakeSet, value: Any) -> None:
        s = make_set()
        s.coalescing = pm.Coalescing.FULL
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.coalescing = value
        assert ei.value.code == ErrorCode.INVALID_COALESCING_VALUE
        assert s.coalescing is pm.Coalescing.FULL

    def test_coalescing_inside_a_user_reservation(self, sim: SimBackend, make_set: MakeSet) -> None:
        res = pm.Reservation(3 * PAGE, backend=sim)
        s = make_set(reservation=res)
        a = s.map(anon_part())
        s.map(anon_part())
        with s.part_map_by_address(a.address) as pmap:
            s.remove_part_map(pmap)  # slot 0 free; slot 1 is the previous part map
        s.coalescing = pm.Coalescing.FULL
        c = s.map(anon_part())
        assert (c.address, c.size) == (res.address + PAGE, 2 * PAGE)
        # The reservation ends right after: FULL cannot coalesce ...
        part = anon_part()
        with pytest.raises(pm.MapError) as ei:
            s.map(part)
        assert ei.value.code == ErrorCode.CANNOT_COALESCE_PARTS
        assert descs(s) == [(res.address + PAGE, 2 * PAGE)]
        # ... OPPORTUNISTIC falls back to first fit in the reservation.
        s.coalescing = pm.Coalescing.OPPORTUNISTIC
        d = s.map(part)
        assert (d.address, d.size) == (res.address, PAGE)
        assert descs(s) == [(res.address, PAGE), (res.address + PAGE, 2 * PAGE)]


# -- user reservations ---------------------------------------------------------------------


class TestUserReservation:
    def test_first_fit_and_reuse(self, sim: SimBackend, make_set: MakeSet) -> None:
        res = pm.Reservation(4 * PAGE, backend=sim)
        s = make_set(reservation=res)
        ds = [s.map(anon_part()) for _ in range(4)]
        assert [d.address for d in ds] == [res.address + i * PAGE for i in range(4)]
        part = anon_part()
        with pytest.raises(pm.MapError) as ei:
            s.map(part)
        assert ei.value.code == ErrorCode.CANNOT_FIT_PART_MAP
        assert not part.consumed
        # A one-page gap in the middle: a one-page part fits there, a two-page one does not.
        with s.part_map_by_address(ds[1].address) as pmap:
            s.remove_part_map(pmap)
        big = anon_part(2)
        with pytest.raises(pm.MapError) as ei:
            s.map(big)
        assert ei.value.code == ErrorCode.CANNOT_FIT_PART_MAP
        s.remove_range(ds[2].address, 1)  # now pages 1 and 2 are free
        d = s.map(big)
        assert (d.address, d.size) == (res.address + PAGE, 2 * PAGE)
        assert descs(s) == [
            (res.address, PAGE),
            (res.address + PAGE, 2 * PAGE),
            (res.address + 3 * PAGE, PAGE),
        ]

    def test_first_fit_takes_the_lowest_gap(self, sim: SimBackend, make_set: MakeSet) -> None:
        res = pm.Reservation(6 * PAGE, backend=sim)
        s = make_set(reservation=res)
        ds = [s.map(anon_part()) for _ in range(6)]
        for i in (4, 1):  # free slot 4 first, then slot 1
            s.remove_range(ds[i].address, PAGE)
        assert s.map(anon_part()).address == res.address + PAGE
        assert s.map(anon_part()).address == res.address + 4 * PAGE

    def test_part_larger_than_reservation(self, sim: SimBackend, make_set: MakeSet) -> None:
        res = pm.Reservation(2 * PAGE, backend=sim)
        s = make_set(reservation=res)
        with pytest.raises(pm.MapError) as ei:
            s.map(anon_part(3))
        assert ei.value.code == ErrorCode.CANNOT_FIT_PART_MAP
        d = s.map(anon_part(2))
        assert (d.address, d.size) == (res.address, 2 * PAGE)

    def test_reservation_at_address(self, sim: SimBackend) -> None:
        first = pm.Reservation(PAGE, backend=sim)
        at = first.address + 16 * PAGE
        res = pm.Reservation(2 * PAGE, address=at, backend=sim)
        assert (res.address, res.size) == (at, 2 * PAGE)
        with pytest.raises(pm.MapError) as ei:
            pm.Reservation(PAGE, address=at + PAGE, backend=sim)
        assert ei.value.code == ErrorCode.CANNOT_FIT_PART_MAP

    def test_reservation_cannot_close_while_used(self, sim: SimBackend) -> None:
        res = pm.Reservation(PAGE, backend=sim)
        s = pm.Set(pm.Config(granularity=CL, reservation=res, backend=sim))
        s.map(anon_part())
        with pytest.raises(pm.PmemError):
            res.close()
        s.close()
        res.close()
        again = pm.Reservation(PAGE, address=res.address, backend=sim)
        assert again.address == res.address

    @pytest.mark.parametrize(
        ("size", "code"),
        [(0, "EINVAL"), (-PAGE, "EINVAL"), (True, "EINVAL"), (100, "LENGTH_UNALIGNED")],
    )
    def test_invalid_reservation_size(self, sim: SimBackend, size: Any, code: str) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Reservation(size, backend=sim)
        assert ei.value.code == ErrorCode[code]

    def test_two_sets_sharing_a_reservation(self, sim: SimBackend) -> None:
        """First fit sees every part map in the reservation, whichever set made it."""
        res = pm.Reservation(3 * PAGE, backend=sim)
        cfg = pm.Config(granularity=CL, backend=sim, reservation=res)
        with pm.Set(cfg) as s1, pm.Set(cfg) as s2:
            a = s1.map(anon_part())
            b = s2.map(anon_part())
            assert (a.address, b.address) == (res.address, res.address + PAGE)
            # The range after s1's part map is s2's: FULL cannot coalesce ...
            s1.coalescing = pm.Coalescing.FULL
            with pytest.raises(pm.MapError) as ei:
                s1.map(anon_part())
            assert ei.value.code == ErrorCode.CANNOT_COALESCE_PARTS
            # ... OPPORTUNISTIC falls back to the one gap left.
            s1.coalescing = pm.Coalescing.OPPORTUNISTIC
            c = s1.map(anon_part())
            assert c.address == res.address + 2 * PAGE
            with pytest.raises(pm.MapError) as ei:
                s2.map(anon_part())
            assert ei.value.code == ErrorCode.CANNOT_FIT_PART_MAP
            with s1.part_map_by_address(a.address) as pmap:
                s1.remove_part_map(pmap)
            assert s2.map(anon_part()).address == res.address
            assert descs(s1) == [(c.address, PAGE)]
            assert descs(s2) == [(res.address, PAGE), (b.address, PAGE)]

    def test_reservations_of_two_sets_do_not_mix(self, sim: SimBackend, make_set: MakeSet) -> None:
        r1, r2 = pm.Reservation(PAGE, backend=sim), pm.Reservation(PAGE, backend=sim)
        s1, s2 = make_set(reservation=r1), make_set(reservation=r2)
        assert s1.map(anon_part()).address == r1.address
        assert s2.map(anon_part()).address == r2.address


# -- remove_part_map -----------------------------------------------------------------------


def file_set(
    tmp_path: Path, sim: SimBackend, pages: int, **kw: Any
) -> tuple[pm.Set, pm.Source, pm.Descriptor]:
    p = tmp_path / "data"
    p.write_bytes(bytes(pages * PAGE))
    src = pm.Source.from_file(p)
    s = pm.Set(pm.Config(granularity=CL, backend=sim, **kw))
    return s, src, s.map(pm.Part(src))


class TestRemovePartMap:
    def test_deep_flushes_then_unmaps(self, tmp_path: Path, sim: SimBackend) -> None:
        s, src, d = file_set(tmp_path, sim, 2)
        s.store(d.address + 100, b"not flushed")
        s.store(d.address + PAGE + 7, b"nor this")
        assert {ls.status for ls in sim.lines()} == {"dirty"}
        assert sim.image_count() > 1
        deep = sim.statistics().deep_flushes
        with s.first_part_map() as pmap:  # type: ignore[union-attr]
            s.remove_part_map(pmap)
        assert sim.statistics().deep_flushes > deep
        assert sim.lines() == []
        assert sim.image_count() == 1
        assert list(sim.iter_maps()) == []
        s.close()
        src.close()
        data = (tmp_path / "data").read_bytes()
        assert data[100:111] == b"not flushed"
        assert data[PAGE + 7 : PAGE + 15] == b"nor this"

    def test_part_remove_has_the_whole_extent(self, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        other = s.map(anon_part())
        s.coalescing = pm.Coalescing.FULL
        s.map(anon_part(2))
        s.coalescing = pm.Coalescing.NONE
        blank = s.map(anon_part())
        s.coalescing = pm.Coalescing.FULL
        d = s.map(anon_part(3))  # blank + 3 pages
        assert d.size == 4 * PAGE
        rec.clear()
        pmap = s.part_map_by_address(d.address + 3 * PAGE)
        s.remove_part_map(pmap)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.PART_REMOVE, blank.address, 4 * PAGE)
        ]
        assert descs(s) == [(other.address, 3 * PAGE)]

    def test_handle_becomes_invalid(self, make_set: MakeSet) -> None:
        s = make_set()
        d = s.map(anon_part())
        keep = s.map(anon_part())
        pmap = s.part_map_by_address(d.address)
        assert pmap.valid
        s.remove_part_map(pmap)
        assert not pmap.valid
        for get in (lambda: pmap.address, lambda: pmap.size, lambda: pmap.descriptor):
            with pytest.raises(pm.LookupFailure) as ei:
                get()
            assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        with pytest.raises(pm.LookupFailure) as ei:
            s.remove_part_map(pmap)
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        with pytest.raises(pm.LookupFailure):
            s.next_part_map(pmap)
        with pytest.raises(pm.LookupFailure) as ei:
            s.read(d.address, 1)
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        assert descs(s) == [(keep.address, PAGE)]

    def test_use_after_drop_guard(self, sim: SimBackend, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        d = s.map(anon_part())
        s.store(d.address, b"x")
        rec.clear()
        p1 = s.first_part_map()
        p2 = s.part_map_by_address(d.address)
        assert p1 is not None
        deep = sim.statistics().deep_flushes
        for victim in (p1, p2):
            with pytest.raises(pm.StateError) as ei:
                s.remove_part_map(victim)
            assert ei.value.code == ErrorCode.PART_MAP_POSSIBLE_USE_AFTER_DROP
        # The refusal changed nothing.
        assert rec.events == []
        assert sim.statistics().deep_flushes == deep
        assert p1.valid and p2.valid
        assert descs(s) == [(d.address, PAGE)]
        assert s.read(d.address, 1) == b"x"
        p2.drop()
        s.remove_part_map(p1)
        assert [e.type for e in rec.events] == [pm.EventType.PART_REMOVE]
        assert list(s.part_maps()) == []

    def test_works_after_other_handle_is_garbage_collected(self, make_set: MakeSet) -> None:
        s = make_set()
        s.map(anon_part())
        p1 = s.first_part_map()
        p2 = s.first_part_map()
        assert p1 is not None and p2 is not None
        with pytest.raises(pm.StateError):
            s.remove_part_map(p1)
        del p2
        gc.collect()
        s.remove_part_map(p1)
        assert list(s.part_maps()) == []

    def test_works_after_with_block(self, make_set: MakeSet) -> None:
        s = make_set()
        s.map(anon_part())
        p1 = s.first_part_map()
        assert p1 is not None
        with s.first_part_map(), pytest.raises(pm.StateError):
            s.remove_part_map(p1)
        s.remove_part_map(p1)
        assert s.first_part_map() is None

    def test_handles_of_other_part_maps_do_not_block(self, make_set: MakeSet) -> None:
        s = make_set()
        a = s.map(anon_part())
        b = s.map(anon_part())
        pb = s.part_map_by_address(b.address)
        pa = s.part_map_by_address(a.address)
        s.remove_part_map(pa)
        assert pb.valid
        assert descs(s) == [(b.address, PAGE)]

    def test_part_map_of_another_set(self, make_set: MakeSet) -> None:
        s, t = make_set(), make_set()
        s.map(anon_part())
        t.map(anon_part())
        other = t.first_part_map()
        with pytest.raises(pm.LookupFailure) as ei:
            s.remove_part_map(other)  # type: ignore[arg-type]
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        assert len(descs(t)) == 1

    def test_not_a_part_map(self, make_set: MakeSet) -> None:
        s = make_set()
        d = s.map(anon_part())
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.remove_part_map(d)  # type: ignore[arg-type]
        assert ei.value.code == ErrorCode.EINVAL


# -- remove_range --------------------------------------------------------------------------


class TestRemoveRange:
    def test_no_overlap_fires_and_succeeds(self, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        s.remove_range(0x1000, PAGE)  # on an empty set
        d = s.map(anon_part())
        rec.clear()
        for addr, length in [(d.end, PAGE), (d.address - PAGE, PAGE), (d.address, 0), (0, 1)]:
            s.remove_range(addr, length)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.REMOVE_RANGE, d.end, PAGE),
            (pm.EventType.REMOVE_RANGE, d.address - PAGE, PAGE),
            (pm.EventType.REMOVE_RANGE, d.address, 0),
            (pm.EventType.REMOVE_RANGE, 0, 1),
        ]
        assert descs(s) == [(d.address, PAGE)]

    @pytest.mark.parametrize(
        ("start", "length"),
        [(0, 1), (PAGE - 1, 1), (3 * PAGE - 1, 1), (-PAGE, PAGE + 1), (3 * PAGE - 1, 10 * PAGE)],
    )
    def test_one_byte_removes_the_whole_part(
        self, make_set: MakeSet, rec: Recorder, start: int, length: int
    ) -> None:
        s = make_set(event_callback=rec)
        d = s.map(anon_part(3))
        rec.clear()
        s.remove_range(d.address + start, length)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.REMOVE_RANGE, d.address + start, length),
            (pm.EventType.PART_REMOVE, d.address, 3 * PAGE),
        ]
        assert list(s.part_maps()) == []
        with pytest.raises(pm.LookupFailure):
            s.read(d.address + 2 * PAGE, 1)

    def test_range_over_two_part_maps(
        self, sim: SimBackend, make_set: MakeSet, rec: Recorder
    ) -> None:
        res = pm.Reservation(3 * PAGE, backend=sim)
        s = make_set(event_callback=rec, reservation=res)
        a, b, c = (s.map(anon_part()) for _ in range(3))
        rec.clear()
        s.remove_range(a.end - 1, 2)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.REMOVE_RANGE, a.end - 1, 2),
            (pm.EventType.PART_REMOVE, a.address, PAGE),
            (pm.EventType.PART_REMOVE, b.address, PAGE),
        ]
        assert descs(s) == [(c.address, PAGE)]
        assert len(list(sim.iter_maps())) == 1

    def test_range_over_two_distant_part_maps(self, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        a = s.map(anon_part())
        b = s.map(anon_part(2))
        c = s.map(anon_part())
        lo, hi = sorted([a, b], key=lambda d: d.address)
        rec.clear()
        s.remove_range(lo.address + 10, hi.address - lo.address)
        kinds = rec.kinds()
        assert kinds.count(pm.EventType.REMOVE_RANGE) == 1
        assert kinds.count(pm.EventType.PART_REMOVE) == 2
        assert kinds[0] == pm.EventType.REMOVE_RANGE
        assert {(e.addr, e.len) for e in rec.events[1:]} == {
            (a.address, PAGE),
            (b.address, 2 * PAGE),
        }
        assert descs(s) == [(c.address, PAGE)]

    def test_middle_of_coalesced_part_map_splits_it(
        self, sim: SimBackend, make_set: MakeSet, rec: Recorder
    ) -> None:
        s = make_set(event_callback=rec)
        s.coalescing = pm.Coalescing.FULL
        a = s.map(anon_part(2))
        s.map(anon_part(1))
        d = s.map(anon_part(3))
        base = a.address
        assert (d.address, d.size) == (base, 6 * PAGE)
        s.store(base, b"first")
        s.store(base + 3 * PAGE, b"third")
        rec.clear()
        s.remove_range(base + 2 * PAGE + 100, 1)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.REMOVE_RANGE, base + 2 * PAGE + 100, 1)
        ]
        assert descs(s) == [(base, 2 * PAGE), (base + 3 * PAGE, 3 * PAGE)]
        assert walk(s) == [(base, 2 * PAGE), (base + 3 * PAGE, 3 * PAGE)]
        assert len(list(sim.iter_maps())) == 2
        assert s.read(base, 5) == b"first"
        assert s.read(base + 3 * PAGE, 5) == b"third"
        with pytest.raises(pm.LookupFailure):
            s.read(base + 2 * PAGE, 1)
        # The halves are part maps of their own now.
        rec.clear()
        with s.part_map_by_address(base + 4 * PAGE) as pmap:
            assert pmap.descriptor == pm.Descriptor(base + 3 * PAGE, 3 * PAGE)
            s.remove_part_map(pmap)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.PART_REMOVE, base + 3 * PAGE, 3 * PAGE)
        ]
        assert descs(s) == [(base, 2 * PAGE)]

    def test_split_into_three(self, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        s.coalescing = pm.Coalescing.FULL
        base = s.map(anon_part()).address
        for _ in range(4):
            s.map(anon_part())
        rec.clear()
        s.remove_range(base + PAGE, 1)
        s.remove_range(base + 3 * PAGE, 1)
        assert rec.kinds() == [pm.EventType.REMOVE_RANGE] * 2
        assert descs(s) == [(base, PAGE), (base + 2 * PAGE, PAGE), (base + 4 * PAGE, PAGE)]

    @pytest.mark.parametrize("which", ["first", "last"])
    def test_end_of_coalesced_part_map_shrinks_it(
        self, make_set: MakeSet, rec: Recorder, which: str
    ) -> None:
        s = make_set(event_callback=rec)
        s.coalescing = pm.Coalescing.FULL
        base = s.map(anon_part()).address
        s.map(anon_part(2))
        rec.clear()
        if which == "first":
            s.remove_range(base, 1)
            assert descs(s) == [(base + PAGE, 2 * PAGE)]
        else:
            s.remove_range(base + 3 * PAGE - 1, 1)
            assert descs(s) == [(base, PAGE)]
        assert rec.kinds() == [pm.EventType.REMOVE_RANGE]

    def test_whole_coalesced_part_map(self, make_set: MakeSet, rec: Recorder) -> None:
        s = make_set(event_callback=rec)
        s.coalescing = pm.Coalescing.FULL
        base = s.map(anon_part()).address
        s.map(anon_part())
        rec.clear()
        s.remove_range(base + PAGE - 1, 2)
        assert [(e.type, e.addr, e.len) for e in rec.events] == [
            (pm.EventType.REMOVE_RANGE, base + PAGE - 1, 2),
            (pm.EventType.PART_REMOVE, base, 2 * PAGE),
        ]
        assert list(s.part_maps()) == []

    def test_coalescing_after_split_grows_the_first_half(self, make_set: MakeSet) -> None:
        """libpmemset keeps its part map object for the first half and makes a new one for
        the rest, so the next coalesced part fills the hole after the first half."""
        s = make_set()
        s.coalescing = pm.Coalescing.FULL
        base = s.map(anon_part()).address
        s.map(anon_part())
        s.map(anon_part())
        s.remove_range(base + PAGE, 1)
        d = s.map(anon_part())
        assert (d.address, d.size) == (base, 2 * PAGE)
        assert descs(s) == [(base, 2 * PAGE), (base + 2 * PAGE, PAGE)]
        with pytest.raises(pm.MapError) as ei:
            s.map(anon_part())  # the first half now ends where the second begins
        assert ei.value.code == ErrorCode.CANNOT_COALESCE_PARTS

    def test_deep_flushes_the_range(self, tmp_path: Path, sim: SimBackend) -> None:
        s, src, d = file_set(tmp_path, sim, 1)
        with s, src:
            s.store(d.address + 64, b"in range")
            deep = sim.statistics().deep_flushes
            s.remove_range(d.address + 64, 8)
            assert sim.statistics().deep_flushes > deep
            assert sim.lines() == []

    @pytest.mark.parametrize(
        ("addr", "length"), [(-1, PAGE), (0, -1), (True, PAGE), (0, 1.0), ("0", 1), (0, None)]
    )
    def test_invalid_arguments(
        self, make_set: MakeSet, rec: Recorder, addr: Any, length: Any
    ) -> None:
        s = make_set(event_callback=rec)
        s.map(anon_part())
        rec.clear()
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.remove_range(addr, length)
        assert ei.value.code == ErrorCode.EINVAL
        assert rec.events == []
        assert len(descs(s)) == 1


# -- closing -------------------------------------------------------------------------------


class TestClose:
    def test_unmaps_everything_without_events(
        self, sim: SimBackend, tmp_path: Path, rec: Recorder
    ) -> None:
        s, src, d = file_set(tmp_path, sim, 1, event_callback=rec)
        tracked: list[Any] = []
        s.track(pm.EventType.all(), lambda *a: tracked.append(a))
        s.coalescing = pm.Coalescing.FULL
        s.map(anon_part())
        s.coalescing = pm.Coalescing.NONE
        other = s.map(anon_part(2))
        s.store(d.address, b"unflushed")
        pmap = s.part_map_by_address(other.address)
        rec.clear()
        tracked.clear()
        deep = sim.statistics().deep_flushes
        s.close()
        assert s.closed
        assert rec.events == []
        assert tracked == []
        assert list(sim.iter_maps()) == []
        assert sim.statistics().deep_flushes == deep  # no deep flush
        assert [ls.status for ls in sim.lines()] == ["dirty"]
        assert not pmap.valid
        # Owned reservations are released: the ranges can be reserved again.
        for addr in (d.address, other.address):
            pm.Reservation(PAGE, address=addr, backend=sim).close()
        src.close()
        assert (tmp_path / "data").read_bytes()[:9] == bytes(9)  # never made durable

    def test_closed_set_refuses_everything(self, make_set: MakeSet) -> None:
        s = make_set()
        d = s.map(anon_part())
        s.close()
        s.close()  # twice is fine
        calls: list[Callable[[], object]] = [
            lambda: s.map(anon_part()),
            lambda: s.read(d.address, 1),
            lambda: s.store(d.address, b"x"),
            lambda: s.first_part_map(),
            lambda: s.part_map_by_address(d.address),
            lambda: s.remove_range(d.address, 1),
            lambda: s.flush(d.address, 1),
            lambda: s.drain(),
            lambda: s.view(),
        ]
        for call in calls:
            with pytest.raises(pm.LookupFailure) as ei:
                call()
            assert ei.value.code == ErrorCode.NO_PART_MAPPED

    def test_context_manager(self, sim: SimBackend) -> None:
        with pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
            s.map(anon_part())
            assert len(list(sim.iter_maps())) == 1
        assert s.closed
        assert list(sim.iter_maps()) == []

    def test_garbage_collection_unmaps(self, sim: SimBackend) -> None:
        s = pm.Set(pm.Config(granularity=CL, backend=sim))
        s.map(anon_part())
        s.map(anon_part())
        assert len(list(sim.iter_maps())) == 2
        del s
        gc.collect()
        assert list(sim.iter_maps()) == []

    def test_close_with_user_reservation_keeps_it(self, sim: SimBackend) -> None:
        res = pm.Reservation(2 * PAGE, backend=sim)
        with pm.Set(pm.Config(granularity=CL, backend=sim, reservation=res)) as s:
            s.map(anon_part())
        # The user's reservation is still there, empty: a new set can use it.
        with pm.Set(pm.Config(granularity=CL, backend=sim, reservation=res)) as t:
            assert t.map(anon_part(2)).address == res.address
        res.close()
