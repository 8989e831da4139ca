"""The set layer on libpmem2: sources, granularity, mem operations, reservations.

Files live in pytest's tmp_path (ext4 or tmpfs here: PAGE granularity); anonymous sources
get BYTE; PMEM2_FORCE_GRANULARITY makes libpmem2 pretend finer granularities for files.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pmemsim_backends.real import RealBackend

import pmemsim as pm

pytest_plugins = ["real_support"]

PAGE = 4096

G = pm.Granularity
F = pm.MemFlag
MakeSet = Callable[..., pm.Set]


def _file(tmp_path: Path, name: str = "pool", size: int = 4 * PAGE) -> pm.Source:
    src = pm.Source.from_file(tmp_path / name, pm.SourceFlag.CREATE_ALWAYS)
    if size:
        src.grow(size)
    return src


# -- sources -------------------------------------------------------------------------------


def test_file_contents_reach_the_file(make_real_set: MakeSet, tmp_path: Path) -> None:
    src = _file(tmp_path)
    s = make_real_set()
    d = s.map(pm.Part(src, 0, 2 * PAGE))
    assert s.granularity == G.PAGE
    s.store(d.address + 10, b"stored")
    s.persist(d.address, 64)
    s.memcpy(d.address + PAGE, b"copied")
    s.close()
    src.close()
    raw = (tmp_path / "pool").read_bytes()
    assert raw[10:16] == b"stored"
    assert raw[PAGE : PAGE + 6] == b"copied"


def test_file_content_is_mapped_back(make_real_set: MakeSet, tmp_path: Path) -> None:
    (tmp_path / "pool").write_bytes(b"x" * 100 + bytes(2 * PAGE - 100))
    src = pm.Source.from_file(tmp_path / "pool")
    s = make_real_set()
    d = s.map(pm.Part(src))
    assert d.size == 2 * PAGE
    assert s.read(d.address + 98, 4) == b"xx\0\0"


def test_set_grows_a_file_to_fit_the_part(make_real_set: MakeSet, tmp_path: Path) -> None:
    src = _file(tmp_path, size=0)
    s = make_real_set()
    s.map(pm.Part(src, PAGE, 2 * PAGE))
    assert os.path.getsize(tmp_path / "pool") == 3 * PAGE


def test_anonymous_memory_is_byte_granular_and_fresh_at_every_map(make_real_set: MakeSet) -> None:
    src = pm.Source.anonymous(2 * PAGE)
    s = make_real_set(G.BYTE)
    d1 = s.map(pm.Part(src))
    assert s.granularity == G.BYTE
    s.memset(d1.address, 0xAB, 2 * PAGE)
    d2 = s.map(pm.Part(src))
    assert s.read(d2.address, 2 * PAGE) == bytes(2 * PAGE)
    assert s.read(d1.address, 4) == b"\xab" * 4


def test_temporary_file_vanishes_with_its_last_user(make_real_set: MakeSet, tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    src = pm.Source.temporary(tmp_path)
    s = make_real_set()
    d = s.map(pm.Part(src, 0, PAGE))
    src.close()  # closed while mapped: the map keeps working on our own descriptor
    s.memcpy(d.address, b"still here")
    assert s.read(d.address, 10) == b"still here"
    s.close()
    assert set(os.listdir("/proc/self/fd")) == before
    assert os.listdir(tmp_path) == []


def test_user_file_offset_is_left_alone(make_real_set: MakeSet, tmp_path: Path) -> None:
    # Size checks use lseek on a descriptor of our own, never on the user's.
    src = _file(tmp_path)
    assert src.fd is not None
    os.lseek(src.fd, 123, os.SEEK_SET)
    s = make_real_set()
    d = s.map(pm.Part(src, 0, PAGE))
    s.store(d.address, b"abc")
    s.read(d.address, 3)
    assert os.lseek(src.fd, 0, os.SEEK_CUR) == 123


def test_image_source_holds_the_snapshot_and_leaves_it_alone(make_real_set: MakeSet) -> None:
    snap = pm.Snapshot("img", 3 * PAGE, {0: b"A" * PAGE, 2: b"C" * PAGE})
    s = make_real_set(G.BYTE)
    d = s.map(pm.Part(pm.Source.from_image(snap)))
    assert s.read(d.address, 3 * PAGE) == b"A" * PAGE + bytes(PAGE) + b"C" * PAGE
    s.memset(d.address, 0, PAGE)
    assert snap.pages[0] == b"A" * PAGE
    part = s.map(pm.Part(pm.Source.from_image(snap), 2 * PAGE, PAGE))
    assert s.read(part.address, 2) == b"CC"


# -- granularity ---------------------------------------------------------------------------


def test_files_without_dax_offer_page_only(make_real_set: MakeSet, tmp_path: Path) -> None:
    src = _file(tmp_path)
    for g in (G.BYTE, G.CACHE_LINE):
        s = make_real_set(g)
        with pytest.raises(pm.MapError) as info:
            s.map(pm.Part(src, 0, PAGE))
        err = info.value
        assert err.code == pm.ErrorCode.GRANULARITY_NOT_SUPPORTED
        assert err.pmem2_code == pm.Pmem2Code.GRANULARITY_NOT_SUPPORTED
        assert err.pmem2_message and "DAX" in err.pmem2_message


@pytest.mark.parametrize(
    ("forced", "required", "effective"),
    [
        ("BYTE", G.BYTE, G.BYTE),
        ("byte", G.PAGE, G.BYTE),
        ("CACHE_LINE", G.CACHE_LINE, G.CACHE_LINE),
        ("cache_line", G.PAGE, G.CACHE_LINE),
        ("CACHE_LINE", G.BYTE, None),
        ("PAGE", G.PAGE, G.PAGE),
    ],
)
def test_forced_granularity_pretends(
    make_real_set: MakeSet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forced: str,
    required: pm.Granularity,
    effective: pm.Granularity | None,
) -> None:
    monkeypatch.setenv("PMEM2_FORCE_GRANULARITY", forced)
    src = _file(tmp_path)
    s = make_real_set(required)
    if effective is None:
        with pytest.raises(pm.MapError) as info:
            s.map(pm.Part(src, 0, PAGE))
        assert info.value.code == pm.ErrorCode.GRANULARITY_NOT_SUPPORTED
        return
    d = s.map(pm.Part(src, 0, PAGE))
    assert s.granularity == effective
    s.memcpy(d.address, b"forced")  # real CLWB/SFENCE (or msync) paths run
    s.persist(d.address, 6)
    assert s.read(d.address, 6) == b"forced"


def test_a_second_granularity_is_a_mismatch(make_real_set: MakeSet, tmp_path: Path) -> None:
    s = make_real_set(G.PAGE)
    s.map(pm.Part(pm.Source.anonymous(PAGE)))  # BYTE
    with pytest.raises(pm.MapError) as info:
        s.map(pm.Part(_file(tmp_path), 0, PAGE))  # PAGE
    assert info.value.code == pm.ErrorCode.GRANULARITY_MISMATCH
    assert len(list(s.part_maps())) == 1


# -- mem operations ------------------------------------------------------------------------

_FLAG_SETS = [
    F(sum(c))
    for n in range(3)
    for c in itertools.combinations(
        [F.NODRAIN, F.NONTEMPORAL, F.TEMPORAL, F.WC, F.WB, F.NOFLUSH], n
    )
]


@pytest.mark.parametrize("granularity", [G.BYTE, G.CACHE_LINE, G.PAGE])
def test_memcpy_memset_with_every_flag_pair(
    make_real_set: MakeSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, granularity: G
) -> None:
    monkeypatch.setenv("PMEM2_FORCE_GRANULARITY", granularity.name)
    s = make_real_set(granularity)
    d = s.map(pm.Part(_file(tmp_path), 0, 4 * PAGE))
    assert s.granularity == granularity
    for i, flags in enumerate(_FLAG_SETS):
        for size in (1, 63, 256, 3000):  # below and above the non-temporal threshold
            data = bytes((i + j) & 0xFF for j in range(size))
            at = d.address + 17 * i
            s.memcpy(at, data, flags=flags)
            assert s.read(at, size) == data
            s.memset(at, i, size, flags)
            assert s.read(at, size) == bytes([i]) * size
        s.drain()


def test_memmove_within_the_set_handles_overlap(make_real_set: MakeSet) -> None:
    s = make_real_set(G.BYTE)
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.memcpy(d.address, bytes(range(100)))
    s.memmove(d.address + 10, d.address, 50)
    assert s.read(d.address + 10, 50) == bytes(range(50))
    with pytest.raises(pm.InvalidArgumentError):
        s.memcpy(d.address + 10, d.address, 50)  # overlapping memcpy is refused


def test_flush_drain_deep_flush_on_files(make_real_set: MakeSet, tmp_path: Path) -> None:
    s = make_real_set()
    d = s.map(pm.Part(_file(tmp_path), 0, 2 * PAGE))
    s.store(d.address, b"x" * 100)
    s.flush(d.address, 100)
    s.drain()
    s.persist_fn(d.address, 100)
    s.deep_flush(d.address, 2 * PAGE)
    s.view(d).deep_flush()
    assert s.read(d.address, 100) == b"x" * 100


def test_typed_view_stores(make_real_set: MakeSet) -> None:
    s = make_real_set(G.BYTE)
    v = s.view(s.map(pm.Part(pm.Source.anonymous(PAGE))))
    for i in range(len(v.u64)):
        v.u64[i] = i * 3
    v.persist()
    assert [v.u64[i] for i in (0, 1, 511)] == [0, 3, 1533]
    v.pack_into("<IQ", 8, 7, 9)
    assert v.unpack_from("<IQ", 8) == (7, 9)


# -- reservations and coalescing -----------------------------------------------------------


def test_full_coalescing_makes_one_contiguous_part_map(make_real_set: MakeSet) -> None:
    s = make_real_set(G.BYTE)
    s.coalescing = pm.Coalescing.FULL
    d1 = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
    d2 = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    assert d2.address == d1.address and d2.size == 3 * PAGE
    assert list(s.part_maps()) == [d2]
    data = bytes(range(256)) * 2
    s.memcpy(d1.address + 2 * PAGE - 256, data)  # across the two parts
    assert s.read(d1.address + 2 * PAGE - 256, 512) == data
    s.remove_range(d1.address + 2 * PAGE, PAGE)
    assert [m.size for m in s.part_maps()] == [2 * PAGE]


def test_coalescing_into_a_taken_range(make_real_set: MakeSet, real: RealBackend) -> None:
    s = make_real_set(G.BYTE)
    # libpmem2 maps a reservation with 2 MiB of padding after its 2 MiB-aligned end: only
    # past it is the range another mapping can take (free thanks to the backend's HEADROOM).
    d1 = s.map(pm.Part(pm.Source.anonymous(2 << 20)))
    blocker = pm.Reservation(PAGE, address=d1.end + (2 << 20), backend=real)
    try:
        s.coalescing = pm.Coalescing.FULL
        with pytest.raises(pm.MapError) as info:
            s.map(pm.Part(pm.Source.anonymous((2 << 20) + PAGE)))
        assert info.value.code == pm.ErrorCode.CANNOT_COALESCE_PARTS
        s.coalescing = pm.Coalescing.OPPORTUNISTIC
        d2 = s.map(pm.Part(pm.Source.anonymous((2 << 20) + PAGE)))
        assert d2.address != d1.end
        assert len(list(s.part_maps())) == 2
    finally:
        blocker.close()


def test_user_reservation_first_fit(make_real_set: MakeSet, real: RealBackend) -> None:
    res = pm.Reservation(4 * PAGE, backend=real)
    s = make_real_set(G.BYTE, reservation=res)
    a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    b = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
    assert (a.address, b.address) == (res.address, res.address + PAGE)
    s.remove_range(a.address, PAGE)
    c = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    assert c.address == res.address
    with pytest.raises(pm.MapError) as info:
        s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
    assert info.value.code == pm.ErrorCode.CANNOT_FIT_PART_MAP
    with pytest.raises(pm.PmemError) as closing:
        res.close()
    assert closing.value.pmem2_code == pm.Pmem2Code.VM_RESERVATION_NOT_EMPTY
    s.close()
    res.close()


def test_reservation_at_a_taken_address_fails(make_real_set: MakeSet, real: RealBackend) -> None:
    s = make_real_set(G.BYTE)
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    with pytest.raises(pm.MapError) as info:
        pm.Reservation(PAGE, address=d.address, backend=real)
    # libpmem2 1.12.1 answers MAPPING_EXISTS here (mmap MAP_FIXED_NOREPLACE failed).
    assert info.value.pmem2_code == pm.Pmem2Code.MAPPING_EXISTS


def test_reservation_extend_shrink_delete(real: RealBackend) -> None:
    res = real.reserve(2 * PAGE)
    start = res.address
    try:
        res.extend(PAGE)
        assert (res.address, res.size) == (start, 3 * PAGE)
        res.shrink(0, PAGE)
        assert (res.address, res.size) == (start + PAGE, 2 * PAGE)
        with pytest.raises(pm.backend.Pmem2Failure):
            res.shrink(PAGE // 2, PAGE)  # not page aligned
    finally:
        res.delete()
    res.delete()  # twice is harmless
    with pytest.raises(pm.backend.Pmem2Failure):
        res.extend(PAGE)


def test_remove_part_map_of_anonymous_memory(make_real_set: MakeSet) -> None:
    # libpmem2 has no deep flush for anonymous memory; removal deep-flushes first.
    s = make_real_set(G.BYTE)
    s.map(pm.Part(pm.Source.anonymous(PAGE)))
    pmap = s.first_part_map()
    assert pmap is not None
    s.remove_part_map(pmap)
    assert list(s.part_maps()) == []


@pytest.mark.parametrize("size", [PAGE, 4 << 20, 64 << 20])
def test_coalescing_grows_a_reservation_in_place(make_real_set: MakeSet, size: int) -> None:
    # Beyond libpmem2's 2 MiB alignment only the backend's headroom leaves room to grow.
    s = make_real_set(G.BYTE)
    s.coalescing = pm.Coalescing.FULL
    d1 = s.map(pm.Part(pm.Source.anonymous(size)))
    ballast = [bytearray(1 << 18) for _ in range(8)]  # other mappings made in between
    d2 = s.map(pm.Part(pm.Source.anonymous(size)))
    assert (d2.address, d2.size) == (d1.address, 2 * size)
    del ballast


def test_one_real_platform_per_process(real: RealBackend) -> None:
    assert RealBackend() is real is pm.load_backend("real")()
    res = pm.Reservation(2 * PAGE, backend="real")
    s = pm.Set(pm.Config(granularity=G.BYTE, backend="real", reservation=res))
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    assert d.address == res.address
    s.close()
    res.close()
