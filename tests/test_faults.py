"""Fault injection on the simulator: poisoned reads, machine-check-safe reads, seeded random
bad blocks, unsafe shutdowns, shutdown data state across a crash, and crash images with bad
blocks (docs/faults.md)."""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import u64
from hypothesis import given, settings
from hypothesis import strategies as st
from pmemsim_backends.sim import CrashMode, SimBackend

import pmemsim as pm
from pmemsim.backend import BackendMap, Pmem2Failure
from pmemsim.enums import PartState

PAGE = 4096
CL = pm.Granularity.CACHE_LINE
INTERRUPTED_OK = PartState.OK | PartState.OK_BUT_INTERRUPTED
UNSAFE = "unsafe_shutdown"


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    p = tmp_path / "pool"
    p.write_bytes(b"\xab" * (2 * PAGE))
    return p


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for t in reversed(things):
        t.close()


def _set(sim: SimBackend, opened: list[Any], events: list[Any] | None = None, **kw: Any) -> pm.Set:
    def cb(s: pm.Set, e: pm.Event, arg: object) -> int:
        if events is not None:
            events.append(e)
        return 0

    s = pm.Set(
        pm.Config(granularity=kw.pop("granularity", CL), backend=sim, event_callback=cb, **kw)
    )
    opened.append(s)
    return s


def _file_view(
    sim: SimBackend, path: Path, opened: list[Any], size: int = 2 * PAGE
) -> tuple[pm.Set, pm.Source, pm.View]:
    src = pm.Source.from_file(path)
    opened.append(src)
    s = _set(sim, opened)
    return s, src, s.view(s.map(pm.Part(src, 0, size)))


def _anon_view(sim: SimBackend, opened: list[Any], size: int = 4 * PAGE, **kw: Any) -> pm.View:
    s = _set(sim, opened, **kw)
    return s.view(s.map(pm.Part(pm.Source.anonymous(size))))


def _recover(snap: pm.Snapshot, opened: list[Any], sim: SimBackend | None = None) -> pm.View:
    """Map a crash image in a fresh set on a fresh simulator, as recovery code would."""
    src = pm.Source.from_image(snap)
    opened.append(src)
    s = _set(sim or SimBackend(), opened)
    return s.view(s.map(pm.Part(src)))


# -- poisoned reads ----------------------------------------------------------------------

#: Every way a program can load from the set; each reads byte 520 (in a bad block at 512).
READ_PATHS: dict[str, Callable[[pm.Set, pm.View], object]] = {
    "Set.read": lambda s, v: s.read(v.address + 516, 8),
    "View.read": lambda s, v: v.read(520, 1),
    "View[int]": lambda s, v: v[520],
    "View[slice]": lambda s, v: v[500:600],
    "u8": lambda s, v: v.u8[520],
    "u16": lambda s, v: v.u16[260],
    "u32": lambda s, v: v.u32[130],
    "u64": lambda s, v: v.u64[65],
    "i32": lambda s, v: v.i32[130],
    "i64": lambda s, v: v.i64[65],
    "unpack_from": lambda s, v: v.unpack_from("<QQ", 512),
    "Set.memcpy from an address": lambda s, v: s.memcpy(v.address + 4096, v.address + 512, 64),
    "Set.memmove from an address": lambda s, v: s.memmove(v.address + 4096, v.address + 480, 64),
    "View.memmove": lambda s, v: v.memmove(4096, 520, 8),
}


@pytest.mark.parametrize("path", list(READ_PATHS))
def test_every_read_path_raises_a_poison_error_with_the_address(
    sim: SimBackend, pool: Path, opened: list[Any], path: str
) -> None:
    events: list[Any] = []
    src = pm.Source.from_file(pool)
    opened.append(src)
    s = _set(sim, opened, events)
    v = s.view(s.map(pm.Part(src, 0, 2 * PAGE)))
    sim.inject_badblock(src, 512, 512)
    before = v.read(4096, 128)
    events.clear()
    with pytest.raises(pm.PoisonError) as ei:
        READ_PATHS[path](s, v)
    err = ei.value
    assert isinstance(err, pm.MediaError)
    assert err.code == pm.ErrorCode.IO_FAIL
    assert err.badblock == pm.BadBlock(512, 512)
    assert err.source == src.label
    # The faulting byte: the first one of the load inside the bad block.
    assert err.offset is not None and err.address is not None
    assert 512 <= err.offset < 1024
    assert err.address == v.address + err.offset
    assert f"0x{err.address:x}" in str(err)
    # A faulting copy wrote nothing and fired nothing.
    assert v.read(4096, 128) == before
    assert events == []


def test_faulting_address_is_the_first_poisoned_byte_of_the_load(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    _s, src, v = _file_view(sim, pool, opened)
    sim.inject_badblock(src, 1000, 24)
    with pytest.raises(pm.PoisonError) as ei:
        v.read(900, 200)
    assert (ei.value.offset, ei.value.address) == (1000, v.address + 1000)
    with pytest.raises(pm.PoisonError) as ei:
        v.read(1010, 4)  # starts inside the block
    assert ei.value.offset == 1010
    # Bytes on either side of the block read normally.
    assert v.read(900, 100) == b"\xab" * 100
    assert v.read(1024, 100) == b"\xab" * 100


def test_a_read_spanning_two_parts_faults_in_the_second(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    src = pm.Source.from_file(pool)
    opened.append(src)
    s = _set(sim, opened)
    s.coalescing = pm.Coalescing.FULL
    s.map(pm.Part(src, 0, PAGE))
    d = s.map(pm.Part(src, PAGE, PAGE))  # one part map, two parts
    sim.inject_badblock(src, PAGE + 8, 8)
    with pytest.raises(pm.PoisonError) as ei:
        s.read(d.address + PAGE - 16, 32)
    assert ei.value.address == d.address + PAGE + 8
    assert ei.value.offset == PAGE + 8


def test_a_bad_block_injected_while_mapped_faults_at_once_and_clearing_ends_it(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    _s, src, v = _file_view(sim, pool, opened)
    assert v.read(512, 8) == b"\xab" * 8
    bb = sim.inject_badblock(src, 512, 512)
    with pytest.raises(pm.PoisonError):
        v.read(512, 8)
    src.clear_badblock(bb)
    assert v.read(512, 512) == bytes(512)  # the content is lost
    assert sim.badblocks(src) == []


def test_stores_to_a_poisoned_range_succeed_but_the_range_stays_poisoned(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    _s, src, v = _file_view(sim, pool, opened)
    bb = sim.inject_badblock(src, 512, 512)
    v.u64[64] = 7  # a store does not trap...
    v.persist(512, 8)
    v.memcpy(600, b"x" * 300)
    with pytest.raises(pm.PoisonError):  # ...and the line stays poisoned
        v.u64[64]
    src.clear_badblock(bb)
    assert v.u64[64] == 0  # clearing loses what was stored, durable or not
    assert v.read(600, 300) == bytes(300)


def test_anonymous_memory_takes_no_bad_blocks(sim: SimBackend) -> None:
    with pytest.raises(pm.InvalidArgumentError):
        sim.inject_badblock(pm.Source.anonymous(PAGE), 0, 512)


def test_poison_error_survives_pickling(sim: SimBackend, pool: Path, opened: list[Any]) -> None:
    _s, src, v = _file_view(sim, pool, opened)
    sim.inject_badblock(src, 0, 64)
    with pytest.raises(pm.PoisonError) as ei:
        v.u64[0]
    back = pickle.loads(pickle.dumps(ei.value))
    assert type(back) is pm.PoisonError
    assert (back.code, back.address, back.offset, back.source, back.badblock, str(back)) == (
        ei.value.code,
        ei.value.address,
        ei.value.offset,
        ei.value.source,
        ei.value.badblock,
        str(ei.value),
    )


# -- bad blocks at map time ----------------------------------------------------------------


def test_clearing_only_some_bad_blocks_fails_the_map_and_keeps_the_others(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    src = pm.Source.from_file(pool)
    opened.append(src)
    src.badblock_detection = True
    sim.inject_badblock(src, 0, 512)
    sim.inject_badblock(src, PAGE, 512)

    def cb(s: pm.Set, e: pm.Event, arg: object) -> int:
        if isinstance(e, pm.BadBlockEvent) and e.badblock.offset == 0:
            e.source.clear_badblock(e.badblock)
        return 0

    s = pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb))
    opened.append(s)
    part = pm.Part(src, 0, 2 * PAGE)
    with pytest.raises(pm.MediaError) as ei:
        s.map(part)
    assert ei.value.code == pm.ErrorCode.IO_FAIL
    assert not part.consumed and s.first_part_map() is None
    assert sim.badblocks(src) == [pm.BadBlock(PAGE, 512)]
    # Mapped without detection, the cleared block reads as zeros and the other one faults.
    src.badblock_detection = False
    v = s.view(s.map(part))
    assert v.read(0, 512) == bytes(512)
    with pytest.raises(pm.PoisonError):
        v.read(PAGE, 1)


@pytest.mark.parametrize("ret", [0, 3])
def test_badblocks_cleared_return_value_decides_the_map_and_the_blocks_stay_cleared(
    sim: SimBackend, pool: Path, opened: list[Any], ret: int
) -> None:
    src = pm.Source.from_file(pool)
    opened.append(src)
    src.badblock_detection = True
    sim.inject_badblock(src, 512, 512)
    seen: list[str] = []

    def cb(s: pm.Set, e: pm.Event, arg: object) -> int:
        seen.append(type(e).__name__)
        if isinstance(e, pm.BadBlockEvent):
            e.source.clear_badblock(e.badblock)
            return 55  # ignored: only BADBLOCKS_CLEARED's return value counts
        return ret if isinstance(e, pm.BadBlocksClearedEvent) else 0

    s = pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb))
    opened.append(s)
    part = pm.Part(src, 0, 2 * PAGE)
    if ret:
        with pytest.raises(pm.CallbackError) as ei:
            s.map(part)
        assert ei.value.code == ret
        assert seen == ["BadBlockEvent", "BadBlocksClearedEvent"]
        assert not part.consumed and s.first_part_map() is None
    else:
        s.map(part)
        assert seen == ["BadBlockEvent", "BadBlocksClearedEvent", "PartAddEvent"]
    # Clearing happened either way: the block is gone and its content with it.
    assert sim.badblocks(src) == []
    src.badblock_detection = False
    with pm.Set(pm.Config(granularity=CL, backend=sim)) as s2:
        v = s2.view(s2.map(pm.Part(src, 0, 2 * PAGE)))
        assert v.read(512, 512) == bytes(512)
        assert v.read(0, 512) == b"\xab" * 512


# -- machine-check-safe reads ------------------------------------------------------------


def test_read_mcsafe_returns_the_data_or_the_error(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    s, src, v = _file_view(sim, pool, opened)
    v.u64[1] = 42
    good = s.read_mcsafe(v.address, 64)
    assert good.ok and good.error is None and good.data == v.read(0, 64)
    sim.inject_badblock(src, 1024, 512)
    data, err = s.read_mcsafe(v.address + 1000, 100)
    assert data is None and isinstance(err, pm.PoisonError)
    assert err.code == pm.ErrorCode.IO_FAIL
    assert (err.address, err.offset) == (v.address + 1024, 1024)
    view_read = v.read_mcsafe(1500, 100)
    assert not view_read.ok and view_read.data is None
    assert isinstance(view_read.error, pm.PoisonError) and view_read.error.offset == 1500
    assert v.read_mcsafe(0, 16).data == v.read(0, 16)


def test_read_mcsafe_still_raises_for_misuse(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    s, _src, v = _file_view(sim, pool, opened)
    with pytest.raises(pm.LookupFailure):
        s.read_mcsafe(1, 8)
    with pytest.raises(pm.RangeError):
        s.read_mcsafe(v.address + 2 * PAGE - 4, 8)
    with pytest.raises(pm.InvalidArgumentError):
        s.read_mcsafe(v.address, -1)
    assert s.read_mcsafe(v.address, 0) == (b"", None)


def test_read_mcsafe_on_anonymous_memory_is_not_supported(
    sim: SimBackend, opened: list[Any]
) -> None:
    v = _anon_view(sim, opened)
    with pytest.raises(pm.NotSupportedError) as ei:
        v.read_mcsafe(0, 8)
    assert ei.value.code == pm.ErrorCode.NOSUPP
    assert ei.value.pmem2_code == pm.Pmem2Code.SOURCE_TYPE_NOT_SUPPORTED


def test_read_mcsafe_turns_a_backend_io_failure_into_an_error_value(
    sim: SimBackend, pool: Path, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a backend that knows only libpmem2's return code (the real one) reports.
    s, src, v = _file_view(sim, pool, opened)
    bmap = s._parts[0].map

    def failing(addr: int, length: int) -> bytes:
        raise Pmem2Failure(pm.Pmem2Code.IO_FAIL, "pread_mcsafe failed")

    monkeypatch.setattr(bmap, "read_mcsafe", failing)
    data, err = s.read_mcsafe(v.address + 64, 8)
    assert data is None and isinstance(err, pm.PoisonError)
    assert err.pmem2_code == pm.Pmem2Code.IO_FAIL and err.address is None
    assert err.source == src.label


def test_backend_contract_default_read_mcsafe_is_not_supported() -> None:
    with pytest.raises(Pmem2Failure) as ei:
        BackendMap.read_mcsafe(None, 0, 8)  # type: ignore[arg-type]
    assert ei.value.code == pm.Pmem2Code.NOSUPP


# -- seeded random bad blocks -----------------------------------------------------------


def _random_run(path: Path, seed: int | None, opened: list[Any]) -> tuple[int, list[Any], bytes]:
    """Inject, map, read every sector, clear everything: what a replay must reproduce."""
    sim = SimBackend()
    _s, src, v = _file_view(sim, path, opened)
    inj = sim.inject_random_badblocks(src, 3, seed=seed)
    faults = []
    for off in range(0, 2 * PAGE, 512):
        r = v.read_mcsafe(off, 512)
        faults.append(None if r.ok else r.error.offset)  # type: ignore[union-attr]
    for bb in inj.blocks:
        src.clear_badblock(bb)
    return inj.seed, faults, v.read(0, 2 * PAGE)


def test_random_bad_blocks_replay_byte_for_byte_from_the_seed(
    tmp_path: Path, opened: list[Any]
) -> None:
    runs = []
    for i in range(2):
        p = tmp_path / f"pool{i}"
        p.write_bytes(bytes(range(256)) * 32)
        runs.append(_random_run(p, 1234, opened))
    assert runs[0] == runs[1]
    seed, faults, content = runs[0]
    assert seed == 1234
    assert sum(f is not None for f in faults) == 3
    assert content.count(bytes(512)) == 3


def test_random_bad_blocks_are_distinct_aligned_sectors_in_range(
    sim: SimBackend, pool: Path
) -> None:
    seen = set()
    for seed in range(20):
        other = SimBackend()
        inj = other.inject_random_badblocks(pool, 4, seed=seed, start=1000, end=7000)
        offsets = [bb.offset for bb in inj.blocks]
        assert offsets == sorted(set(offsets))
        assert all(bb.length == 512 and bb.offset % 512 == 0 for bb in inj.blocks)
        assert all(bb.offset >= 1000 and bb.offset + 512 <= 7000 for bb in inj.blocks)
        assert other.badblocks(pool) == list(inj.blocks)
        seen.add(tuple(offsets))
    assert len(seen) > 1  # the seed matters
    inj = sim.inject_random_badblocks(pool, 2, seed=5, length=4096)
    assert {bb.offset for bb in inj.blocks} == {0, 4096}  # all there is


def test_random_bad_blocks_without_a_seed_print_the_one_drawn(
    sim: SimBackend, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inj = sim.inject_random_badblocks(pool, 2)
    printed = re.search(r"seed=(\d+)", capsys.readouterr().err)
    assert printed is not None and int(printed.group(1)) == inj.seed
    replay = SimBackend().inject_random_badblocks(pool, 2, seed=inj.seed)
    assert replay.blocks == inj.blocks


@pytest.mark.parametrize(
    "kw",
    [
        {"count": 17},  # 16 sectors in the pool
        {"count": -1},
        {"count": 1, "length": 0},
        {"count": 1, "seed": "x"},
        {"count": 1, "end": 3 * PAGE},
        {"count": 1, "start": 600, "end": 1000},  # no whole sector inside
    ],
)
def test_random_bad_blocks_refuse_bad_arguments(
    sim: SimBackend, pool: Path, kw: dict[str, Any]
) -> None:
    with pytest.raises(pm.InvalidArgumentError):
        sim.inject_random_badblocks(pool, **kw)
    assert sim.badblocks(pool) == []


# -- unsafe shutdown ----------------------------------------------------------------------


def _contents(sim: SimBackend, mode: str, offset: int, length: int) -> list[bytes]:
    return [img.read(offset, length) for img in sim.crash_state(mode).images()]


def test_fenced_but_not_deep_flushed_data_is_lost_in_some_unsafe_image(
    sim: SimBackend, opened: list[Any]
) -> None:
    v = _anon_view(sim, opened)
    v.u64[0] = 1
    v.persist(0, 8)  # fenced: guaranteed against power failure only
    assert _contents(sim, "power_failure", 0, 8) == [u64(1)]
    st = sim.crash_state(UNSAFE)
    assert st.mode is CrashMode.UNSAFE_SHUTDOWN and st.unsafe_shutdown
    assert [img.read(0, 8) for img in st.images()] == [u64(1), u64(0)]
    assert st.guaranteed_image().read(0, 8) == u64(0)
    assert st.persisted_image().read(0, 8) == u64(1)
    lost = list(st.images())[1]
    assert lost.reverted() == [0] and lost.lost() == []


def test_deep_flushed_data_is_in_every_unsafe_image(sim: SimBackend, opened: list[Any]) -> None:
    v = _anon_view(sim, opened)
    v.u64[0] = 1
    v.u64[8] = 2  # the next line
    v.persist(0, 128)
    v.deep_flush(0, 8)  # only the first line
    v.u64[16] = 3  # pending, never flushed
    st = sim.crash_state(UNSAFE)
    imgs = list(st.images())
    assert len(imgs) == st.image_count() == 4  # line 1: kept/reverted; line 2: kept/lost
    assert {img.read(0, 8) for img in imgs} == {u64(1)}
    assert {img.read(64, 8) for img in imgs} == {u64(2), u64(0)}
    assert {img.read(128, 8) for img in imgs} == {u64(3), u64(0)}
    assert [ls.status for ls in st.lines()] == ["fenced", "dirty"]
    assert [ls.reverts for ls in st.lines()] == [True, False]


def test_a_reverted_line_loses_its_pending_stores_too(sim: SimBackend, opened: list[Any]) -> None:
    v = _anon_view(sim, opened)
    v.u64[0] = 1
    v.persist(0, 8)
    v.u64[1] = 2  # same line, pending
    pf = _contents(sim, "power_failure", 0, 16)
    assert pf == [u64(1) + u64(2), u64(1) + u64(0)]
    st = sim.crash_state(UNSAFE)
    assert [img.read(0, 16) for img in st.images()] == [*pf, bytes(16)]
    reverted = list(st.images())[-1]
    assert reverted.reverted() == [0]
    assert [a.data for _, a in reverted.lost()] == [u64(2)]


def test_unsafe_images_are_a_superset_with_the_same_persisted_image(
    sim: SimBackend, opened: list[Any]
) -> None:
    v = _anon_view(sim, opened)
    for i in range(4):
        v.u64[8 * i] = i + 1
        if i % 2:
            v.persist(64 * i, 8)
    v.memcpy(512, b"n" * 64, pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN)
    pf = sim.crash_state()
    us = sim.crash_state(UNSAFE)
    pf_imgs = [img.read(0, PAGE) for img in pf.images()]
    us_imgs = [img.read(0, PAGE) for img in us.images()]
    assert set(pf_imgs) < set(us_imgs)
    assert len(set(us_imgs)) == len(us_imgs) == us.image_count() == pf.image_count() * 4
    assert us_imgs[0] == pf_imgs[0] == v.read(0, PAGE)
    # Power-failure images never revert and carry the count unchanged.
    assert all(img.reverted() == [] for img in pf.images())


def test_fenced_nontemporal_stores_revert_too(sim: SimBackend, opened: list[Any]) -> None:
    v = _anon_view(sim, opened)
    v.memcpy(0, b"n" * 256)  # non-temporal, drained
    assert _contents(sim, "power_failure", 0, 256) == [b"n" * 256]
    unsafe = _contents(sim, UNSAFE, 0, 256)
    assert len(unsafe) == 16 and set(unsafe) == set(_line_mixes(b"n" * 64, 4))


def _line_mixes(line: bytes, n: int) -> list[bytes]:
    """Every combination of n lines, each ``line`` or zeros."""
    out = [b""]
    for _ in range(n):
        out = [o + x for o in out for x in (line, bytes(64))]
    return out


def test_byte_granularity_may_lose_visible_stores_in_an_unsafe_shutdown(
    opened: list[Any],
) -> None:
    sim = SimBackend(pm.Granularity.BYTE)
    v = _anon_view(sim, opened, granularity=pm.Granularity.BYTE)
    v.u64[0] = 1  # durable against power failure once visible (eADR)...
    v.u64[8] = 2
    v.deep_flush(64, 8)
    assert _contents(sim, "power_failure", 0, 72) == [u64(1) + bytes(56) + u64(2)]
    # ...but not against an unsafe shutdown unless deep-flushed.
    assert _contents(sim, UNSAFE, 0, 72) == [u64(1) + bytes(56) + u64(2), bytes(64) + u64(2)]


def test_page_granularity_msync_is_deep(tmp_path: Path, opened: list[Any]) -> None:
    sim = SimBackend(pm.Granularity.PAGE)
    p = tmp_path / "pool"
    p.write_bytes(bytes(2 * PAGE))
    src = pm.Source.from_file(p)
    opened.append(src)
    s = _set(sim, opened, granularity=pm.Granularity.PAGE)
    v = s.view(s.map(pm.Part(src, 0, 2 * PAGE)))
    v.u64[0] = 1
    v.persist(0, 8)  # msync
    v.u64[600] = 2  # pending
    pf = sim.crash_state()
    us = sim.crash_state(UNSAFE)
    assert [i.read(0, 2 * PAGE) for i in us.images()] == [i.read(0, 2 * PAGE) for i in pf.images()]
    dev = sim.device_of(src)
    assert us.usc == {dev.id: dev.usc + 1} and pf.usc == {dev.id: dev.usc}


def test_remove_part_map_deep_flushes_so_nothing_reverts(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    s, _src, v = _file_view(sim, pool, opened)
    v.u64[0] = 1
    v.persist(0, 8)
    v.u64[600] = 2
    v.persist(4800, 8)
    assert sim.crash_state(UNSAFE).image_count() == 4
    pm_handle = s.first_part_map()
    assert pm_handle is not None
    del v
    s.remove_part_map(pm_handle)
    st = sim.crash_state(UNSAFE)
    assert st.image_count() == 1 and st.lines() == []


def test_an_unsafe_crash_state_is_frozen(sim: SimBackend, opened: list[Any]) -> None:
    v = _anon_view(sim, opened)
    v.u64[0] = 1
    v.u64[8] = 2
    v.persist(0, 128)
    st = sim.crash_state(UNSAFE)
    before = [img.read(0, 128) for img in st.images()]
    # Later deep flushes, stores and persists of the same page do not change it.
    v.deep_flush(0, 8)
    v.u64[8] = 5
    v.persist(64, 8)
    v.deep_flush(0, PAGE)
    assert [img.read(0, 128) for img in st.images()] == before
    assert sim.crash_state(UNSAFE).image_count() == 1


def test_a_partial_deep_flush_never_changes_an_earlier_image(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    _s, _src, v = _file_view(sim, pool, opened)
    v.u64[0] = 1
    v.persist(0, 8)
    v.deep_flush(0, PAGE)
    st = sim.crash_state()  # shares the media page with the simulator
    v.u64[8] = 2
    v.persist(64, 8)  # the page's deep content is now the shared page
    v.deep_flush(64, 8)  # a partial deep flush must copy it, not patch it
    assert [img.read(0, 72) for img in st.images()] == [u64(1) + b"\xab" * 64]
    assert [img.read(64, 8) for img in sim.crash_state(UNSAFE).images()] == [u64(2)]


def test_deep_content_costs_no_copy_for_untouched_zero_pages(
    sim: SimBackend, opened: list[Any]
) -> None:
    v = _anon_view(sim, opened, size=256 * PAGE)
    for i in range(0, 256, 8):
        v.u64[i * PAGE // 8] = i + 1
        v.persist(i * PAGE, 8)
    (medium,) = sim.media
    assert medium.deep is not None and len(medium.deep) == 32
    # Every kept page is the one shared zero page: memory grows with pages, not copies.
    assert len({id(page) for page in medium.deep.values()}) == 1
    assert sim.crash_state(UNSAFE).image_count() == 2**32
    v.deep_flush(0, 256 * PAGE)
    assert medium.deep == {}


def test_crash_mode_must_be_known(sim: SimBackend) -> None:
    with pytest.raises(pm.InvalidArgumentError):
        sim.crash_state("brownout")


# -- shutdown data state across a crash ---------------------------------------------------


def _in_use_crash(
    sim: SimBackend, pool: Path, opened: list[Any], mode: str
) -> tuple[pm.SdsRecord, pm.Snapshot, pm.Source]:
    """Map the pool with SDS, keep the record the application saved, write, crash."""
    saved: list[pm.SdsRecord] = []

    def cb(s: pm.Set, e: pm.Event, arg: object) -> None:
        if isinstance(e, pm.SdsUpdateEvent):
            saved.append(e.sds)

    src = pm.Source.from_file(pool)
    opened.append(src)
    src.set_sds()
    s = pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb))
    opened.append(s)
    v = s.view(s.map(pm.Part(src, 0, 2 * PAGE)))
    v.u64[0] = 99
    v.persist(0, 8)
    image = sim.crash_state(mode).persisted_image()
    return saved[-1], image.snapshot(src), src


def test_crash_while_in_use_then_the_image_is_interrupted(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    saved, snap, _ = _in_use_crash(sim, pool, opened, "power_failure")
    dev = sim.device_of(pool)
    assert saved == pm.SdsRecord(dev.id, dev.usc, 1)
    assert (snap.device_id, snap.usc, snap.unsafe_shutdown) == (dev.id, dev.usc, False)
    src = pm.Source.from_image(snap)
    opened.append(src)
    src.set_sds(saved)
    s = _set(SimBackend(), opened)  # recovery on a fresh machine
    with pytest.raises(pm.PartStateError):  # not acceptable by default
        s.map(pm.Part(src))
    assert src.part_state == PartState.OK_BUT_INTERRUPTED
    s2 = _set(SimBackend(), opened, acceptable_states=INTERRUPTED_OK)
    v = s2.view(s2.map(pm.Part(src)))
    assert src.part_state == PartState.OK_BUT_INTERRUPTED
    assert v.u64[0] == 99


def test_unsafe_shutdown_while_in_use_then_the_image_is_corrupted(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    saved, snap, _ = _in_use_crash(sim, pool, opened, UNSAFE)
    dev = sim.device_of(pool)
    assert (snap.device_id, snap.usc, snap.unsafe_shutdown) == (dev.id, dev.usc + 1, True)
    assert dev.usc == saved.usc  # taking the crash state changed no device
    src = pm.Source.from_image(snap)
    opened.append(src)
    src.set_sds(saved)
    s = _set(SimBackend(), opened, acceptable_states=INTERRUPTED_OK)
    with pytest.raises(pm.PartStateError) as ei:
        s.map(pm.Part(src))
    assert ei.value.code == pm.ErrorCode.UNDESIRABLE_PART_STATE
    assert src.part_state == PartState.CORRUPTED
    assert src.sds == saved and s.first_part_map() is None
    s2 = _set(SimBackend(), opened, acceptable_states=PartState.CORRUPTED)
    s2.map(pm.Part(src))
    assert src.part_state == PartState.CORRUPTED


def test_unsafe_shutdown_after_a_clean_unmap_refreshes_the_count(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    saved: list[pm.SdsRecord] = []

    def cb(s: pm.Set, e: pm.Event, arg: object) -> None:
        if isinstance(e, pm.SdsUpdateEvent):
            saved.append(e.sds)

    src = pm.Source.from_file(pool)
    opened.append(src)
    src.set_sds()
    s = pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb))
    opened.append(s)
    s.map(pm.Part(src, 0, 2 * PAGE))
    pmap = s.first_part_map()
    assert pmap is not None
    s.remove_part_map(pmap)
    assert saved[-1].refcount == 0
    snap = sim.crash_state(UNSAFE).persisted_image().snapshot(src)
    img = pm.Source.from_image(snap)
    opened.append(img)
    img.set_sds(saved[-1])
    s2 = _set(SimBackend(), opened)
    s2.map(pm.Part(img))
    assert img.part_state == PartState.OK
    assert img.sds == pm.SdsRecord(saved[-1].device_id, saved[-1].usc + 1, 1)


def test_crash_while_in_use_then_the_file_is_interrupted(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    saved, _, _src = _in_use_crash(sim, pool, opened, "power_failure")
    for t in opened:  # the process dies: nothing is unmapped cleanly
        t.close()
    src2 = pm.Source.from_file(pool)
    opened.append(src2)
    src2.set_sds(saved)
    s = _set(sim, opened, acceptable_states=INTERRUPTED_OK)
    s.map(pm.Part(src2, 0, 2 * PAGE))
    assert src2.part_state == PartState.OK_BUT_INTERRUPTED


def test_unsafe_image_materialised_into_the_file_is_corrupted(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    saved: list[pm.SdsRecord] = []

    def cb(s: pm.Set, e: pm.Event, arg: object) -> None:
        if isinstance(e, pm.SdsUpdateEvent):
            saved.append(e.sds)

    src = pm.Source.from_file(pool)
    src.set_sds()
    s = pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb))
    v = s.view(s.map(pm.Part(src, 0, 2 * PAGE)))
    v.u64[0] = 1
    v.persist(0, 8)  # fenced, never deep-flushed
    v.u64[600] = 2  # never flushed
    st = sim.crash_state(UNSAFE)
    worst = st.guaranteed_image()
    with pytest.raises(pm.InvalidArgumentError):  # the simulator still holds the file
        sim.materialise(worst, pool)
    dev = sim.device_of(pool)
    usc = dev.usc
    del v
    s.close()
    src.close()
    sim.materialise(worst, pool)
    sim.materialise(st.persisted_image(), pool)  # the same crash: counted once
    sim.materialise(worst, pool)
    assert dev.usc == usc + 1
    assert pool.read_bytes() == worst.read(0, 2 * PAGE) == b"\xab" * (2 * PAGE)
    src2 = pm.Source.from_file(pool)
    opened.append(src2)
    src2.set_sds(saved[-1])
    s2 = _set(sim, opened, acceptable_states=INTERRUPTED_OK)
    with pytest.raises(pm.PartStateError):
        s2.map(pm.Part(src2, 0, 2 * PAGE))
    assert src2.part_state == PartState.CORRUPTED


def test_power_failure_image_materialised_counts_nothing(
    sim: SimBackend, tmp_path: Path, opened: list[Any]
) -> None:
    v = _anon_view(sim, opened)
    v.u64[3] = 7
    v.persist(24, 8)
    out = tmp_path / "restored"
    sim.materialise(sim.crash_state().persisted_image(), out)
    assert out.read_bytes() == v.read(0, 4 * PAGE)
    assert sim.default_device.usc == 0


def test_an_image_of_anonymous_memory_has_no_device(sim: SimBackend, opened: list[Any]) -> None:
    v = _anon_view(sim, opened)
    v.u64[0] = 1
    snap = sim.crash_state(UNSAFE).persisted_image().snapshot()
    assert snap.device_id is None and snap.usc is None
    src = pm.Source.from_image(snap)
    opened.append(src)
    src.set_sds()
    s = _set(sim, opened)
    with pytest.raises(pm.NotSupportedError) as ei:
        s.map(pm.Part(src))
    assert ei.value.code == pm.ErrorCode.SDS_NOSUPP
    with pytest.raises(pm.InvalidArgumentError):
        sim.device_of(src)


# -- crash images and bad blocks ----------------------------------------------------------


def test_a_bad_block_on_the_image_source_faults_in_recovery(
    sim: SimBackend, opened: list[Any]
) -> None:
    v = _anon_view(sim, opened)
    v.u64[0] = 1
    v.u64[8] = 2
    v.persist(0, 128)
    state = sim.crash_state()
    image = state.persisted_image()
    src = pm.Source.from_image(image.snapshot())
    opened.append(src)
    recovery_sim = SimBackend()
    bb = recovery_sim.inject_badblock(src, 64, 64)  # the line recovery is about to read
    s = _set(recovery_sim, opened)
    rv = s.view(s.map(pm.Part(src)))
    assert rv.u64[0] == 1
    with pytest.raises(pm.PoisonError) as ei:
        rv.u64[8]
    assert (ei.value.address, ei.value.offset) == (rv.address + 64, 64)
    assert not rv.read_mcsafe(64, 8).ok
    # Only that source: the same image mapped again reads fine.
    assert _recover(image.snapshot(), opened).u64[8] == 2
    src.clear_badblock(bb)
    assert rv.u64[8] == 0


def test_bad_blocks_of_the_file_survive_into_its_crash_images(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    _s, src, v = _file_view(sim, pool, opened)
    v.u64[0] = 5
    v.persist(0, 8)
    sim.inject_badblock(src, PAGE, 512)
    st = sim.crash_state(UNSAFE)
    for image in st.images():
        snap = image.snapshot(src)
        assert snap.badblocks == (pm.BadBlock(PAGE, 512),)
        rv = _recover(snap, opened)
        assert rv.u64[0] in (5, int.from_bytes(b"\xab" * 8, "little"))
        with pytest.raises(pm.PoisonError):
            rv.u64[PAGE // 8]
    # With detection on, recovery's map fails unless the callback clears the block.
    snap = st.persisted_image().snapshot(src)
    img_src = pm.Source.from_image(snap)
    opened.append(img_src)
    img_src.badblock_detection = True
    with pytest.raises(pm.MediaError) as ei:
        _set(SimBackend(), opened).map(pm.Part(img_src))
    assert ei.value.code == pm.ErrorCode.IO_FAIL

    def clear(s: pm.Set, e: pm.Event, arg: object) -> int:
        if isinstance(e, pm.BadBlockEvent):
            e.source.clear_badblock(e.badblock)
        return 0

    s2 = pm.Set(pm.Config(granularity=CL, backend=SimBackend(), event_callback=clear))
    opened.append(s2)
    rv = s2.view(s2.map(pm.Part(img_src)))
    assert rv.read(PAGE, 512) == bytes(512) and rv.u64[0] == 5
    assert sim.badblocks(src) == [pm.BadBlock(PAGE, 512)]  # the file keeps its block


# -- the unsafe-shutdown model, checked against a line-by-line oracle ---------------------

LINES = (0, 1, 63, 64, 65)  # line indexes: three in page 0 (one its last), two in page 1
Op = tuple[str, int, int]
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["store", "store", "persist", "deep", "nt", "fence"]),
        st.sampled_from(LINES),
        st.integers(1, 3),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(ops_strategy)
def test_unsafe_images_are_every_line_power_failure_or_deep_flushed(ops: list[Op]) -> None:
    """Per line, an unsafe shutdown leaves what a power failure may leave or the line as its
    last deep flush left it; lines are independent; nothing else."""
    sim = SimBackend()
    with pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
        v = s.view(s.map(pm.Part(pm.Source.anonymous(2 * PAGE))))
        visible = bytearray(2 * PAGE)
        deep = {line: bytes(64) for line in LINES}  # what the last deep flush left
        for kind, line, value in ops:
            off = line * 64 + 8 * value
            if kind == "store":
                v.u64[off // 8] = value
                visible[off : off + 8] = u64(value)
            elif kind == "nt":
                v.memcpy(off, u64(value + 10), pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN)
                visible[off : off + 8] = u64(value + 10)
            elif kind == "persist":
                v.persist(line * 64, 64)
            elif kind == "fence":
                v.drain()
            else:
                v.deep_flush(line * 64, 64)
                deep[line] = bytes(visible[line * 64 : line * 64 + 64])
        assert v.read(0, 2 * PAGE) == visible

        def per_line(images: list[bytes]) -> dict[int, set[bytes]]:
            return {ln: {img[ln * 64 : ln * 64 + 64] for img in images} for ln in LINES}

        pf = [img.read(0, 2 * PAGE) for img in sim.crash_state().images()]
        us_state = sim.crash_state(UNSAFE)
        us = [img.read(0, 2 * PAGE) for img in us_state.images()]
        assert len(set(us)) == len(us) == us_state.image_count()
        expected = {ln: opts | {deep[ln]} for ln, opts in per_line(pf).items()}
        assert per_line(us) == expected
        assert len(us) == math.prod(len(o) for o in expected.values())
        guaranteed = us_state.guaranteed_image().read(0, 2 * PAGE)
        assert all(guaranteed[ln * 64 : ln * 64 + 64] == deep[ln] for ln in LINES)
