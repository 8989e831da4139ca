"""The sources pmemsim opens for itself are closed by their owner as it ends, whatever
ended it, not left to the collector: a source's handles refer back to it, so it waits for
a collection, which may come inside a later run (where a time limit's interruption once
landed in its close and left it open). The collector is off in these tests: what is not
closed explicitly shows."""

from __future__ import annotations

from typing import Any

import pytest

import pmemsim as pm
from pmemsim.explore import record
from pmemsim.explore.harness import PoolHarness
from pmemsim.set import Set
from pmemsim.snapshot import Snapshot


class Midway(Exception):
    pass


def _raises_midway(view: Any) -> None:
    view.u64[0] = 1
    view.persist(0, 8)
    raise Midway


def _two_stores(view: Any) -> None:
    view.u64[0] = 1
    view.persist(0, 8)
    view.u64[1] = 2
    view.persist(8, 8)


def test_a_recordings_source_is_closed_when_its_workload_raises(left_open: Any) -> None:
    with pytest.raises(Midway):
        record(_raises_midway)
    assert left_open() == []
    with pytest.raises(Midway):  # (a crash image as the pool: recovery crashed, recorded)
        record(_raises_midway, base=bytes(4096))
    assert left_open() == []


def test_a_recordings_source_is_closed_when_it_ends(left_open: Any) -> None:
    trace = record(_two_stores)
    assert len(trace.points) > 1
    assert left_open() == []


def test_a_harness_closes_its_source_when_building_it_raises_midway(
    left_open: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: Set, *args: Any, **kwargs: Any) -> Any:
        raise Midway

    harness = PoolHarness(pm.Granularity.CACHE_LINE, 4096)
    monkeypatch.setattr(Set, "map", refused)
    with pytest.raises(Midway):
        harness.load(Snapshot("pool", 4096, {}))
    assert left_open() == []


def test_a_harness_closes_the_source_it_builds_again_and_its_last_one(left_open: Any) -> None:
    with PoolHarness(pm.Granularity.CACHE_LINE, 4096) as harness:
        view = harness.load(Snapshot("pool", 4096, {}))
        first = harness.source
        assert left_open() == [first]
        harness.set.close()  # as a recovery that closed the set leaves it
        harness.check()
        assert left_open() == []
        assert harness.load(Snapshot("pool", 4096, {0: bytes(4096)})) is not view
        assert left_open() == [harness.source]
    assert left_open() == []
