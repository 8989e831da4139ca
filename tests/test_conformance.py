"""PMDK's own libpmemset tests, ported to pmemsim: the conformance suite.

Each test here re-states one test case of PMDK's ``src/test/pmemset_*`` (the last sources
before libpmemset was removed) in pmemsim's API, and runs on the simulator and on libpmem2.
The test's name says which case it ports (``part_map_full_coalesce_before`` is
``pmemset_part``'s ``test_part_map_full_coalesce_before``); the assertions are the C test's
assertions. Where pmemsim cannot express a case (fault injection of malloc, Windows modes,
device DAX, SIGSEGV on an unmapped address) the case is left out or, for the last, turned
into the typed error pmemsim gives instead, as said in its docstring.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from differential import BACKENDS, Rig, backend_or_skip, fails, rig_on

import pmemsim as pm
from pmemsim import ErrorCode as E

G = pm.Granularity
SF = pm.SourceFlag
KIB = 1024
MIB = 1 << 20
PART = 64 * KIB  # the C tests' part_size
SIZE_MAX = (1 << 64) - 1


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> pm.Backend:
    return backend_or_skip(request.param)


@pytest.fixture
def rig(backend: pm.Backend, tmp_path: Path) -> Iterator[Rig]:
    yield from rig_on(backend, tmp_path)


def pool(rig: Rig, size: int = 16 * MIB) -> pm.Source:
    """The C tests' file: a holey 16 MiB file."""
    return rig.file("testfile1", size=size)


def descs(s: pm.Set) -> list[tuple[int, int]]:
    return [(d.address, d.size) for d in s.part_maps()]


def handles(s: pm.Set) -> list[pm.PartMap]:
    out = []
    pmap = s.first_part_map()
    while pmap is not None:
        out.append(pmap)
        pmap = s.next_part_map(pmap)
    return out


# -- pmemset_part -------------------------------------------------------------------------


def test_part_map_valid_source_file(rig: Rig) -> None:
    s = rig.set()
    d = s.map(pm.Part(pool(rig), 0, PART))
    assert d.size == PART
    s.memset(d.address, 1, d.size)
    assert s.read(d.address, d.size) == b"\x01" * PART


def test_part_map_gran_read(rig: Rig) -> None:
    s = rig.set()
    with fails(pm.LookupFailure, E.NO_PART_MAPPED):
        s.granularity  # noqa: B018
    s.map(pm.Part(pool(rig), 0, PART))
    assert s.granularity == G.PAGE or rig.name == "sim"  # this platform's files: PAGE


def test_unmap_part(rig: Rig) -> None:
    """The C test catches SIGSEGV on the removed range; pmemsim refuses the address."""
    s = rig.set()
    d = s.map(pm.Part(pool(rig)))
    s.memset(d.address, 1, d.size)
    s.persist(d.address, d.size)
    with s.first_part_map() as pmap:  # type: ignore[union-attr]
        s.remove_part_map(pmap)
    with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
        s.memset(d.address, 1, d.size)


def test_part_map_first_descriptor_next_drop(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    s.map(pm.Part(src, 0, PART))
    s.map(pm.Part(src, 0, 2 * PART))
    first = s.first_part_map()
    assert first is not None and first.descriptor.size in (PART, 2 * PART)
    second = s.next_part_map(first)
    assert second is not None
    assert first.address < second.address and first.size != second.size
    assert s.next_part_map(second) is None
    first.drop()
    assert not first.valid


def test_part_map_by_addr(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    s.map(pm.Part(src, 0, PART))
    s.map(pm.Part(src, 0, 2 * PART))
    first, second = handles(s)
    by_first = s.part_map_by_address(first.address)
    by_second = s.part_map_by_address(second.address)
    assert by_first == first and by_second == second
    assert by_first.address != by_second.address
    with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
        s.part_map_by_address(0x999)


def test_part_map_unaligned_size(rig: Rig) -> None:
    s = rig.set()
    with fails(pm.InvalidArgumentError, E.LENGTH_UNALIGNED):
        s.map(pm.Part(pool(rig, 16 * MIB - 1)))
    assert descs(s) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_part_map_full_coalesce(rig: Rig, when: str) -> None:
    s = rig.set()
    src = pool(rig)
    if when == "before":
        s.coalescing = pm.Coalescing.FULL
    s.map(pm.Part(src, 0, PART))
    before = descs(s)[0]
    s.coalescing = pm.Coalescing.FULL
    s.map(pm.Part(src, 0, PART))
    (after,) = descs(s)  # one part map
    assert after[0] == before[0] and after[1] > before[1]


@pytest.mark.parametrize("when", ["before", "after"])
def test_part_map_opp_coalesce(rig: Rig, when: str) -> None:
    s = rig.set()
    src = pool(rig)
    if when == "before":
        s.coalescing = pm.Coalescing.OPPORTUNISTIC
    s.map(pm.Part(src, 0, PART))
    s.coalescing = pm.Coalescing.OPPORTUNISTIC
    s.map(pm.Part(src, 0, PART))
    maps = descs(s)
    if len(maps) == 1:
        assert maps[0][1] == 2 * PART
    else:  # not coalesced: two part maps of one part each
        assert [size for _, size in maps] == [PART, PART]


def test_remove_part_map(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    s.map(pm.Part(src, 0, PART))
    s.map(pm.Part(src, 0, 2 * PART))
    first, second = handles(s)
    kept = second.descriptor
    second.drop()
    s.remove_part_map(first)
    assert not first.valid
    with s.first_part_map() as left:  # type: ignore[union-attr]
        assert left.descriptor == kept
        s.remove_part_map(left)
    assert s.first_part_map() is None


def test_full_coalescing_before_remove_part_map(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    s.coalescing = pm.Coalescing.FULL
    s.map(pm.Part(src, 0, PART))
    s.map(pm.Part(src, 0, 2 * PART))
    (pmap,) = handles(s)
    s.remove_part_map(pmap)
    assert s.first_part_map() is None


@pytest.mark.parametrize("removed", ["first", "second"])
def test_full_coalescing_after_remove_part_map(rig: Rig, removed: str) -> None:
    """With the second part map (the previous one) removed, the first takes over: the new
    part coalesces with it (issue 12 item 9). With the first removed, the second stays the
    previous one."""
    s = rig.set()
    src = pool(rig)
    s.map(pm.Part(src, 0, PART))
    s.map(pm.Part(src, 0, PART))
    first, second = handles(s)
    gone, kept = (first, second) if removed == "first" else (second, first)
    at = kept.address
    kept.drop()
    s.remove_part_map(gone)
    (left,) = handles(s)
    assert left.address == at
    left.drop()
    s.coalescing = pm.Coalescing.FULL
    s.map(pm.Part(src, 0, PART))
    (pmap,) = handles(s)
    assert (pmap.address, pmap.size) == (at, 2 * PART)
    s.remove_part_map(pmap)
    assert s.first_part_map() is None


def test_remove_multiple_part_maps(rig: Rig) -> None:
    """The C test's removal order: walk to the middle part map, dropping the handles on
    the way, and remove it; again until none is left."""
    s = rig.set()
    src = pool(rig)
    n = 20  # the C test maps 100
    for _ in range(n):
        s.map(pm.Part(src, 0, PART))
    while n:
        pmap = s.first_part_map()
        assert pmap is not None
        for _ in range(n // 2):
            nxt = s.next_part_map(pmap)
            assert nxt is not None
            pmap.drop()
            pmap = nxt
        s.remove_part_map(pmap)
        n -= 1
    assert s.first_part_map() is None


def test_part_map_valid_source_temp(rig: Rig) -> None:
    s = rig.set()
    src = rig.temporary()
    assert s.map(pm.Part(src, 0, 2 * PART)).size == 2 * PART
    for _ in range(3):
        assert s.map(pm.Part(src, 0, PART)).size == PART
    for pmap in handles(s):
        s.remove_part_map(pmap)
    assert s.first_part_map() is None


def test_part_map_invalid_source_temp(rig: Rig) -> None:
    s = rig.set()
    with fails(pm.SourceError, E.CANNOT_GROW_SOURCE_FILE):
        s.map(pm.Part(rig.temporary(), 0, SIZE_MAX))


def test_part_map_source_do_not_grow(rig: Rig) -> None:
    path = rig.path("testfile1")
    s = rig.set()
    src = rig.keep(pm.Source.from_file(path, SF.CREATE_IF_NEEDED | SF.DO_NOT_GROW))
    assert path.stat().st_size == 0
    with fails(pm.SourceError, E.SOURCE_FILE_IS_TOO_SMALL):
        s.map(pm.Part(src, 0, PART))
    src = rig.keep(pm.Source.from_file(path, SF.CREATE_IF_NEEDED))
    assert s.map(pm.Part(src, 0, PART)).size == PART
    assert path.stat().st_size == PART
    assert s.map(pm.Part(src, 0, 2 * PART)).size == 2 * PART
    assert path.stat().st_size == 2 * PART
    src = rig.keep(pm.Source.from_file(path, SF.CREATE_IF_NEEDED | SF.DO_NOT_GROW))
    with fails(pm.SourceError, E.SOURCE_FILE_IS_TOO_SMALL):
        s.map(pm.Part(src, 0, 4 * PART))
    assert path.stat().st_size == 2 * PART


@pytest.mark.parametrize("flags", [SF.CREATE_IF_NEEDED | SF.DO_NOT_GROW, SF.CREATE_IF_NEEDED])
def test_part_map_source_len_unset(rig: Rig, flags: pm.SourceFlag) -> None:
    s = rig.set()
    src = rig.keep(pm.Source.from_file(rig.path("testfile1"), flags))
    with fails(pm.SourceError, E.MAP_LENGTH_UNSET):
        s.map(pm.Part(src))


def test_remove_two_ranges(rig: Rig) -> None:
    """One byte of each of two part maps (and the gap between them): both go."""
    s = rig.set()
    src = pool(rig)
    for _ in range(2):
        s.map(pm.Part(src, 0, PART))
    (a, a_size), (b, _) = descs(s)
    s.remove_range(a + a_size - 1, b - (a + a_size) + 2)
    assert s.first_part_map() is None


def test_remove_coalesced_two_ranges(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    for i in range(4):
        s.coalescing = pm.Coalescing.FULL if i in (1, 3) else pm.Coalescing.NONE
        s.map(pm.Part(src, 0, PART))
    (a, a_size), (b, _) = descs(s)
    assert a_size == 2 * PART
    s.remove_range(a + a_size - 1, b - (a + a_size) + 2)
    assert descs(s) == [(a, PART), (b + PART, PART)]


def test_remove_coalesced_middle_range(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    s.coalescing = pm.Coalescing.FULL
    for _ in range(3):
        s.map(pm.Part(src, 0, PART))
    ((a, _),) = descs(s)
    s.remove_range(a + PART, 1)
    assert descs(s) == [(a, PART), (a + 2 * PART, PART)]
    with fails(pm.LookupFailure, E.CANNOT_FIND_PART_MAP):
        s.read(a + PART, 1)


def test_async_map_remove_multiple_part_maps(rig: Rig) -> None:
    """``test_pmemset_async_map_remove_multiple_part_maps``: threads mapping, looking up
    and removing part maps of one set at once."""
    s = rig.set()
    src = pool(rig)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                d = s.map(pm.Part(src, 0, PART))
                s.remove_part_map(s.part_map_by_address(d.address))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert s.first_part_map() is None


def test_divide_coalesced_remove_obtained_pmaps(rig: Rig) -> None:
    s = rig.set()
    src = pool(rig)
    s.coalescing = pm.Coalescing.FULL
    for _ in range(5):
        s.map(pm.Part(src, 0, PART))
    ((a, _),) = descs(s)
    s.remove_range(a + PART, PART)
    s.remove_range(a + 3 * PART, PART)
    assert descs(s) == [(a, PART), (a + 2 * PART, PART), (a + 4 * PART, PART)]
    for _ in range(3):
        pmap = s.first_part_map()
        assert pmap is not None
        s.remove_part_map(pmap)
    assert s.first_part_map() is None


def test_part_map_with_set_reservation(rig: Rig) -> None:
    res = rig.reservation(3 * PART)
    s = rig.set(reservation=res)
    src = pool(rig)
    for _ in range(3):
        s.map(pm.Part(src, 0, PART))
    pmaps = handles(s)
    assert len({p.address for p in pmaps}) == 3
    for p in pmaps:
        s.remove_part_map(p)
    assert res.size == 3 * PART
    assert s.first_part_map() is None


def test_part_map_coalesce_with_set_reservation(rig: Rig) -> None:
    res = rig.reservation(3 * PART)
    s = rig.set(reservation=res)
    src = pool(rig)
    s.coalescing = pm.Coalescing.FULL
    for _ in range(3):
        s.map(pm.Part(src, 0, PART))
    assert descs(s) == [(res.address, 3 * PART)]
    s.remove_range(res.address, PART)
    s.remove_range(res.address + 2 * PART, PART)
    s.map(pm.Part(src, 0, PART))  # the previous part map grows into the freed end
    assert res.size == 3 * PART
    assert descs(s) == [(res.address + PART, 2 * PART)]


def test_part_map_with_set_reservation_too_small(rig: Rig) -> None:
    res = rig.reservation(PART)
    s = rig.set(reservation=res)
    with fails(pm.MapError, E.CANNOT_FIT_PART_MAP):
        s.map(pm.Part(pool(rig), 0, 2 * PART))
    assert res.size == PART
    assert s.first_part_map() is None


def test_part_map_with_set_reservation_cannot_fit(rig: Rig) -> None:
    part = 2 * PART
    res = rig.reservation(3 * part)
    s = rig.set(reservation=res)
    src = pool(rig)
    for _ in range(6):
        s.map(pm.Part(src, 0, part // 2))
    pmaps = handles(s)
    for p in pmaps[1::2]:
        s.remove_part_map(p)
    with fails(pm.MapError, E.CANNOT_FIT_PART_MAP):
        s.map(pm.Part(src, 0, part))  # three holes of half the size, none large enough
    assert res.size == 3 * part


# -- pmemset_config, pmemset_new, pmemset_map_config --------------------------------------


def test_set_invalid_granularity(backend: pm.Backend) -> None:
    with fails(pm.MapError, E.GRANULARITY_NOT_SUPPORTED):
        pm.Set(pm.Config(granularity=99, backend=backend))  # type: ignore[arg-type]


def test_granularity_not_set(backend: pm.Backend) -> None:
    with fails(pm.InvalidArgumentError, E.GRANULARITY_NOT_SET):
        pm.Set(pm.Config(backend=backend))


def test_map_config_invalid_offset(rig: Rig) -> None:
    with fails(pm.InvalidArgumentError, E.INVALID_OFFSET_VALUE):
        pm.Part(pool(rig), (1 << 63), PART)


# -- pmemset_event ------------------------------------------------------------------------


def _recording_set(rig: Rig) -> tuple[pm.Set, list[Any]]:
    seen: list[Any] = []
    s = pm.Set(
        pm.Config(
            granularity=G.PAGE, backend=rig.backend, event_callback=lambda s, e, a: seen.append(e)
        )
    )
    rig._sets.append(s)
    return s, seen


def test_pmemset_persist_event(rig: Rig) -> None:
    s, seen = _recording_set(rig)
    d = s.map(pm.Part(pool(rig), 0, PART))
    seen.clear()
    s.flush(d.address, d.size)
    assert [(e.type, e.addr, e.len) for e in seen] == [(pm.EventType.FLUSH, d.address, d.size)]
    seen.clear()
    s.drain()
    assert [e.type for e in seen] == [pm.EventType.DRAIN]
    seen.clear()
    s.persist(d.address + 100, d.size - 100)
    assert [e.type for e in seen] == [pm.EventType.FLUSH, pm.EventType.DRAIN]
    assert (seen[0].addr, seen[0].len) == (d.address + 100, d.size - 100)


def test_pmemset_copy_event(rig: Rig) -> None:
    """COPY, MOVE and SET fire before the operation (its destination still differs), never
    FLUSH; DRAIN follows unless NODRAIN."""
    data = 10000
    s = pm.Set(pm.Config(granularity=G.PAGE, backend=rig.backend))
    rig._sets.append(s)
    kinds: list[str] = []

    def before(s: pm.Set, handle: Any, event: Any, arg: Any) -> None:
        kinds.append(event.type.name)
        if event.type in (pm.EventType.COPY, pm.EventType.MOVE):
            assert s.read(event.dest, event.len) != s.read(event.src, event.len)
        elif event.type == pm.EventType.SET:
            assert s.read(event.dest, event.len) != bytes([event.value]) * event.len

    d = s.map(pm.Part(pool(rig), 0, 4 * PART))
    a = d.address
    s.track(pm.EventType.all(), before)
    for flags in (0, pm.MemFlag.NODRAIN):
        value = 0xBB if not flags else 0xFF
        s.memset(a, value, data, flags)
        s.memcpy(a + data, a, data, flags)
        s.memmove(a + 2 * data, a + data, data, flags)
    assert "FLUSH" not in kinds
    assert kinds == ["SET", "DRAIN", "COPY", "DRAIN", "MOVE", "DRAIN", "SET", "COPY", "MOVE"]


def test_pmemset_part_add_and_remove_events(rig: Rig) -> None:
    s, seen = _recording_set(rig)
    src = pool(rig)
    for count in (1, 2):
        d = s.map(pm.Part(src, 0, PART))
        adds = [e for e in seen if e.type == pm.EventType.PART_ADD]
        assert len(adds) == count and (adds[-1].addr, adds[-1].len) == (d.address, d.size)
    seen.clear()
    first = s.first_part_map()
    assert first is not None
    where = first.descriptor
    s.remove_part_map(first)
    assert [(e.type, e.addr, e.len) for e in seen] == [
        (pm.EventType.PART_REMOVE, where.address, where.size)
    ]


def test_pmemset_remove_range_event(rig: Rig) -> None:
    s, seen = _recording_set(rig)
    d = s.map(pm.Part(pool(rig), 0, PART))
    seen.clear()
    s.remove_range(d.address, d.size)
    assert [(e.type, e.addr, e.len) for e in seen] == [
        (pm.EventType.REMOVE_RANGE, d.address, d.size),
        (pm.EventType.PART_REMOVE, d.address, d.size),
    ]


# -- pmemset_persist, pmemset_deep_flush -------------------------------------------------


@pytest.mark.parametrize("parts", [1, 3])
def test_persist_and_deep_flush_parts(rig: Rig, parts: int) -> None:
    """``test_persist_single_part`` / ``multiple_parts`` and ``test_deep_flush_single`` /
    ``multiple``: what was persisted is in the file after the set and source close."""
    s = rig.set()
    src = rig.file("testfile1", flags=SF.CREATE_ALWAYS)
    ds = [s.map(pm.Part(src, i * PART, PART)) for i in range(parts)]
    for i, d in enumerate(ds):
        s.memset(d.address, 0x41 + i, PART, pm.MemFlag.NOFLUSH)
        if i % 2:
            s.deep_flush(d.address, PART)
        else:
            s.persist(d.address, PART)
    s.close()
    src.close()
    content = rig.path("testfile1").read_bytes()
    assert content == b"".join(bytes([0x41 + i]) * PART for i in range(parts))


def test_deep_flush_multiple_coal(rig: Rig) -> None:
    s = rig.set()
    src = rig.file("testfile1", flags=SF.CREATE_ALWAYS)
    s.coalescing = pm.Coalescing.FULL
    for i in range(3):
        s.map(pm.Part(src, i * PART, PART))
    ((a, size),) = descs(s)
    s.memset(a, 0x5A, size, pm.MemFlag.NOFLUSH)
    s.deep_flush(a, size)
    s.close()
    src.close()
    assert rig.path("testfile1").read_bytes() == b"\x5a" * size


# -- pmemset_source -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exists", "flags", "error"),
    [
        (True, SF.CREATE_ALWAYS, None),
        (False, SF.CREATE_ALWAYS, None),
        (True, SF.CREATE_IF_NEEDED, None),
        (False, SF.CREATE_IF_NEEDED, None),
        (False, SF.NONE, E.INVALID_SOURCE_PATH),
        (True, SF.CREATE_ALWAYS | SF.CREATE_IF_NEEDED, E.INVALID_SOURCE_FILE_CREATE_FLAGS),
        (True, 1 << 10, E.INVALID_SOURCE_FILE_CREATE_FLAGS),
    ],
)
def test_src_from_file_disposition(rig: Rig, exists: bool, flags: int, error: E | None) -> None:
    path = rig.path("src")
    if exists:
        path.write_bytes(b"old")
    if error is not None:
        with pytest.raises(pm.PmemError) as info:
            pm.Source.from_file(path, flags)
        assert info.value.code == error
        return
    with pm.Source.from_file(path, flags):
        pass
    assert path.exists()
    expected = b"" if flags & SF.CREATE_ALWAYS else (b"old" if exists else b"")
    assert path.read_bytes() == expected


@pytest.mark.parametrize("mode", [0o400, 0o700, 0o640])
def test_src_from_file_with_mode(rig: Rig, mode: int) -> None:
    path = rig.path("src")
    with pm.Source.from_file(path, SF.CREATE_IF_NEEDED, mode=mode):
        pass
    assert path.stat().st_mode & 0o777 == mode & ~_umask()


def test_src_from_file_with_inval_mode(rig: Rig) -> None:
    with fails(pm.InvalidArgumentError, E.INVALID_SOURCE_FILE_CREATE_FLAGS):
        pm.Source.from_file(rig.path("src"), SF.CREATE_IF_NEEDED, mode=0o7777)


def test_src_from_temporary(rig: Rig) -> None:
    before = sorted(os.listdir(rig.dirs["ext4"]))
    with pm.Source.temporary(rig.dirs["ext4"]) as src:
        s = rig.set()
        s.map(pm.Part(src, 0, PART))
        s.close()
    assert sorted(os.listdir(rig.dirs["ext4"])) == before
    with fails(pm.SourceError, E.INVALID_SOURCE_PATH):
        pm.Source.temporary(rig.path("XYZ"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
