"""Data operations: loads and stores, views, mem operations and their flags, persist functions,
argument checking, stores across part maps; the error hierarchy; what ``import pmemsim`` pulls in.
"""

from __future__ import annotations

import array
import pickle
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim import errors
from pmemsim.backend import Pmem2Failure
from pmemsim.errors import ErrorCode

PAGE = 4096
CL = pm.Granularity.CACHE_LINE
F = pm.MemFlag

MakeSet = Callable[..., pm.Set]


@pytest.fixture
def one(make_set: MakeSet) -> tuple[pm.Set, pm.Descriptor]:
    """A set with one two-page anonymous part map."""
    s = make_set()
    return s, s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))


@pytest.fixture
def adjacent(sim: SimBackend, make_set: MakeSet) -> tuple[pm.Set, pm.Descriptor, pm.Descriptor]:
    """Two one-page part maps (of two sources) side by side in a user reservation."""
    res = pm.Reservation(2 * PAGE, backend=sim)
    s = make_set(reservation=res)
    a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    b = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    assert a.end == b.address
    return s, a, b


# -- reads see the last writes -------------------------------------------------------------


def test_reads_return_last_writes(one: tuple[pm.Set, pm.Descriptor]) -> None:
    s, d = one
    a = d.address
    assert s.read(a, 2 * PAGE) == bytes(2 * PAGE)
    s.store(a + 10, b"first")
    s.store(a + 12, b"XY")
    assert s.read(a + 10, 5) == b"fiXYt"
    s.memcpy(a + 11, b"123", flags=F.NOFLUSH)
    assert s.read(a + 10, 5) == b"f123t"
    s.memset(a + 14, ord("!"), 3, F.NODRAIN)
    assert s.read(a + 10, 8) == b"f123!!!\0"
    s.memmove(a + 9, a + 10, 8)
    assert s.read(a + 9, 8) == b"f123!!!\0"
    assert s.read(a + 9, 0) == b""
    assert s.read(a + 2 * PAGE, 0) == b""  # an empty read at the very end is fine


def test_reads_match_a_model(one: tuple[pm.Set, pm.Descriptor]) -> None:
    """A fixed pseudo-random mix of every write operation, checked against a bytearray."""
    s, d = one
    size = d.size
    model = bytearray(size)
    rng = random.Random(1234)
    for step in range(300):
        op = rng.randrange(6)
        n = rng.randrange(1, 300)
        off = rng.randrange(size - n)
        if op == 0:
            data = rng.randbytes(n)
            s.store(d.address + off, data)
            model[off : off + n] = data
        elif op == 1:
            data = rng.randbytes(n)
            s.memcpy(d.address + off, data, flags=rng.choice([F.NONE, F.NODRAIN, F.NOFLUSH]))
            model[off : off + n] = data
        elif op == 2:
            src = rng.randrange(size - n)
            if src < off + n and off < src + n:
                continue
            s.memcpy(d.address + off, d.address + src, n)
            model[off : off + n] = model[src : src + n]
        elif op == 3:
            src = rng.randrange(size - n)
            s.memmove(d.address + off, d.address + src, n, F.NONTEMPORAL)
            model[off : off + n] = model[src : src + n]
        elif op == 4:
            value = rng.randrange(256)
            s.memset(d.address + off, value, n, F.WB)
            model[off : off + n] = bytes([value]) * n
        else:
            s.persist(d.address + off, n)
        if step % 50 == 0:
            assert s.read(d.address, size) == bytes(model)
    assert s.read(d.address, size) == bytes(model)


# -- views ---------------------------------------------------------------------------------


class TestView:
    def test_default_is_the_first_part_map(self, make_set: MakeSet) -> None:
        s = make_set()
        with pytest.raises(pm.LookupFailure) as ei:
            s.view()
        assert ei.value.code == ErrorCode.NO_PART_MAPPED
        d = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
        s.map(pm.Part(pm.Source.anonymous(PAGE)))
        v = s.view()
        assert (v.address, v.size, len(v)) == (d.address, 2 * PAGE, 2 * PAGE)

    def test_ways_to_make_one(self, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        with s.first_part_map() as pmap:  # type: ignore[union-attr]
            assert (s.view(pmap).address, s.view(pmap).size) == (d.address, d.size)
        assert (s.view(d).address, s.view(d).size) == (d.address, d.size)
        assert (s.view(d, 16).address, s.view(d, 16).size) == (d.address, 16)
        v = s.view(d.address + 100, 50)
        assert (v.address, v.size) == (d.address + 100, 50)

    def test_bad_views(self, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.view(d.address)
        assert ei.value.code == ErrorCode.EINVAL
        with pytest.raises(pm.RangeError) as ei:
            s.view(d.address, d.size + 1)
        assert ei.value.code == ErrorCode.LENGTH_OUT_OF_RANGE
        with pytest.raises(pm.LookupFailure) as ei:
            s.view(d.end, 1)
        assert ei.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        for bad in (True, 1.0 * d.address, -1):
            with pytest.raises(pm.InvalidArgumentError) as ei:
                s.view(bad, 1)  # type: ignore[arg-type]
            assert ei.value.code == ErrorCode.EINVAL

    @pytest.mark.parametrize(
        ("name", "width", "signed"),
        [
            ("u8", 1, False),
            ("u16", 2, False),
            ("u32", 4, False),
            ("u64", 8, False),
            ("i32", 4, True),
            ("i64", 8, True),
        ],
    )
    def test_typed_arrays(
        self, one: tuple[pm.Set, pm.Descriptor], name: str, width: int, signed: bool
    ) -> None:
        s, d = one
        v = s.view(d.address + 64, 128)
        arr = getattr(v, name)
        assert len(arr) == 128 // width
        lo = -(1 << (8 * width - 1)) if signed else 0
        hi = (1 << (8 * width - 1)) - 1 if signed else (1 << (8 * width)) - 1
        arr[1] = hi
        arr[2] = lo
        arr[-1] = 0x5A if hi >= 0x5A else 1
        assert arr[1] == hi and arr[2] == lo
        assert s.read(d.address + 64 + width, width) == hi.to_bytes(width, "little", signed=signed)
        assert s.read(d.address + 64 + 2 * width, width) == lo.to_bytes(
            width, "little", signed=signed
        )
        assert arr[len(arr) - 1] == arr[-1] == 0x5A
        assert arr[0] == 0
        for bad_value in (hi + 1, lo - 1, 1.5, "1", None):
            with pytest.raises(pm.InvalidArgumentError) as ei:
                arr[0] = bad_value
            assert ei.value.code == ErrorCode.EINVAL
        for bad_index in (len(arr), -len(arr) - 1, 1 << 40):
            with pytest.raises(pm.RangeError) as ri:
                arr[bad_index] = 0
            assert ri.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
            with pytest.raises(pm.RangeError):
                arr[bad_index]
        for bad_index in ("0", 1.0, slice(0, 1)):
            with pytest.raises(pm.InvalidArgumentError):
                arr[bad_index]
        assert arr[0] == 0
        # Nothing outside the view was touched.
        assert s.read(d.address, 64) == bytes(64)
        assert s.read(d.address + 192, 64) == bytes(64)

    def test_typed_arrays_share_the_bytes(self, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        v = s.view(d)
        v.u64[0] = 0x1122334455667788
        assert [v.u8[i] for i in range(8)] == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        assert v.u16[1] == 0x5566
        assert v.u32[1] == 0x11223344
        v.i32[2] = -2
        assert v.u32[2] == 0xFFFFFFFE
        assert v.i64[1] == 0xFFFFFFFE
        v.i64[3] = -1
        assert v.u64[3] == (1 << 64) - 1

    def test_bytes_and_slices(self, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        v = s.view(d.address + 8, 32)
        v[0:8] = b"abcdefgh"
        v[8:10] = bytearray(b"ij")
        v[10:12] = memoryview(b"kl")
        v[31] = 0x7A
        v[-2] = ord("y")
        assert v[0:12] == b"abcdefghijkl"
        assert v[:3] == b"abc"
        assert v[-2:] == b"yz"
        assert v[30:100] == b"yz"  # clamped like a bytes slice
        assert v[0] == ord("a") and v[-1] == ord("z")
        assert s.read(d.address + 8, 12) == b"abcdefghijkl"
        assert s.read(d.address, 8) == bytes(8)
        assert s.read(d.address + 40, 8) == bytes(8)

    @pytest.mark.parametrize(
        "assign",
        [
            lambda v: v.__setitem__(slice(0, 4, 2), b"ab"),
            lambda v: v.__setitem__(slice(0, 4), b"abc"),
            lambda v: v.__setitem__(slice(0, 4), b"abcde"),
            lambda v: v.__setitem__(slice(0, 4), 5),
            lambda v: v.__setitem__(slice(0, 4), "abcd"),
            lambda v: v.__setitem__(slice(0, 4), [1, 2, 3, 4]),
            lambda v: v.__setitem__(slice(0, 2), memoryview(array.array("I", [1, 2]))),
            lambda v: v.__setitem__(0, 256),
            lambda v: v.__setitem__(0, -1),
            lambda v: v.__setitem__(0, b"a"),
            lambda v: v.__setitem__("0", 1),
            lambda v: v.write(0, "text"),
            lambda v: v.write(0, 1234),
            lambda v: v.write(0, None),
            lambda v: v.memcpy(0, "text"),
            lambda v: v.memcpy(0, 1234),
            lambda v: v.pack_into("<Q", 0, "x"),
            lambda v: v.pack_into("<Z", 0, 1),
            lambda v: v.pack_into("<I", 0, 1 << 40),
        ],
    )
    def test_bad_stores_are_einval(
        self, sim: SimBackend, one: tuple[pm.Set, pm.Descriptor], assign: Callable[[pm.View], None]
    ) -> None:
        s, d = one
        v = s.view(d.address, 16)
        v[0:16] = b"0123456789abcdef"
        stores = sim.statistics().stores
        with pytest.raises(pm.InvalidArgumentError) as ei:
            assign(v)
        assert ei.value.code == ErrorCode.EINVAL
        assert v[0:16] == b"0123456789abcdef"
        assert sim.statistics().stores == stores

    @pytest.mark.parametrize(
        "op",
        [
            lambda v: v.write(14, b"abc"),
            lambda v: v.write(16, b"a"),
            lambda v: v.write(12, memoryview(array.array("I", [1, 2]))),  # 8 bytes, 2 items
            lambda v: v.memcpy(12, memoryview(array.array("I", [1, 2]))),
            lambda v: v.memcpy(10, b"0123456789"),
            lambda v: v.memset(0, 1, 17),
            lambda v: v.memmove(0, 8, 9),
            lambda v: v.memmove(9, 0, 8),
            lambda v: v.pack_into("<Q", 12, 1),
            lambda v: v.read(10, 7),
            lambda v: v.unpack_from("<Q", 9),
            lambda v: v.view(8, 9),
            lambda v: v.persist(8, 9),
            lambda v: v.flush(8, 9),
            lambda v: v.deep_flush(0, 17),
            lambda v: v.__setitem__(16, 1),
            lambda v: v.__getitem__(16),
        ],
    )
    def test_outside_the_view(
        self, sim: SimBackend, one: tuple[pm.Set, pm.Descriptor], op: Callable[[pm.View], object]
    ) -> None:
        """A view is bounded even where the part map goes on."""
        s, d = one
        v = s.view(d.address + 64, 16)
        s.store(d.address + 64, b"0123456789abcdefOUTSIDE")
        before = sim.statistics()
        with pytest.raises(pm.RangeError) as ei:
            op(v)
        assert ei.value.code == ErrorCode.LENGTH_OUT_OF_RANGE
        assert s.read(d.address + 64, 23) == b"0123456789abcdefOUTSIDE"
        after = sim.statistics()
        assert (after.stores, after.flushes, after.fences, after.deep_flushes) == (
            before.stores,
            before.flushes,
            before.fences,
            before.deep_flushes,
        )

    def test_pack_unpack_write_read(self, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        v = s.view(d)
        v.pack_into("<IQh", 16, 7, 1 << 40, -3)
        assert v.unpack_from("<IQh", 16) == (7, 1 << 40, -3)
        assert s.read(d.address + 16, 14) == struct.pack("<IQh", 7, 1 << 40, -3)
        assert v.unpack_from("<I") == (0,)
        v.write(100, b"written")
        v.write(200, memoryview(array.array("I", [1, 2])))  # its length in bytes counts
        assert v.read(100, 7) == b"written"
        assert v.read(200, 8) == struct.pack("<II", 1, 2)
        with pytest.raises(pm.InvalidArgumentError):
            v.unpack_from("<Z", 0)

    def test_mem_operations(self, sim: SimBackend, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        v = s.view(d.address + PAGE, 64)
        v.memcpy(0, b"0123456789")
        v.memmove(2, 0, 8)  # overlapping: a true move
        assert v.read(0, 10) == b"0101234567"
        v.memmove(0, 2, 8)
        assert v.read(0, 10) == b"0123456767"
        v.memset(10, ord("-"), 4)
        assert v.read(8, 8) == b"67----\0\0"
        assert s.read(d.address + PAGE, 14) == b"0123456767----"
        assert sim.lines() == []  # each operation flushed and drained

    def test_sub_views(self, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        v = s.view(d.address + 100, 200)
        sub = v.view(50, 20)
        assert (sub.address, sub.size) == (d.address + 150, 20)
        assert v.address_of(50) == d.address + 150
        subsub = sub.view(4, 8)
        assert subsub.address == d.address + 154
        subsub.u64[0] = 0x0102030405060708
        assert v.u8[54] == 0x08
        assert sub.read(4, 8) == (0x0102030405060708).to_bytes(8, "little")
        with pytest.raises(pm.RangeError):
            subsub.u8[8] = 1
        with pytest.raises(pm.RangeError):
            sub.view(10, 11)
        assert v.view(200, 0).size == 0

    def test_persist_and_flush(self, sim: SimBackend, one: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = one
        v = s.view(d.address + 128, 128)
        v.u64[0] = 1
        v.u64[15] = 2
        assert {ls.status for ls in sim.lines()} == {"dirty"}
        v.flush()
        assert {ls.status for ls in sim.lines()} == {"flushed"}
        v.drain()
        assert sim.lines() == []
        v.u64[1] = 3
        v.persist(8, 8)
        assert sim.lines() == []
        v.u64[2] = 4
        v.deep_flush()
        assert sim.lines() == []


# -- flags ---------------------------------------------------------------------------------

ALL_FLAGS = [
    F.NONE,
    F.NODRAIN,
    F.NONTEMPORAL,
    F.TEMPORAL,
    F.WC,
    F.WB,
    F.NOFLUSH,
    F.NODRAIN | F.NONTEMPORAL,
    F.NOFLUSH | F.NODRAIN,
    F(F.valid_mask()),
    1,
    32,
]


@pytest.mark.parametrize("flags", ALL_FLAGS, ids=str)
@pytest.mark.parametrize("length", [16, 1000])
def test_every_flag_is_accepted(
    one: tuple[pm.Set, pm.Descriptor], flags: pm.MemFlag, length: int
) -> None:
    s, d = one
    a = d.address
    data = bytes(range(256)) * 4
    s.memcpy(a, data[:length], flags=flags)
    s.memcpy(a + 2000, a, length, flags)
    s.memmove(a + 1, a, length, flags)
    s.memset(a + 3000, 0xCC, length, flags)
    s.view(d).memcpy(5000, data[:length], flags)
    s.view(d).memset(6000, 1, length, flags)
    s.view(d).memmove(7000, 5000, length, flags)
    assert s.read(a, 1) == data[:1]
    assert s.read(a + 1, length) == data[:length]
    assert s.read(a + 2000, length) == data[:length]
    assert s.read(a + 3000, length) == b"\xcc" * length
    assert s.read(a + 5000, length) == data[:length]
    assert s.read(a + 6000, length) == b"\x01" * length
    assert s.read(a + 7000, length) == data[:length]


def test_flag_effects(sim: SimBackend, one: tuple[pm.Set, pm.Descriptor]) -> None:
    s, d = one
    s.memcpy(d.address, b"x" * 64)  # flushed and drained
    assert sim.lines() == []
    s.memcpy(d.address, b"y" * 64, flags=F.NODRAIN)  # flushed, not drained
    assert [ls.status for ls in sim.lines()] == ["flushed"]
    s.drain()
    s.memcpy(d.address, b"z" * 64, flags=F.NOFLUSH)  # neither
    assert [ls.status for ls in sim.lines()] == ["dirty"]
    s.persist(d.address, 64)
    s.memset(d.address, 0, 64, F.NONTEMPORAL | F.NODRAIN)
    assert [ls.nontemporal > 0 for ls in sim.lines()] == [True]


BAD_FLAGS = [1 << 6, 1 << 10, -1, F.NODRAIN | (1 << 7), 1.0, "NODRAIN", True, None]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=repr)
def test_invalid_flags(sim: SimBackend, make_set: MakeSet, flags: Any) -> None:
    events: list[Any] = []
    s = make_set(event_callback=lambda st, e, a: events.append(e))
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.store(d.address, b"keep")
    events.clear()
    stores = sim.statistics().stores
    ops: list[Callable[[], None]] = [
        lambda: s.memcpy(d.address, b"new!", flags=flags),
        lambda: s.memcpy(d.address, d.address + 8, 4, flags),
        lambda: s.memmove(d.address, d.address + 1, 4, flags),
        lambda: s.memset(d.address, 0, 4, flags),
        lambda: s.view(d).memcpy(0, b"new!", flags),
        lambda: s.view(d).memset(0, 0, 4, flags),
        lambda: s.view(d).memmove(0, 1, 4, flags),
    ]
    for op in ops:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            op()
        assert ei.value.code == ErrorCode.EINVAL
    assert s.read(d.address, 4) == b"keep"
    assert events == []
    assert sim.statistics().stores == stores


# -- memcpy versus memmove -----------------------------------------------------------------


@pytest.mark.parametrize("delta", [-7, -1, 0, 1, 7])
def test_memcpy_overlap_is_einval(
    sim: SimBackend, one: tuple[pm.Set, pm.Descriptor], delta: int
) -> None:
    s, d = one
    a = d.address + 100
    s.store(a - 10, bytes(range(40)))
    stores = sim.statistics().stores
    with pytest.raises(pm.InvalidArgumentError) as ei:
        s.memcpy(a + delta, a, 8)
    assert ei.value.code == ErrorCode.EINVAL
    assert s.read(a - 10, 40) == bytes(range(40))
    assert sim.statistics().stores == stores


@pytest.mark.parametrize("delta", [-8, 8, 100])
def test_memcpy_adjacent_is_fine(one: tuple[pm.Set, pm.Descriptor], delta: int) -> None:
    s, d = one
    a = d.address + 200
    s.store(a, b"ABCDEFGH")
    s.memcpy(a + delta, a, 8)
    assert s.read(a + delta, 8) == b"ABCDEFGH"


@pytest.mark.parametrize("delta", [-7, -1, 0, 1, 7, 8, 100])
def test_memmove_overlap_works(one: tuple[pm.Set, pm.Descriptor], delta: int) -> None:
    s, d = one
    a = d.address + 200
    model = bytearray(400)
    model[100:116] = b"0123456789abcdef"
    s.store(a - 100, bytes(model))
    s.memmove(a + delta, a, 16)
    model[100 + delta : 116 + delta] = model[100:116]
    assert s.read(a - 100, 400) == bytes(model)


def test_mem_arguments(one: tuple[pm.Set, pm.Descriptor]) -> None:
    s, d = one
    a = d.address
    with pytest.raises(pm.InvalidArgumentError):
        s.memcpy(a, a + 100)  # an address source needs a length
    with pytest.raises(pm.InvalidArgumentError):
        s.memcpy(a, b"abc", 4)  # longer than the buffer
    s.memcpy(a, b"abcdef", 3)  # a prefix of the buffer
    assert s.read(a, 6) == b"abc\0\0\0"
    s.memmove(a + 10, b"xyz")
    assert s.read(a + 10, 3) == b"xyz"
    for value in (256, -1, True, "a", 1.0):
        with pytest.raises(pm.InvalidArgumentError):
            s.memset(a, value, 1)  # type: ignore[arg-type]
    assert s.read(a, 1) == b"a"


# -- fetched-once persist functions --------------------------------------------------------


def test_fn_identity(make_set: MakeSet) -> None:
    s = make_set()
    p, f, dr = s.persist_fn, s.flush_fn, s.drain_fn
    assert callable(p) and callable(f) and callable(dr)
    s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.coalescing = pm.Coalescing.FULL
    s.map(pm.Part(pm.Source.anonymous(PAGE)))
    for _ in range(3):
        assert s.persist_fn is p
        assert s.flush_fn is f
        assert s.drain_fn is dr
    assert p is not f and f is not dr


def workload(s: pm.Set, d: pm.Descriptor) -> None:
    s.store(d.address + 8, b"a" * 100)
    s.store(d.address + PAGE + 3, b"b" * 10)
    s.memcpy(d.address + PAGE + 512, b"c" * 64, flags=F.NOFLUSH)


def test_persist_fn_equals_flush_fn_then_drain_fn() -> None:
    sims = (SimBackend(), SimBackend())
    sets = [pm.Set(pm.Config(granularity=CL, backend=b)) for b in sims]
    ds = [s.map(pm.Part(pm.Source.anonymous(2 * PAGE))) for s in sets]
    for s, d in zip(sets, ds, strict=True):
        workload(s, d)
    assert sims[0].image_count() == sims[1].image_count() > 1
    # One range, [d+8, d+PAGE+13): the first two stores but not the memcpy.
    n = PAGE + 5
    sets[0].persist_fn(ds[0].address + 8, n)
    sets[1].flush_fn(ds[1].address + 8, n)
    mid = sims[1].crash_state()
    assert mid.image_count() > sims[0].image_count()  # flushed but not yet drained
    assert "flushed" in {ls.status for ls in mid.lines()}
    sets[1].drain_fn()
    for a, b in [(sims[0], sims[1])]:
        assert a.crash_state().image_count() == b.crash_state().image_count()
        assert a.lines() == b.lines()
        sa, sb = a.statistics(), b.statistics()
        assert (sa.flushes, sa.fences, sa.dirty_lines, sa.flushed_lines) == (
            sb.flushes,
            sb.fences,
            sb.dirty_lines,
            sb.flushed_lines,
        )
    # Only the unflushed memcpy is left in flight, on both.
    lines = sims[0].lines()
    assert [(ls.offset, ls.status) for ls in lines] == [(PAGE + 512, "dirty")]
    for s in sets:
        s.close()


def test_persist_across_adjacent_part_maps(
    sim: SimBackend, adjacent: tuple[pm.Set, pm.Descriptor, pm.Descriptor]
) -> None:
    s, a, _ = adjacent
    s.store(a.end - 32, b"L" * 64)
    assert len(sim.lines()) == 2
    s.persist_fn(a.end - 32, 64)
    assert sim.lines() == []
    assert sim.image_count() == 1


# -- bad input changes nothing -------------------------------------------------------------


def _all_ops(s: pm.Set, addr: Any, length: Any) -> list[Callable[[], object]]:
    """Every operation on ``[addr, addr + length)``; stores of bytes only if length is valid."""
    stores: list[Callable[[], object]] = []
    if type(length) is int and length >= 0:
        stores = [lambda: s.store(addr, b"x" * length), lambda: s.memcpy(addr, b"x" * length)]
    return [
        *stores,
        lambda: s.read(addr, length),
        lambda: s.memset(addr, 1, length),
        lambda: s.flush(addr, length),
        lambda: s.persist(addr, length),
        lambda: s.persist_fn(addr, length),
        lambda: s.flush_fn(addr, length),
    ]


@pytest.mark.parametrize(
    ("where", "length", "exc", "code"),
    [
        ("before", 4, pm.LookupFailure, ErrorCode.CANNOT_FIND_PART_MAP),
        ("end", 4, pm.LookupFailure, ErrorCode.CANNOT_FIND_PART_MAP),
        ("far", 4, pm.LookupFailure, ErrorCode.CANNOT_FIND_PART_MAP),
        ("zero", 4, pm.LookupFailure, ErrorCode.CANNOT_FIND_PART_MAP),
        ("last", 2, pm.RangeError, ErrorCode.LENGTH_OUT_OF_RANGE),
        ("start", 2 * PAGE + 1, pm.RangeError, ErrorCode.LENGTH_OUT_OF_RANGE),
    ],
)
def test_out_of_range_changes_nothing(
    sim: SimBackend,
    make_set: MakeSet,
    where: str,
    length: int,
    exc: type[pm.PmemError],
    code: ErrorCode,
) -> None:
    events: list[Any] = []
    s = make_set(event_callback=lambda st, e, a: events.append(e))
    d = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
    content = random.Random(5).randbytes(2 * PAGE)
    s.store(d.address, content)
    events.clear()
    lines = sim.lines()
    before = sim.statistics()
    addr = {
        "before": d.address - 1,
        "end": d.end,
        "far": d.address + (1 << 32),
        "zero": 0,
        "last": d.end - 1,
        "start": d.address,
    }[where]
    ops = [
        *_all_ops(s, addr, length),
        lambda: s.memmove(addr, d.address + PAGE // 2, length),
        lambda: s.memmove(d.address, addr, length),
        lambda: s.view(addr, length),
    ]
    if length < PAGE // 2:  # a longer copy within the set would overlap: EINVAL first
        ops.append(lambda: s.memcpy(addr, d.address + PAGE // 2, length))
        ops.append(lambda: s.memcpy(d.address + PAGE // 2, addr, length))
    for op in ops:
        with pytest.raises(exc) as ei:
            op()
        assert ei.value.code == code
    assert s.read(d.address, 2 * PAGE) == content
    assert events == []
    assert sim.lines() == lines
    after = sim.statistics()
    assert (after.stores, after.flushes, after.fences) == (
        before.stores,
        before.flushes,
        before.fences,
    )


def test_gap_between_part_maps(make_set: MakeSet) -> None:
    s = make_set()
    a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    b = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    assert a.end < b.address  # separate reservations leave a gap
    s.store(a.end - 4, b"tail")
    with pytest.raises(pm.RangeError) as ei:
        s.store(a.end - 4, b"tail+gap")
    assert ei.value.code == ErrorCode.LENGTH_OUT_OF_RANGE
    with pytest.raises(pm.RangeError):
        s.read(a.end - 4, 8)
    assert s.read(a.end - 4, 4) == b"tail"


@pytest.mark.parametrize("data", ["text", 5, None, [1, 2], 3.5, array.array("B", [1])])
def test_non_bytes_data(one: tuple[pm.Set, pm.Descriptor], data: Any) -> None:
    s, d = one
    s.store(d.address, b"same")
    for op in (
        lambda: s.store(d.address, data),
        lambda: s.memcpy(d.address, data),
        lambda: s.memmove(d.address, data),
        lambda: s.view(d).write(0, data),
        lambda: s.view(d).memcpy(0, data),
    ):
        with pytest.raises(pm.InvalidArgumentError) as ei:
            op()
        assert ei.value.code == ErrorCode.EINVAL
    assert s.read(d.address, 4) == b"same"


def test_bytes_like_data_is_fine(one: tuple[pm.Set, pm.Descriptor]) -> None:
    s, d = one
    s.store(d.address, bytearray(b"ba"))
    s.store(d.address + 2, memoryview(b"mv"))
    s.memcpy(d.address + 4, memoryview(array.array("H", [0x4142])))
    assert s.read(d.address, 6) == b"bamvBA"


@pytest.mark.parametrize("kind", ["float", "bool", "str", "none", "negative"])
def test_addresses_must_be_ints(
    sim: SimBackend, one: tuple[pm.Set, pm.Descriptor], kind: str
) -> None:
    s, d = one
    bad: Any = {
        "float": float(d.address),
        "bool": True,
        "str": str(d.address),
        "none": None,
        "negative": -d.address,
    }[kind]
    s.store(d.address, b"ok")
    s.persist(d.address, 2)
    stores = sim.statistics().stores
    ops = [
        *_all_ops(s, bad, 2),
        *_all_ops(s, d.address, bad if kind != "negative" else -2),
        lambda: s.memcpy(d.address + 100, bad, 2),
        lambda: s.memmove(d.address + 100, bad, 2),
        lambda: s.memmove(bad, d.address, 2),
        lambda: s.deep_flush(bad, 2),
        lambda: s.deep_flush(d.address, bad if kind != "negative" else -2),
        lambda: s.part_map_by_address(bad),
        lambda: s.remove_range(bad, 2),
    ]
    if bad is not None:  # view(None, n) is the first part map's view
        ops.append(lambda: s.view(bad, 2))
    for op in ops:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            op()
        assert ei.value.code == ErrorCode.EINVAL
    assert s.read(d.address, 2) == b"ok"
    assert sim.statistics().stores == stores
    assert len(list(s.part_maps())) == 1


def test_deep_flush(sim: SimBackend, adjacent: tuple[pm.Set, pm.Descriptor, pm.Descriptor]) -> None:
    s, a, b = adjacent
    s.store(a.address, b"1")
    s.store(b.address + 100, b"2")
    s.deep_flush(a.address, 2 * PAGE)
    assert sim.lines() == []
    count = sim.statistics().deep_flushes
    s.deep_flush(b.end + PAGE, PAGE)  # meets no part map: nothing to do
    assert sim.statistics().deep_flushes == count


def test_deep_flush_failure(
    monkeypatch: pytest.MonkeyPatch, one: tuple[pm.Set, pm.Descriptor]
) -> None:
    s, d = one
    m = next(iter(s.backend.iter_maps()))  # type: ignore[attr-defined]

    def fail(*args: object) -> None:
        raise Pmem2Failure(pm.Pmem2Code.DEEP_FLUSH_RANGE, "no region")

    monkeypatch.setattr(m, "deep_flush", fail, raising=False)
    with pytest.raises(pm.MediaError) as ei:
        s.deep_flush(d.address, 64)
    assert ei.value.code == ErrorCode.DEEP_FLUSH_FAIL
    assert ei.value.pmem2_code == pm.Pmem2Code.DEEP_FLUSH_RANGE


# -- across adjacent part maps -------------------------------------------------------------


def test_stores_span_adjacent_part_maps(
    sim: SimBackend, adjacent: tuple[pm.Set, pm.Descriptor, pm.Descriptor]
) -> None:
    s, a, b = adjacent
    edge = a.end
    s.store(edge - 3, b"abcdef")
    assert s.read(edge - 3, 6) == b"abcdef"
    assert s.read(edge, 3) == b"def"
    s.memcpy(edge - 2, b"WXYZ")
    s.memset(edge - 6, ord("."), 3)
    assert s.read(edge - 6, 8) == b"...aWXYZ"
    s.memmove(edge - 8, edge - 6, 8)
    assert s.read(edge - 8, 8) == b"...aWXYZ"
    s.memcpy(edge + 100, edge - 8, 8)
    assert s.read(edge + 100, 8) == b"...aWXYZ"
    v = s.view(a.address, 2 * PAGE)
    v.u64[PAGE // 8 - 1 + 0] = 1  # the last word of a
    v.pack_into("<Q", PAGE - 4, 0x1122334455667788)
    assert v.unpack_from("<Q", PAGE - 4) == (0x1122334455667788,)
    s.persist(edge - 8, 16)
    # Each half lives in its own part map: removing b leaves a's half.
    with s.part_map_by_address(b.address) as pmap:
        s.remove_part_map(pmap)
    assert s.read(edge - 4, 4) == (0x55667788).to_bytes(4, "little")
    with pytest.raises(pm.LookupFailure):
        s.read(edge, 1)


def test_stores_span_a_coalesced_part_map(make_set: MakeSet) -> None:
    s = make_set()
    s.coalescing = pm.Coalescing.FULL
    a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.store(a.end - 2, b"span")
    assert s.read(a.end - 2, 4) == b"span"


# -- errors --------------------------------------------------------------------------------

SPEC_CODES = {
    "UNKNOWN": -200000,
    "NOSUPP": -200001,
    "INVALID_PMEM2_SOURCE": -200002,
    "INVALID_SOURCE_PATH": -200003,
    "INVALID_SOURCE_TYPE": -200004,
    "CANNOT_ALLOCATE_INTERNAL_STRUCTURE": -200005,
    "INVALID_OFFSET_VALUE": -200006,
    "GRANULARITY_NOT_SUPPORTED": -200007,
    "INVALID_PMEM2_MAP": -200008,
    "PART_EXISTS": -200009,
    "GRANULARITY_NOT_SET": -200010,
    "GRANULARITY_MISMATCH": -200011,
    "NO_PART_MAPPED": -200012,
    "CANNOT_FIND_PART_MAP": -200013,
    "CANNOT_COALESCE_PARTS": -200014,
    "LENGTH_UNALIGNED": -200015,
    "PART_NOT_FOUND": -200016,
    "INVALID_COALESCING_VALUE": -200017,
    "DEEP_FLUSH_FAIL": -200018,
    "INVALID_SOURCE_FILE_CREATE_FLAGS": -200019,
    "CANNOT_CREATE_TEMP_FILE": -200020,
    "CANNOT_GROW_SOURCE_FILE": -200021,
    "PART_MAP_POSSIBLE_USE_AFTER_DROP": -200022,
    "CANNOT_FIT_PART_MAP": -200023,
    "OFFSET_OUT_OF_RANGE": -200024,
    "INVALID_PART_STATES": -200025,
    "UNDESIRABLE_PART_STATE": -200026,
    "SDS_ALREADY_SET": -200027,
    "SDS_NOSUPP": -200028,
    "SDS_DEVICE_ID_LEN_TOO_BIG": -200029,
    "MAP_LENGTH_UNSET": -200030,
    "SOURCE_FILE_IS_TOO_SMALL": -200031,
    "IO_FAIL": -200032,
    "LENGTH_OUT_OF_RANGE": -200033,
    "INVALID_ALIGNMENT_VALUE": -200035,
    "DAX_REGION_NOT_FOUND": -200036,
    "CANNOT_READ_BOUNDS": -200037,
    "BADBLOCK_NOSUPP": -200038,
}


@pytest.mark.parametrize(("name", "value"), SPEC_CODES.items())
def test_error_code_values(name: str, value: int) -> None:
    code = ErrorCode[name]
    assert code == value
    assert code.c_name == f"PMEMSET_E_{name}"


def test_error_codes_are_exactly_the_spec_ones() -> None:
    extra = {c.name for c in ErrorCode} - set(SPEC_CODES)
    assert extra == {"EINVAL", "ENOMEM", "CALLBACK"}
    assert ErrorCode.EINVAL == -22 and ErrorCode.ENOMEM == -12
    assert ErrorCode.EINVAL.c_name == "EINVAL"
    assert all(-100037 <= c <= -100000 for c in pm.Pmem2Code)


CLASS_OF = {
    pm.InvalidArgumentError: [
        "EINVAL",
        "INVALID_OFFSET_VALUE",
        "LENGTH_UNALIGNED",
        "INVALID_COALESCING_VALUE",
        "INVALID_SOURCE_FILE_CREATE_FLAGS",
        "INVALID_PART_STATES",
        "GRANULARITY_NOT_SET",
        "INVALID_ALIGNMENT_VALUE",
        "SDS_DEVICE_ID_LEN_TOO_BIG",
        "INVALID_SOURCE_TYPE",
    ],
    pm.RangeError: ["OFFSET_OUT_OF_RANGE", "LENGTH_OUT_OF_RANGE"],
    pm.SourceError: [
        "INVALID_PMEM2_SOURCE",
        "INVALID_SOURCE_PATH",
        "CANNOT_CREATE_TEMP_FILE",
        "CANNOT_GROW_SOURCE_FILE",
        "SOURCE_FILE_IS_TOO_SMALL",
        "MAP_LENGTH_UNSET",
        "SDS_ALREADY_SET",
    ],
    pm.MapError: [
        "INVALID_PMEM2_MAP",
        "GRANULARITY_NOT_SUPPORTED",
        "GRANULARITY_MISMATCH",
        "CANNOT_COALESCE_PARTS",
        "CANNOT_FIT_PART_MAP",
        "PART_EXISTS",
        "ENOMEM",
        "CANNOT_ALLOCATE_INTERNAL_STRUCTURE",
    ],
    pm.LookupFailure: ["NO_PART_MAPPED", "CANNOT_FIND_PART_MAP", "PART_NOT_FOUND"],
    pm.StateError: ["PART_MAP_POSSIBLE_USE_AFTER_DROP"],
    pm.PartStateError: ["UNDESIRABLE_PART_STATE"],
    pm.MediaError: ["IO_FAIL", "DEEP_FLUSH_FAIL"],
    pm.NotSupportedError: [
        "NOSUPP",
        "SDS_NOSUPP",
        "BADBLOCK_NOSUPP",
        "DAX_REGION_NOT_FOUND",
        "CANNOT_READ_BOUNDS",
    ],
    pm.CallbackError: ["CALLBACK"],
    pm.PmemError: ["UNKNOWN"],
}


@pytest.mark.parametrize(
    ("cls", "name"), [(cls, name) for cls, names in CLASS_OF.items() for name in names]
)
def test_error_for_picks_the_class(cls: type[pm.PmemError], name: str) -> None:
    err = errors.error_for(ErrorCode[name], "what happened")
    assert type(err) is cls
    assert err.code == ErrorCode[name]
    assert err.message == "what happened"
    assert err.code_name == ErrorCode[name].c_name
    assert str(err) == f"{ErrorCode[name].c_name} ({int(ErrorCode[name])}): what happened"


def test_every_code_has_a_class() -> None:
    covered = {name for names in CLASS_OF.values() for name in names}
    assert covered == {c.name for c in ErrorCode}


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (pm.InvalidArgumentError, (pm.PmemError, ValueError)),
        (pm.RangeError, (pm.InvalidArgumentError, IndexError, ValueError, pm.PmemError)),
        (pm.SourceError, (pm.PmemError,)),
        (pm.MapError, (pm.PmemError,)),
        (pm.LookupFailure, (pm.PmemError, LookupError)),
        (pm.StateError, (pm.PmemError,)),
        (pm.PartStateError, (pm.PmemError,)),
        (pm.MediaError, (pm.PmemError,)),
        (pm.NotSupportedError, (pm.PmemError,)),
        (pm.CallbackError, (pm.PmemError,)),
        (pm.BackendUnavailableError, (pm.NotSupportedError, pm.PmemError)),
        (pm.PmemError, (Exception,)),
    ],
)
def test_hierarchy(cls: type[pm.PmemError], bases: tuple[type, ...]) -> None:
    for base in bases:
        assert issubclass(cls, base)
    if cls is not pm.RangeError:
        assert not issubclass(cls, IndexError)


def test_error_render_with_pmem2_cause() -> None:
    err = errors.error_for(
        ErrorCode.INVALID_PMEM2_MAP,
        "cannot map",
        pmem2_code=pm.Pmem2Code.OFFSET_UNALIGNED,
        pmem2_message="offset 100 is not page aligned",
    )
    assert str(err) == (
        "PMEMSET_E_INVALID_PMEM2_MAP (-200008): cannot map [caused by "
        "PMEM2_E_OFFSET_UNALIGNED (-100011): offset 100 is not page aligned]"
    )
    assert pm.CallbackError(7, "callback said no").code_name == "7"


ERRORS_TO_PICKLE = [
    errors.error_for(ErrorCode.GRANULARITY_MISMATCH, "mismatch"),
    errors.error_for(ErrorCode.LENGTH_OUT_OF_RANGE, "too long"),
    errors.error_for(ErrorCode.EINVAL, "bad"),
    errors.error_for(
        ErrorCode.INVALID_PMEM2_MAP, "map", pmem2_code=-100011, pmem2_message="unaligned"
    ),
    pm.CallbackError(42, "callback returned 42"),
    pm.BackendUnavailableError(ErrorCode.NOSUPP, "no libpmem2 here"),
    pm.PmemError(ErrorCode.UNKNOWN, "unknown"),
]


@pytest.mark.parametrize("err", ERRORS_TO_PICKLE, ids=lambda e: type(e).__name__)
def test_errors_pickle(err: pm.PmemError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.code == err.code
    assert back.code_name == err.code_name
    assert back.message == err.message
    assert back.pmem2_code == err.pmem2_code
    assert back.pmem2_message == err.pmem2_message
    assert str(back) == str(err)
    assert back.args == err.args


def test_raised_errors_pickle(make_set: MakeSet) -> None:
    s = make_set()
    with pytest.raises(pm.LookupFailure) as ei:
        _ = s.granularity
    back = pickle.loads(pickle.dumps(ei.value))
    assert isinstance(back, pm.LookupFailure)
    assert back.code == ErrorCode.NO_PART_MAPPED
    assert back.code_name == "PMEMSET_E_NO_PART_MAPPED"


# -- import weight -------------------------------------------------------------------------


def test_import_is_light() -> None:
    code = (
        "import sys, pmemsim\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'cffi', '_cffi_backend', 'hypothesis', 'pmemsim_backends', 'elftools'})\n"
        "print(repr(heavy))\n"
        "print(pmemsim.Set.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    lines = out.stdout.splitlines()
    assert lines == ["[]", "Set"], out.stderr
