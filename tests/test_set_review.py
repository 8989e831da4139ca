"""Review of the set layer: bookkeeping stays consistent when a callback raises, and
remove_range's overlap rule for an empty range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim import sds
from pmemsim.errors import ErrorCode

PAGE = 4096
E = pm.EventType


class Boom(Exception):
    pass


def _set(sim: SimBackend, cb: Any = None) -> pm.Set:
    return pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim, event_callback=cb))


def test_part_add_raising_still_counts_the_sds_user(sim: SimBackend, tmp_path: Path) -> None:
    def cb(s: pm.Set, ev: Any, arg: Any) -> None:
        if ev.type == E.PART_ADD:
            raise Boom

    src = pm.Source.from_file(tmp_path / "f", pm.SourceFlag.CREATE_ALWAYS)
    src.set_sds(None)
    with _set(sim, cb) as s:
        with pytest.raises(Boom):
            s.map(pm.Part(src, 0, PAGE))
        assert len(list(s.part_maps())) == 1  # PART_ADD is fired after mapping
        rec = src.sds
        assert rec is not None and rec.refcount == 1 and rec.device_id != b""
        with s.first_part_map() as pmap:
            s.remove_part_map(pmap)
        assert src.sds is not None and src.sds.refcount == 0
    src.close()


def test_remove_range_callback_raising_leaves_no_stale_index(sim: SimBackend) -> None:
    seen: list[Any] = []

    def cb(s: pm.Set, ev: Any, arg: Any) -> None:
        if ev.type == E.PART_REMOVE:
            seen.append(ev)
            if len(seen) == 2:
                raise Boom

    with _set(sim, cb) as s:
        a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        b = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        first = a if a.address < b.address else b
        lo, hi = min(a.address, b.address), max(a.end, b.end)
        v = s.view(first)
        v.u64[0] = 1  # caches the backend store of the first part map
        with pytest.raises(Boom):
            s.remove_range(lo, hi - lo)
        assert len(list(s.part_maps())) == 1  # the first went, the second stayed
        with pytest.raises(pm.PmemError) as exc:
            s.read(first.address, 8)
        assert exc.value.code == ErrorCode.CANNOT_FIND_PART_MAP
        with pytest.raises(pm.PmemError) as exc:
            v.u64[0] = 2
        assert exc.value.code == ErrorCode.CANNOT_FIND_PART_MAP


def test_sds_update_raising_in_remove_part_map_finishes_the_unmap(
    sim: SimBackend, tmp_path: Path
) -> None:
    def cb(s: pm.Set, ev: Any, arg: Any) -> None:
        if ev.type == E.SDS_UPDATE and ev.state is None:  # unmap, not map
            raise Boom

    src = pm.Source.from_file(tmp_path / "f", pm.SourceFlag.CREATE_ALWAYS)
    src.set_sds(None)
    with _set(sim, cb) as s:
        s.coalescing = pm.Coalescing.FULL
        d = s.map(pm.Part(src, 0, PAGE))
        d = s.map(pm.Part(src, PAGE, PAGE))
        v = s.view(d)
        v.u64[0] = 1
        pmap = s.first_part_map()
        assert pmap is not None
        with pytest.raises(Boom):
            s.remove_part_map(pmap)
        assert list(s.part_maps()) == []
        assert src.sds is not None and src.sds.refcount == 0
        assert sds._in_use[src.identity] == 0
        with pytest.raises(pm.PmemError):
            v.u64[0] = 2
        with pytest.raises(pm.PmemError):
            s.read(d.address, 1)
    src.close()


@pytest.mark.parametrize("offset", [0, 1, PAGE - 1])
def test_remove_range_of_length_zero_removes_nothing(sim: SimBackend, offset: int) -> None:
    events: list[Any] = []
    with _set(sim, lambda s, ev, arg: events.append(ev)) as s:
        d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        events.clear()
        s.remove_range(d.address + offset, 0)
        assert list(s.part_maps()) == [d]
        assert [ev.type for ev in events] == [E.REMOVE_RANGE]
