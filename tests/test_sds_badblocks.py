"""Shutdown data state and bad-block detection at map time (pmemset.md), on the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim.enums import PartState

CL = pm.Granularity.CACHE_LINE


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    p = tmp_path / "pool"
    p.write_bytes(b"\xab" * 8192)
    return p


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for t in reversed(things):
        t.close()


def _set(sim: SimBackend, events: list[pm.Event] | None = None, **kw: Any) -> pm.Set:
    def cb(s: pm.Set, e: pm.Event, arg: object) -> None:
        if events is not None:
            events.append(e)

    return pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb, **kw))


def _source(path: Path, record: pm.SdsRecord | None, opened: list[Any]) -> pm.Source:
    src = pm.Source.from_file(path)
    src.set_sds(record)
    opened.append(src)
    return src


# -- shutdown data state ---------------------------------------------------------------


def test_new_pool_is_initialised_and_mapped_twice_is_already_open(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    events: list[pm.Event] = []
    s = _set(sim, events)
    opened.append(s)
    src = _source(pool, None, opened)
    s.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.OK
    dev = sim.device_of(src)
    assert src.sds == pm.SdsRecord(dev.id, dev.usc, 1)
    s.map(pm.Part(src, 4096, 4096))
    assert src.part_state == PartState.OK_BUT_ALREADY_OPEN
    assert src.sds is not None and src.sds.refcount == 2
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["PartAddEvent", "SdsUpdateEvent"] * 2
    updates = [e for e in events if isinstance(e, pm.SdsUpdateEvent)]
    assert [u.state for u in updates] == [PartState.OK, PartState.OK_BUT_ALREADY_OPEN]


def test_unmap_decrements_and_fires_sds_update(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    events: list[pm.Event] = []
    s = _set(sim, events)
    opened.append(s)
    src = _source(pool, None, opened)
    s.map(pm.Part(src, 0, 4096))
    pmap = s.first_part_map()
    assert pmap is not None
    events.clear()
    s.remove_part_map(pmap)
    assert [type(e).__name__ for e in events] == ["PartRemoveEvent", "SdsUpdateEvent"]
    assert src.sds is not None and src.sds.refcount == 0


def test_crash_without_unmapping_is_interrupted(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    dev = sim.device_of(pool)
    # The last run saved a record with a user and never unmapped: it crashed.
    saved = pm.SdsRecord(dev.id, dev.usc, 1)
    s = _set(sim)
    opened.append(s)
    src = _source(pool, saved, opened)
    with pytest.raises(pm.PartStateError):  # not acceptable by default
        s.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.OK_BUT_INTERRUPTED
    ok = PartState.OK | PartState.OK_BUT_INTERRUPTED
    s2 = _set(sim, acceptable_states=ok)
    opened.append(s2)
    s2.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.OK_BUT_INTERRUPTED
    assert src.sds == pm.SdsRecord(dev.id, dev.usc, 2)


def test_usc_changed_while_in_use_is_corrupted_and_refused(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    dev = sim.device_of(pool)
    saved = pm.SdsRecord(dev.id, dev.usc, 1)
    dev.usc += 1  # an unsafe shutdown while the pool was open
    s = _set(sim)
    opened.append(s)
    src = _source(pool, saved, opened)
    with pytest.raises(pm.PartStateError) as ei:
        s.map(pm.Part(src, 0, 4096))
    assert ei.value.code == pm.ErrorCode.UNDESIRABLE_PART_STATE
    assert src.part_state == PartState.CORRUPTED
    assert src.sds == saved  # nothing changed
    assert s.first_part_map() is None


def test_usc_changed_while_not_in_use_refreshes_the_count(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    dev = sim.device_of(pool)
    saved = pm.SdsRecord(dev.id, dev.usc, 0)
    dev.usc += 3
    s = _set(sim)
    opened.append(s)
    src = _source(pool, saved, opened)
    s.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.OK
    assert src.sds == pm.SdsRecord(dev.id, dev.usc, 1)


def test_other_device_in_use_is_indeterminate(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    saved = pm.SdsRecord(b"some other device", 7, 1)
    s = _set(sim)
    opened.append(s)
    src = _source(pool, saved, opened)
    with pytest.raises(pm.PartStateError):
        s.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.INDETERMINATE


def test_other_device_not_in_use_reinitialises(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    dev = sim.device(b"dev-b")
    dev.usc = 42
    sim.assign_device(pool, b"dev-b")
    saved = pm.SdsRecord(b"old device", 7, 0)
    s = _set(sim)
    opened.append(s)
    src = _source(pool, saved, opened)
    s.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.OK
    assert src.sds == pm.SdsRecord(b"dev-b", 42, 1)


def test_acceptable_states_widened_let_the_map_through(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    dev = sim.device_of(pool)
    saved = pm.SdsRecord(dev.id, dev.usc, 1)
    dev.usc += 1
    s = _set(sim, acceptable_states=PartState.OK | PartState.CORRUPTED)
    opened.append(s)
    src = _source(pool, saved, opened)
    s.map(pm.Part(src, 0, 4096))
    assert src.part_state == PartState.CORRUPTED


def test_sds_on_anonymous_memory_is_not_supported(sim: SimBackend) -> None:
    src = pm.Source.anonymous(4096)
    src.set_sds()
    with _set(sim) as s, pytest.raises(pm.NotSupportedError) as ei:
        s.map(pm.Part(src))
    assert ei.value.code == pm.ErrorCode.SDS_NOSUPP
    assert ei.value.pmem2_code == pm.Pmem2Code.NOSUPP


def test_set_sds_validation(pool: Path, opened: list[Any]) -> None:
    src = pm.Source.from_file(pool)
    opened.append(src)
    with pytest.raises(pm.InvalidArgumentError) as ei:
        src.set_sds(pm.SdsRecord(b"x" * 513, 0, 0))
    assert ei.value.code == pm.ErrorCode.SDS_DEVICE_ID_LEN_TOO_BIG
    with pytest.raises(pm.InvalidArgumentError):
        src.set_sds(pm.SdsRecord(b"x", -1, 0))
    src.set_sds()
    with pytest.raises(pm.SourceError) as e2:
        src.set_sds()
    assert e2.value.code == pm.ErrorCode.SDS_ALREADY_SET


def test_closing_the_set_releases_users_without_events(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    events: list[pm.Event] = []
    src = _source(pool, None, opened)
    s = _set(sim, events)
    s.map(pm.Part(src, 0, 4096))
    events.clear()
    s.close()
    assert events == []
    assert src.sds is not None and src.sds.refcount == 0
    with _set(sim) as s2:
        s2.map(pm.Part(src, 0, 4096))
        assert src.part_state == PartState.OK  # not "already open": nobody else uses it


# -- bad blocks ------------------------------------------------------------------------


def _bb_source(sim: SimBackend, pool: Path, opened: list[Any]) -> pm.Source:
    src = pm.Source.from_file(pool)
    opened.append(src)
    src.badblock_detection = True
    sim.inject_badblock(src, 512, 512)
    sim.inject_badblock(src, 4096, 1024)
    return src


def test_badblocks_cleared_by_the_callback(sim: SimBackend, pool: Path, opened: list[Any]) -> None:
    src = _bb_source(sim, pool, opened)
    seen: list[pm.Event] = []

    def cb(s: pm.Set, e: pm.Event, arg: object) -> int:
        seen.append(e)
        if isinstance(e, pm.BadBlockEvent):
            e.source.clear_badblock(e.badblock)
        return 0

    with pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb)) as s:
        d = s.map(pm.Part(src, 0, 8192))
        assert [type(e).__name__ for e in seen] == [
            "BadBlockEvent",
            "BadBlockEvent",
            "BadBlocksClearedEvent",
            "PartAddEvent",
        ]
        assert [e.badblock for e in seen[:2]] == [pm.BadBlock(512, 512), pm.BadBlock(4096, 1024)]
        v = s.view(d)
        # Cleared blocks read as zeros; their neighbours keep their content.
        assert v[512:1024] == bytes(512)
        assert v[4096:5120] == bytes(1024)
        assert v[0:512] == b"\xab" * 512 and v[1024:1536] == b"\xab" * 512
    assert sim.badblocks(src) == []


def test_badblocks_not_cleared_fail_the_map_with_io_fail(
    sim: SimBackend, pool: Path, opened: list[Any]
) -> None:
    src = _bb_source(sim, pool, opened)
    seen: list[pm.Event] = []
    with _set(sim, seen) as s:
        part = pm.Part(src, 0, 8192)
        with pytest.raises(pm.MediaError) as ei:
            s.map(part)
        assert ei.value.code == pm.ErrorCode.IO_FAIL
        assert not part.consumed and s.first_part_map() is None
        assert [type(e).__name__ for e in seen] == ["BadBlockEvent", "BadBlockEvent"]


@pytest.mark.parametrize("ret", [0, -5, 17])
def test_badblocks_cleared_return_value_is_honoured(
    sim: SimBackend, pool: Path, opened: list[Any], ret: int
) -> None:
    src = _bb_source(sim, pool, opened)

    def cb(s: pm.Set, e: pm.Event, arg: object) -> int:
        if isinstance(e, pm.BadBlockEvent):
            e.source.clear_badblock(e.badblock)
        return ret if isinstance(e, pm.BadBlocksClearedEvent) else 99

    with pm.Set(pm.Config(granularity=CL, backend=sim, event_callback=cb)) as s:
        if ret == 0:
            s.map(pm.Part(src, 0, 8192))
            assert s.first_part_map() is not None
        else:
            with pytest.raises(pm.CallbackError) as ei:
                s.map(pm.Part(src, 0, 8192))
            assert ei.value.code == ret
            assert s.first_part_map() is None


def test_detection_off_ignores_badblocks(sim: SimBackend, pool: Path, opened: list[Any]) -> None:
    src = _bb_source(sim, pool, opened)
    src.badblock_detection = False
    with _set(sim) as s:
        s.map(pm.Part(src, 0, 8192))


def test_badblock_detection_on_anonymous_memory_is_not_supported(sim: SimBackend) -> None:
    src = pm.Source.anonymous(4096)
    src.badblock_detection = True
    with _set(sim) as s, pytest.raises(pm.NotSupportedError) as ei:
        s.map(pm.Part(src))
    assert ei.value.code == pm.ErrorCode.BADBLOCK_NOSUPP


def test_badblock_detection_switch_takes_only_bools(pool: Path, opened: list[Any]) -> None:
    src = pm.Source.from_file(pool)
    opened.append(src)
    with pytest.raises(pm.InvalidArgumentError):
        src.badblock_detection = 1  # type: ignore[assignment]
