"""The "must" rules of the persistency reference, pinned on the simulator.

Each test builds a tiny program on a set, then enumerates (or counts) the crash images the
simulator says are possible and compares them with the images the rule allows, byte for byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from helpers import u64
from pmemsim_backends.sim import SimBackend

import pmemsim as pm

PAGE = 4096
LINE = 64
CL = pm.Granularity.CACHE_LINE
BYTE = pm.Granularity.BYTE
PG = pm.Granularity.PAGE
NT_NODRAIN = pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN

MakeSet = Callable[..., pm.Set]


def view_on(
    sim: SimBackend, size: int = 4 * PAGE, granularity: pm.Granularity = CL
) -> tuple[pm.Set, pm.View]:
    """A set on ``sim`` with one anonymous part of ``size`` bytes, and a view of it."""
    s = pm.Set(pm.Config(granularity=granularity, backend=sim))
    return s, s.view(s.map(pm.Part(pm.Source.anonymous(size))))


def images(sim: SimBackend, offset: int, length: int) -> list[bytes]:
    """``[offset, offset + length)`` of every distinct crash image, in enumeration order."""
    return [img.read(offset, length) for img in sim.crash_state().images()]


def words(sim: SimBackend, *offsets: int) -> set[tuple[int, ...]]:
    """The 8-byte words at ``offsets`` in every crash image, as a set of tuples."""
    out = set()
    for img in sim.crash_state().images():
        out.add(tuple(int.from_bytes(img.read(o, 8), "little") for o in offsets))
    return out


# -- CACHE_LINE: the per-line prefix rule and eviction --------------------------------------


class TestPrefixRule:
    def test_two_stores_in_one_line_never_persist_out_of_order(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 1  # x
        v.u64[1] = 1  # y, same line
        assert sim.image_count() == 3
        got = words(sim, 0, 8)
        assert got == {(1, 1), (1, 0), (0, 0)}
        assert (0, 1) not in got  # y=1 with x=0 is impossible
        assert len(images(sim, 0, 16)) == 3

    def test_any_prefix_of_four_stores(self, sim: SimBackend, v: pm.View) -> None:
        for i in range(4):
            v.u64[i] = i + 1
        got = [tuple(int.from_bytes(b[i : i + 8], "little") for i in range(0, 32, 8))
               for b in images(sim, 0, 32)]  # fmt: skip
        assert got == [(1, 2, 3, 4), (1, 2, 3, 0), (1, 2, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0)]

    def test_prefix_is_in_program_order_not_address_order(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[7] = 7  # the higher address is stored first
        v.u64[0] = 9
        assert words(sim, 0, 56) == {(9, 7), (0, 7), (0, 0)}

    def test_lines_are_independent(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1  # line 0
        v.u64[8] = 2  # line 1
        assert sim.image_count() == 4
        assert words(sim, 0, 64) == {(1, 2), (1, 0), (0, 2), (0, 0)}

    def test_one_store_across_a_line_boundary_persists_per_line(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.write(56, b"A" * 8 + b"B" * 8)  # bytes 56..64 in line 0, 64..72 in line 1
        got = set(images(sim, 56, 16))
        assert got == {
            b"A" * 8 + b"B" * 8,
            b"A" * 8 + bytes(8),
            bytes(8) + b"B" * 8,  # the later line alone: lines do not order each other
            bytes(16),
        }

    def test_lines_report_hi_minus_lo(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.u64[1] = 2
        v.u64[8] = 3
        lines = sim.lines()
        assert [(ln.offset, ln.stores, ln.images, ln.status) for ln in lines] == [
            (0, 2, 3, "dirty"),
            (64, 1, 2, "dirty"),
        ]


class TestEviction:
    def test_unflushed_store_can_appear_in_an_image(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 42  # never flushed
        assert set(images(sim, 0, 8)) == {u64(42), u64(0)}

    def test_flag_persisted_before_its_data_was_flushed(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 0xDA7A  # data in line 0: stored, never flushed
        v.u64[8] = 1  # flag in line 1
        v.persist(64, 8)  # only the flag is made durable
        got = words(sim, 0, 64)
        # The flag is in every image; the data may or may not have been evicted first.
        assert got == {(0xDA7A, 1), (0, 1)}

    def test_persisted_flag_with_missing_data_is_the_guaranteed_image(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 0xDA7A
        v.u64[8] = 1
        v.persist(64, 8)
        st = sim.crash_state()
        assert st.guaranteed_image().read(0, 8) == u64(0)
        assert st.guaranteed_image().read(64, 8) == u64(1)
        assert st.persisted_image().read(0, 8) == u64(0xDA7A)


# -- what raises lo(L) ------------------------------------------------------------------


class TestFlushAndFence:
    @pytest.mark.parametrize("instruction", ["clwb", "clflushopt"])
    def test_flush_without_fence_guarantees_nothing(self, instruction: str) -> None:
        sim = SimBackend(flush_instruction=instruction)
        _, v = view_on(sim)
        v.u64[0] = 5
        v.flush(0, 8)
        assert sim.image_count() == 2
        assert set(images(sim, 0, 8)) == {u64(5), u64(0)}
        [line] = sim.lines()
        assert (line.status, line.stores, line.flushed) == ("flushed", 1, 1)

    @pytest.mark.parametrize("instruction", ["clwb", "clflushopt"])
    def test_flush_then_fence_guarantees(self, instruction: str) -> None:
        sim = SimBackend(flush_instruction=instruction)
        _, v = view_on(sim)
        v.u64[0] = 5
        v.u64[1] = 6
        v.flush(0, 16)
        v.drain()
        assert sim.image_count() == 1
        assert images(sim, 0, 16) == [u64(5) + u64(6)]
        assert sim.lines() == []

    def test_fence_without_flush_guarantees_nothing(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 5
        v.drain()
        assert sim.image_count() == 2

    def test_flush_covers_the_whole_line(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.u64[7] = 2  # same line, bytes 56..64
        v.flush(0, 1)  # one byte of the line
        v.drain()
        assert images(sim, 0, 64) == [u64(1) + bytes(48) + u64(2)]

    def test_flush_of_another_line_does_not_cover(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.flush(64, 64)
        v.drain()
        assert set(images(sim, 0, 8)) == {u64(1), u64(0)}

    def test_flush_issued_before_a_store_does_not_cover_it(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.flush(0, 64)
        v.u64[0] = 5
        v.drain()
        assert sim.image_count() == 2
        assert set(images(sim, 0, 8)) == {u64(5), u64(0)}

    def test_flush_covers_only_the_stores_before_it(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1  # A
        v.flush(0, 64)
        v.u64[1] = 2  # B: after the flush, same line
        v.drain()
        # lo = 1 (A), hi = 2: A in every image, B maybe.
        assert words(sim, 0, 8) == {(1, 2), (1, 0)}
        [line] = sim.lines()
        assert (line.stores, line.flushed, line.status) == (1, 0, "dirty")

    def test_a_later_store_to_the_same_bytes_is_not_covered(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 1
        v.flush(0, 8)
        v.u64[0] = 2
        v.drain()
        assert set(images(sim, 0, 8)) == {u64(2), u64(1)}  # never 0 again

    def test_clflush_guarantees_at_its_own_position(self) -> None:
        sim = SimBackend(flush_instruction="clflush")
        _, v = view_on(sim)
        v.u64[0] = 5
        v.flush(0, 8)  # no fence
        assert sim.image_count() == 1
        assert images(sim, 0, 8) == [u64(5)]
        v.u64[1] = 6  # after the clflush: not covered
        assert words(sim, 0, 8) == {(5, 6), (5, 0)}

    def test_clflush_mode_still_needs_a_fence_for_nontemporal_stores(self) -> None:
        sim = SimBackend(flush_instruction="clflush")
        _, v = view_on(sim)
        v.memcpy(0, b"n" * 8, NT_NODRAIN)
        v.flush(0, 8)
        assert sim.image_count() == 2
        v.drain()
        assert sim.image_count() == 1

    def test_clflushed_store_is_not_overwritten_by_an_older_nontemporal_store(self) -> None:
        sim = SimBackend(flush_instruction="clflush")
        _, v = view_on(sim)
        v.memcpy(0, u64(9), NT_NODRAIN)  # older, non-temporal, not fenced
        v.u64[0] = 7  # newer, same bytes
        v.flush(0, 8)  # clflush: 7 is guaranteed here
        assert images(sim, 0, 8) == [u64(7)]
        v.drain()  # the fence must not land the older 9 on top
        assert images(sim, 0, 8) == [u64(7)]
        assert v.u64[0] == 7

    def test_clflush_keeps_a_newer_nontemporal_store_pending(self) -> None:
        sim = SimBackend(flush_instruction="clflush")
        _, v = view_on(sim)
        v.u64[0] = 7
        v.memcpy(8, u64(8), NT_NODRAIN)  # other bytes, older than the clflush
        v.memcpy(0, u64(9), NT_NODRAIN)  # newer than the store of 7
        v.flush(0, 8)
        assert words(sim, 0, 8) == {(9, 8), (9, 0), (7, 8), (7, 0)}
        v.drain()
        assert words(sim, 0, 8) == {(9, 8)}

    def test_deep_flush_makes_the_range_durable(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.u64[16] = 2  # line 2, outside the deep-flushed range
        v.deep_flush(0, 64)
        assert set(images(sim, 0, 8)) == {u64(1)}
        assert set(images(sim, 128, 8)) == {u64(2), u64(0)}
        assert sim.statistics().deep_flushes == 1


# -- non-temporal stores ------------------------------------------------------------------


class TestNonTemporal:
    def test_any_subset_with_no_same_line_order(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, b"a" * 8 + b"b" * 8, NT_NODRAIN)  # two atoms, one line
        assert sim.image_count() == 4
        assert set(images(sim, 0, 16)) == {
            b"a" * 8 + b"b" * 8,
            b"a" * 8 + bytes(8),
            bytes(8) + b"b" * 8,  # the later atom alone: no prefix rule for NT
            bytes(16),
        }
        [line] = sim.lines()
        assert (line.stores, line.nontemporal, line.images) == (0, 2, 4)

    def test_two_nontemporal_copies_in_one_line(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, u64(1), NT_NODRAIN)
        v.memcpy(8, u64(2), NT_NODRAIN)
        assert words(sim, 0, 8) == {(1, 2), (1, 0), (0, 2), (0, 0)}

    def test_all_guaranteed_after_the_fence(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, b"a" * 8 + b"b" * 8, NT_NODRAIN)
        v.memcpy(64, b"c" * 24, NT_NODRAIN)
        assert sim.image_count() == 4 * 8
        v.drain()
        assert sim.image_count() == 1
        assert images(sim, 0, 88) == [b"a" * 8 + b"b" * 8 + bytes(48) + b"c" * 24]

    def test_nontemporal_flag_without_nodrain_is_durable_on_return(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.memcpy(0, b"a" * 16, pm.MemFlag.NONTEMPORAL)
        assert sim.image_count() == 1

    def test_wc_flag_is_nontemporal(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, b"a" * 16, pm.MemFlag.WC | pm.MemFlag.NODRAIN)
        assert sim.image_count() == 4

    def test_large_copies_are_nontemporal(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, b"x" * 256, pm.MemFlag.NODRAIN)  # >= 256 bytes: movnt
        lines = sim.lines()
        assert [(ln.offset, ln.stores, ln.nontemporal, ln.images) for ln in lines] == [
            (o, 0, 8, 256) for o in range(0, 256, 64)
        ]
        assert sim.image_count() == 256**4
        v.drain()
        assert sim.image_count() == 1

    def test_small_copies_are_flushed_write_back_stores(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, b"x" * 255, pm.MemFlag.NODRAIN)
        lines = sim.lines()
        assert [ln.nontemporal for ln in lines] == [0, 0, 0, 0]
        assert [ln.status for ln in lines] == ["flushed"] * 4
        # Flushed, not fenced: still a prefix per line (the last line's 63 bytes: 8 atoms).
        assert [ln.stores for ln in lines] == [8, 8, 8, 8]
        assert [ln.images for ln in lines] == [9, 9, 9, 9]
        v.drain()
        assert sim.image_count() == 1

    def test_temporal_flag_overrides_the_threshold(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, b"x" * 512, pm.MemFlag.TEMPORAL | pm.MemFlag.NODRAIN)
        assert all(ln.nontemporal == 0 and ln.status == "flushed" for ln in sim.lines())

    def test_threshold_is_configurable(self) -> None:
        sim = SimBackend(movnt_threshold=16)
        _, v = view_on(sim)
        v.memcpy(0, b"x" * 16, pm.MemFlag.NODRAIN)
        [line] = sim.lines()
        assert line.nontemporal == 2

    def test_memset_nontemporal(self, sim: SimBackend, v: pm.View) -> None:
        v.memset(0, 0xEE, 16, NT_NODRAIN)
        assert set(images(sim, 0, 16)) == {
            b"\xee" * 16,
            b"\xee" * 8 + bytes(8),
            bytes(8) + b"\xee" * 8,
            bytes(16),
        }

    def test_nontemporal_store_after_pending_write_back_store_wins(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 7  # write-back, pending in the cache
        v.memcpy(0, u64(9), NT_NODRAIN)  # non-temporal, same bytes
        before = set(images(sim, 0, 8))
        assert u64(9) in before
        assert before <= {u64(0), u64(7), u64(9)}
        v.drain()
        # The old cached 7 never lands on top of the newer NT 9.
        assert images(sim, 0, 8) == [u64(9)]

    def test_nontemporal_store_after_write_back_store_elsewhere_in_the_line(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.write(0, b"w" * 16)
        v.memcpy(8, u64(9), NT_NODRAIN)  # overlaps the second half of the WB store
        v.drain()
        assert images(sim, 0, 16) == [b"w" * 8 + u64(9)]

    def test_write_back_store_after_nontemporal_store(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, u64(9), NT_NODRAIN)
        v.u64[0] = 7  # newer, cached, never flushed
        v.drain()
        assert set(images(sim, 0, 8)) == {u64(7), u64(9)}


# -- 8-byte atomicity and tearing -----------------------------------------------------------


class TestAtomicity:
    def test_aligned_16_byte_store_tears_at_the_atom_boundary(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.write(16, b"X" * 16)
        assert sim.image_count() == 3
        assert images(sim, 16, 16) == [b"X" * 16, b"X" * 8 + bytes(8), bytes(16)]

    def test_unaligned_8_byte_store_tears(self, sim: SimBackend, v: pm.View) -> None:
        v.write(4, b"Y" * 8)  # crosses the boundary at 8
        assert sim.image_count() == 3
        assert images(sim, 0, 16) == [
            bytes(4) + b"Y" * 8 + bytes(4),
            bytes(4) + b"Y" * 4 + bytes(8),  # torn: only the first atom's part
            bytes(16),
        ]

    @pytest.mark.parametrize("offset", [0, 8, 24, 56, 64, 4088])
    def test_aligned_8_byte_store_never_tears(
        self, sim: SimBackend, v: pm.View, offset: int
    ) -> None:
        v.write(offset, b"Z" * 8)
        assert sim.image_count() == 2
        assert images(sim, offset, 8) == [b"Z" * 8, bytes(8)]

    @pytest.mark.parametrize(("offset", "length"), [(0, 1), (3, 4), (9, 2), (12, 4), (0, 8)])
    def test_store_inside_one_atom_is_atomic(
        self, sim: SimBackend, v: pm.View, offset: int, length: int
    ) -> None:
        v.write(offset, b"\xff" * length)
        assert sim.image_count() == 2

    def test_full_line_vector_store_tears_into_eight_atoms(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.write(0, bytes(range(1, 65)))
        got = images(sim, 0, 64)
        assert got == [bytes(range(1, 1 + 8 * k)) + bytes(64 - 8 * k) for k in range(8, -1, -1)]

    def test_pack_into_is_one_store_that_tears(self, sim: SimBackend, v: pm.View) -> None:
        v.pack_into("<IQ", 4, 0x11111111, 0x2222222222222222)  # bytes 4..16
        assert sim.image_count() == 3


# -- BYTE granularity (eADR) ------------------------------------------------------------------


class TestByteGranularity:
    def test_write_back_store_is_durable_once_visible(self) -> None:
        sim = SimBackend(granularity=BYTE)
        s, v = view_on(sim)
        assert s.granularity == BYTE
        v.u64[0] = 3
        v.write(12, b"T" * 20)  # unaligned and wide: still no tearing possible
        assert sim.image_count() == 1
        assert images(sim, 0, 32) == [u64(3) + bytes(4) + b"T" * 20]
        assert sim.lines() == []

    def test_flush_is_a_no_op(self) -> None:
        sim = SimBackend(granularity=BYTE)
        _, v = view_on(sim)
        v.u64[0] = 3
        v.flush(0, 8)
        assert sim.image_count() == 1
        assert sim.lines() == []

    def test_nontemporal_stores_still_need_a_fence(self) -> None:
        sim = SimBackend(granularity=BYTE)
        _, v = view_on(sim)
        v.memcpy(0, u64(1) + u64(2), NT_NODRAIN)
        assert sim.image_count() == 4
        assert words(sim, 0, 8) == {(1, 2), (1, 0), (0, 2), (0, 0)}
        v.drain()
        assert words(sim, 0, 8) == {(1, 2)}

    def test_write_back_store_over_pending_nontemporal_store_wins(self) -> None:
        sim = SimBackend(granularity=BYTE)
        _, v = view_on(sim)
        v.memcpy(0, u64(1), NT_NODRAIN)
        v.u64[0] = 2  # visible, hence durable
        assert images(sim, 0, 8) == [u64(2)]
        v.drain()
        assert images(sim, 0, 8) == [u64(2)]

    def test_anonymous_granularity_applies_to_anonymous_sources_only(self) -> None:
        sim = SimBackend(granularity=CL, anonymous_granularity=BYTE)
        s, v = view_on(sim)
        assert s.granularity == BYTE
        v.u64[0] = 1
        assert sim.image_count() == 1


# -- PAGE granularity (msync) ------------------------------------------------------------------


class TestPageGranularity:
    def test_store_is_not_durable_until_msync(self) -> None:
        sim = SimBackend(granularity=PG)
        s, v = view_on(sim, granularity=PG)
        assert s.granularity == PG
        v.u64[0] = 1
        assert set(images(sim, 0, 8)) == {u64(1), u64(0)}
        v.drain()  # drain alone does nothing at PAGE
        assert sim.image_count() == 2
        v.flush(0, 8)  # flush alone is an msync: guaranteed
        assert images(sim, 0, 8) == [u64(1)]

    def test_persist_is_an_msync(self) -> None:
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.u64[0] = 1
        v.persist(0, 8)
        assert sim.image_count() == 1

    def test_prefix_rule_per_page_across_lines(self) -> None:
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.u64[0] = 1
        v.u64[400] = 2  # byte 3200: another line, same page
        # The page is the unit: a later store never persists without an earlier one.
        assert words(sim, 0, 3200) == {(1, 2), (1, 0), (0, 0)}
        [unit] = sim.lines()
        assert (unit.offset, unit.stores, unit.images) == (0, 2, 3)

    def test_pages_are_independent(self) -> None:
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.u64[0] = 1
        v.u64[512] = 2  # page 1
        assert words(sim, 0, PAGE) == {(1, 2), (1, 0), (0, 2), (0, 0)}

    def test_msync_covers_whole_pages_only(self) -> None:
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.u64[0] = 1
        v.u64[511] = 2  # last word of page 0
        v.u64[512] = 3  # page 1
        v.flush(8, 8)  # msync of page 0
        assert words(sim, 0, PAGE - 8, PAGE) == {(1, 2, 3), (1, 2, 0)}

    def test_a_store_after_msync_is_pending(self) -> None:
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.u64[0] = 1
        v.flush(0, 8)
        v.u64[1] = 2
        assert words(sim, 0, 8) == {(1, 2), (1, 0)}

    def test_page_tearing_lets_sectors_persist_independently(self) -> None:
        torn = SimBackend(granularity=PG, page_tearing=True)
        _, v = view_on(torn, granularity=PG)
        v.u64[0] = 1  # sector 0
        v.u64[64] = 2  # sector 1 (byte 512)
        assert words(torn, 0, 512) == {(1, 2), (1, 0), (0, 2), (0, 0)}
        assert [(u.offset, u.images) for u in torn.lines()] == [(0, 2), (512, 2)]
        whole = SimBackend(granularity=PG)
        _, w = view_on(whole, granularity=PG)
        w.u64[0] = 1
        w.u64[64] = 2
        assert words(whole, 0, 512) == {(1, 2), (1, 0), (0, 0)}

    def test_page_tearing_keeps_the_prefix_rule_inside_a_sector(self) -> None:
        sim = SimBackend(granularity=PG, page_tearing=True)
        _, v = view_on(sim, granularity=PG)
        v.u64[0] = 1
        v.u64[63] = 2  # byte 504, same sector
        assert words(sim, 0, 504) == {(1, 2), (1, 0), (0, 0)}
        v.flush(0, 1)  # msync still covers the whole page
        assert sim.image_count() == 1

    @pytest.mark.parametrize(
        "flags",
        [
            pm.MemFlag.NONE,
            pm.MemFlag.NONTEMPORAL,
            pm.MemFlag.NODRAIN,
            pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN,
            pm.MemFlag.WC,
            pm.MemFlag.TEMPORAL,
        ],
    )
    @pytest.mark.parametrize("length", [8, 300, PAGE])
    def test_memcpy_and_memset_msync_their_range(self, flags: pm.MemFlag, length: int) -> None:
        # libpmem2 at PAGE granularity copies, then msyncs (pmem2_memmove_nonpmem).
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.memcpy(8, b"c" * length, flags)
        assert sim.image_count() == 1
        v.memset(2 * PAGE, 0xAA, length, flags)
        assert sim.image_count() == 1
        assert images(sim, 2 * PAGE, length) == [b"\xaa" * length]

    def test_noflush_copy_is_a_plain_store(self) -> None:
        sim = SimBackend(granularity=PG)
        _, v = view_on(sim, granularity=PG)
        v.memcpy(0, u64(1), pm.MemFlag.NOFLUSH)
        assert sim.image_count() == 2


# -- the size of the space, and deduplication ---------------------------------------------


class TestStateSpace:
    def test_ten_lines_three_stores_each(self, sim: SimBackend, v: pm.View) -> None:
        for line in range(10):
            for k in range(3):
                v.u64[line * 8 + k] = k + 1
        st = sim.crash_state()
        assert st.image_count() == 4**10 == 1_048_576  # counted, never enumerated
        assert [(ln.stores, ln.images) for ln in st.lines()] == [(3, 4)] * 10

    def test_count_is_the_product_and_matches_enumeration(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        for line, n in enumerate([1, 2, 3]):
            for k in range(n):
                v.u64[line * 8 + k] = 10 * line + k + 1
        st = sim.crash_state()
        assert st.image_count() == 2 * 3 * 4
        contents = [img.read(0, 3 * LINE) for img in st.images()]
        assert len(contents) == 24
        assert len(set(contents)) == 24  # every enumerated image is distinct

    def test_same_value_twice_is_one_more_image(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.u64[0] = 1
        assert sim.image_count() == 2
        assert images(sim, 0, 8) == [u64(1), u64(0)]
        [line] = sim.lines()
        assert (line.stores, line.images) == (2, 2)

    def test_value_stored_back_deduplicates(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.u64[0] = 0  # back to the media content
        assert sim.image_count() == 2
        assert sorted(images(sim, 0, 8)) == [u64(0), u64(1)]

    def test_storing_the_durable_value_adds_no_image(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 5
        v.persist(0, 8)
        v.u64[0] = 5
        assert sim.image_count() == 1

    def test_stores_to_different_bytes_with_equal_prefix_content(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 0  # a store of the value already there
        v.u64[1] = 2
        # k=0 and k=1 give the same bytes: 2 distinct images, not 3.
        assert sim.image_count() == 2
        assert words(sim, 8) == {(2,), (0,)}

    def test_nontemporal_duplicates_collapse(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(0, u64(4), NT_NODRAIN)
        v.memcpy(0, u64(4), NT_NODRAIN)
        assert sim.image_count() == 2


# -- global guarantees --------------------------------------------------------------------


class TestGuarantees:
    def test_data_persisted_before_the_crash_point_is_in_every_image(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.write(0, b"P" * 40)
        v.persist(0, 40)
        # Lots of unguaranteed activity afterwards, including in the same line.
        v.write(40, b"q" * 24)
        for i in range(8, 40):
            v.u64[i] = i
        v.memcpy(512, b"n" * 16, NT_NODRAIN)
        st = sim.crash_state()
        assert st.image_count() > 1000
        # Check every image of the persisted line, and a sample over the other lines.
        for img in itertools.islice(st.images(), 2000):
            assert img.read(0, 40) == b"P" * 40
        assert st.guaranteed_image().read(0, 40) == b"P" * 40

    def test_no_image_holds_a_store_that_was_never_issued(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        stored: list[set[int]] = [{0} for _ in range(128)]

        def store(off: int, data: bytes) -> None:
            v.write(off, data)
            for i, b in enumerate(data):
                stored[off + i].add(b)

        store(0, b"\x01" * 12)
        store(4, b"\x02" * 8)
        v.flush(0, 64)
        store(60, b"\x03" * 8)
        store(8, b"\x04\x05")
        v.memcpy(96, b"\x06" * 16, NT_NODRAIN)
        for i in range(96, 112):
            stored[i].add(6)
        st = sim.crash_state()
        assert st.image_count() <= 4096
        for img in st.images():
            content = img.read(0, 128)
            for i, b in enumerate(content):
                assert b in stored[i], (i, b)

    def test_a_crash_state_is_a_frozen_copy(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        st = sim.crash_state()
        v.u64[0] = 2
        v.persist(0, 8)
        assert [img.read(0, 8) for img in st.images()] == [u64(1), u64(0)]
        assert images(sim, 0, 8) == [u64(2)]


class TestStoreRuns:
    """A loop of contiguous stores is kept as one record; crash images must not change."""

    def test_loop_of_u64_stores_gives_every_prefix_per_line(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        for i in range(16):  # two lines, one instruction
            v.u64[i] = i + 1
        assert len(sim.media[0].pending) == 1  # one record...
        st = sim.crash_state()
        assert st.image_count() == 9 * 9  # ...but every prefix of each line, as 16 stores
        images = {img.read(0, 128) for img in st.images()}
        for img in images:
            line0 = [int.from_bytes(img[8 * i : 8 * i + 8], "little") for i in range(8)]
            k = sum(1 for x in line0 if x)
            assert line0 == [i + 1 for i in range(k)] + [0] * (8 - k)

    def test_stores_inside_one_atom_are_not_joined(self, sim: SimBackend, v: pm.View) -> None:
        for i in range(2):
            v.u32[i] = 7  # 0..4 then 4..8: one atom, two stores
        assert len(sim.media[0].pending) == 2
        assert sim.crash_state().image_count() == 3

    def test_a_flush_in_between_keeps_records_apart(self, sim: SimBackend, v: pm.View) -> None:
        for i in range(2):
            v.u64[i] = 5
            v.flush(8 * i, 8)
        assert len(sim.media[0].pending) == 2
        v.drain()
        assert sim.crash_state().image_count() == 1

    def test_partly_flushed_run_keeps_its_unflushed_tail(self, sim: SimBackend, v: pm.View) -> None:
        for i in range(16):
            v.u64[i] = 9
        v.persist(0, 64)  # line 0 only
        st = sim.crash_state()
        assert st.image_count() == 9
        assert {img.read(0, 64) for img in st.images()} == {u64(9) * 8}
