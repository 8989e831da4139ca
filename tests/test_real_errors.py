"""libpmem2's failures as the layer's exceptions, and the reliability calls' "not supported".

Each case of the table in shared/reference/libpmem2.md is provoked for real: the backend's
Pmem2Failure keeps libpmem2's code and message, and through the set the user sees the
layer's class and PMEMSET code with libpmem2's code and message attached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pmemsim_backends.real import RealBackend
from pmemsim_backends.real.errors import DIRECT, direct_error

import pmemsim as pm
from pmemsim.backend import Pmem2Failure

pytest_plugins = ["real_support"]

PAGE = 4096
G = pm.Granularity
C = pm.Pmem2Code
E = pm.ErrorCode
MakeSet = Callable[..., pm.Set]


def _file(tmp_path: Path, size: int = 2 * PAGE, name: str = "pool") -> pm.Source:
    src = pm.Source.from_file(tmp_path / name, pm.SourceFlag.CREATE_ALWAYS)
    if size:
        src.grow(size)
    return src


def _raw_source(path: Path, flags: int) -> pm.Source:
    """A Source over a descriptor opened as given (Source.from_file always opens O_RDWR)."""
    return pm.Source("file", label=str(path), fd=os.open(path, flags), path=str(path))


def _backend_map(real: RealBackend, src: pm.Source, offset: int, length: int) -> None:
    bsrc = real.open_source(src)
    res = real.reserve(max(length, PAGE))
    try:
        real.map(bsrc, offset, length, G.PAGE, res, 0).unmap()
    finally:
        res.delete()
        bsrc.close()


# -- map failures at the backend: libpmem2's own code and message ---------------------------


@pytest.mark.parametrize(
    ("size", "offset", "length", "code"),
    [
        (0, 0, PAGE, C.SOURCE_EMPTY),
        (2 * PAGE, 100, PAGE, C.OFFSET_UNALIGNED),
        (2 * PAGE, 0, 3 * PAGE, C.MAP_RANGE),
    ],
)
def test_map_failures_keep_libpmem2_code_and_message(
    real: RealBackend, tmp_path: Path, size: int, offset: int, length: int, code: C
) -> None:
    with pytest.raises(Pmem2Failure) as info:
        _backend_map(real, _file(tmp_path, size), offset, length)
    assert info.value.code == code
    assert info.value.message and "libpmem2 gave no message" not in info.value.message


def test_read_only_descriptor_cannot_be_mapped_for_writing(
    make_real_set: MakeSet, tmp_path: Path
) -> None:
    _file(tmp_path).close()
    s = make_real_set()
    with pytest.raises(pm.MapError) as info:
        s.map(pm.Part(_raw_source(tmp_path / "pool", os.O_RDONLY), 0, PAGE))
    err = info.value
    assert (err.code, err.pmem2_code) == (E.INVALID_PMEM2_MAP, C.NO_ACCESS)
    assert err.pmem2_message


@pytest.mark.parametrize(
    ("what", "code", "expected"),
    [
        ("directory", C.INVALID_FILE_TYPE, (pm.InvalidArgumentError, E.INVALID_SOURCE_TYPE)),
        ("write-only", C.INVALID_FILE_HANDLE, (pm.SourceError, E.INVALID_PMEM2_SOURCE)),
    ],
)
def test_sources_libpmem2_refuses(
    make_real_set: MakeSet,
    tmp_path: Path,
    what: str,
    code: C,
    expected: tuple[type[pm.PmemError], E],
) -> None:
    if what == "directory":
        src = _raw_source(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        _file(tmp_path).close()
        src = _raw_source(tmp_path / "pool", os.O_WRONLY)
    s = make_real_set()
    with pytest.raises(expected[0]) as info:
        s.map(pm.Part(src, 0, PAGE))
    assert (info.value.code, info.value.pmem2_code) == (expected[1], code)
    assert info.value.pmem2_message


def test_offset_unaligned_through_the_set_is_a_map_error(
    make_real_set: MakeSet, tmp_path: Path
) -> None:
    s = make_real_set()
    with pytest.raises(pm.MapError) as info:
        s.map(pm.Part(_file(tmp_path), 100, PAGE))
    assert (info.value.code, info.value.pmem2_code) == (E.INVALID_PMEM2_MAP, C.OFFSET_UNALIGNED)
    assert list(s.part_maps()) == []


def test_deep_flush_outside_the_map(real: RealBackend, tmp_path: Path) -> None:
    src = _file(tmp_path)
    bsrc = real.open_source(src)
    res = real.reserve(2 * PAGE)
    m = real.map(bsrc, 0, PAGE, G.PAGE, res, 0)
    try:
        with pytest.raises(Pmem2Failure) as info:
            m.deep_flush(m.address + PAGE, PAGE, None)  # type: ignore[arg-type]
        assert info.value.code == C.DEEP_FLUSH_RANGE
    finally:
        m.unmap()
        res.delete()
        bsrc.close()


def test_direct_table_picks_the_layer_class() -> None:
    for pmem2_code, code in DIRECT.items():
        err = direct_error(Pmem2Failure(pmem2_code, "msg"), "what")
        assert err.code == code and err.pmem2_code == pmem2_code
        assert err.pmem2_message == "msg" and "what: msg" in str(err)
        assert type(err) is type(pm.errors.error_for(code, ""))
    assert direct_error(Pmem2Failure(-99, "x"), "y").code == E.UNKNOWN


def test_a_stale_message_is_not_reported(make_real_set: MakeSet, tmp_path: Path) -> None:
    # libpmem2 sets no message for device id on a plain file; the last failure's message
    # (here a granularity one) must not show up as its cause.
    src = _file(tmp_path)
    s = make_real_set(G.BYTE)
    with pytest.raises(pm.MapError):
        s.map(pm.Part(src, 0, PAGE))
    src.set_sds()
    s2 = make_real_set(G.PAGE)
    with pytest.raises(pm.NotSupportedError) as info:
        s2.map(pm.Part(src, 0, PAGE))
    assert info.value.code == E.SDS_NOSUPP
    assert info.value.pmem2_code == C.NOSUPP
    assert "DAX" not in str(info.value)


# -- reliability on machines without persistent memory ---------------------------------------


def test_sds_is_not_supported_on_plain_files_and_anonymous_memory(
    make_real_set: MakeSet, tmp_path: Path, real: RealBackend
) -> None:
    src = _file(tmp_path)
    try:
        real.open_source(src).device_id()
    except Pmem2Failure:
        pass
    else:
        pytest.skip(f"{tmp_path} is on a device with an id (DAX): SDS is supported here")
    for source in (src, pm.Source.anonymous(PAGE)):
        source.set_sds()
        s = make_real_set(G.PAGE)
        with pytest.raises(pm.NotSupportedError) as info:
            s.map(pm.Part(source, 0, PAGE))
        assert (info.value.code, info.value.pmem2_code) == (E.SDS_NOSUPP, C.NOSUPP)
        assert list(s.part_maps()) == []


def test_usc_failure_ignores_the_value_libpmem2_writes(real: RealBackend, tmp_path: Path) -> None:
    bsrc = real.open_source(_file(tmp_path))
    try:
        with pytest.raises(Pmem2Failure) as info:
            bsrc.usc()
        assert info.value.code == C.NOSUPP
    finally:
        bsrc.close()


def test_bad_blocks_on_a_plain_file_are_none(make_real_set: MakeSet, tmp_path: Path) -> None:
    src = _file(tmp_path)
    src.badblock_detection = True
    events: list[pm.Event] = []
    s = make_real_set(event_callback=lambda _s, ev, _a: events.append(ev))
    s.map(pm.Part(src, 0, PAGE))
    assert [type(e).__name__ for e in events] == ["PartAddEvent"]
    with pytest.raises(pm.NotSupportedError) as info:
        src.clear_badblock(pm.BadBlock(0, 512))  # not a bad block: nothing is punched
    assert (info.value.code, info.value.pmem2_code) == (E.BADBLOCK_NOSUPP, C.NO_BAD_BLOCK_FOUND)


def test_bad_blocks_of_anonymous_memory_are_not_supported(make_real_set: MakeSet) -> None:
    src = pm.Source.anonymous(PAGE)
    src.badblock_detection = True
    s = make_real_set(G.BYTE)
    with pytest.raises(pm.NotSupportedError) as info:
        s.map(pm.Part(src))
    assert (info.value.code, info.value.pmem2_code) == (E.BADBLOCK_NOSUPP, C.NOSUPP)
    assert info.value.pmem2_message and "nonymous" in info.value.pmem2_message


def test_mcsafe_io_on_files_and_anonymous_memory(real: RealBackend, tmp_path: Path) -> None:
    bsrc = real.open_source(_file(tmp_path))
    anon = real.open_source(pm.Source.anonymous(PAGE))
    try:
        bsrc.pwrite_mcsafe(100, b"mcsafe")
        assert bsrc.pread_mcsafe(98, 10) == b"\0\0mcsafe\0\0"
        with pytest.raises(pm.RangeError):
            bsrc.pread_mcsafe(2 * PAGE - 4, 8)
        with pytest.raises(Pmem2Failure) as info:
            anon.pread_mcsafe(0, 8)
        assert info.value.code == C.SOURCE_TYPE_NOT_SUPPORTED
    finally:
        bsrc.close()
        anon.close()
    assert (tmp_path / "pool").read_bytes()[100:106] == b"mcsafe"
