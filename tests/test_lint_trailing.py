"""Overwrites in the last epoch, the one no fence ended: the end of a run reports them as a
fence would, in the simulator's lint() and in check-log's lean replay alike.

A fence's lint reports every overwrite of a store still in flight (backends/sim/medium.py
``_lint_epoch``); stores issued after the last fence that linted their pool used to be seen
by no one. Overwrites a fence already reported are not counted again at the end.
"""

from __future__ import annotations

import os

import pytest
from helpers import check_log_cli, lineno, log_lint
from pmemsim_backends.sim import Finding, FindingKind, SimBackend

import pmemsim as pm
from pmemsim.pmlog.lint import LogFinding
from pmemsim.provenance import locations

CL = pm.Granularity.CACHE_LINE
THIS_FILE = os.path.abspath(__file__)
OVER = FindingKind.OVERWRITTEN_STORE


def _view(sim: SimBackend) -> pm.View:
    s = pm.Set(pm.Config(granularity=CL, backend=sim))
    return s.view(s.map(pm.Part(pm.Source.anonymous(4 * 4096))))


def _over(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.kind == OVER]


def _line(f: Finding | tuple[object, ...]) -> int:
    prov = f.provenance if isinstance(f, Finding) else f
    [loc, *_] = locations(prov)  # type: ignore[arg-type]
    assert loc.filename == THIS_FILE
    return loc.lineno


class TestSimulator:
    def test_an_overwrite_with_no_fence_after_it(self, sim: SimBackend) -> None:
        v = _view(sim)
        v.u64[8] = 1
        first = lineno() - 1
        v.u64[8] = 2
        second = lineno() - 1
        [f] = _over(sim.lint())
        assert (f.offset, f.length, f.count) == (64, 8, 1)
        assert (_line(f), _line(f.other)) == (second, first)
        # Asking again changes nothing (lint() only reads).
        assert _over(sim.lint()) == [f]

    def test_an_overwrite_after_the_last_fence(self, sim: SimBackend) -> None:
        v = _view(sim)
        v.u64[0] = 1
        v.persist(0, 8)  # durable: overwriting it is fine
        v.u64[0] = 2
        v.u64[1] = 3  # its own bytes: no overwrite
        v.u64[16] = 4  # line 2, in flight
        v.persist(512, 8)  # a fence that changes nothing here (a clean flush)
        v.u64[16] = 5  # overwrites line 2's store, after the last fence
        [f] = _over(sim.lint())
        assert (f.offset, f.length, f.count) == (128, 8, 1)
        [(_, start, end)] = f.occurrences()
        assert (start, end) == (128, 136)

    def test_an_overwrite_a_fence_reported_is_not_counted_again(self, sim: SimBackend) -> None:
        v = _view(sim)
        v.u64[0] = 1
        v.u64[0] = 2  # seen by each fence below (both stores stay in flight): one store
        second = lineno() - 1
        v.persist(512, 8)
        v.persist(1024, 8)
        [f] = _over(sim.lint())
        assert f.count == 1
        v.u64[0] = 3  # a new overwrite at another line of code, after the last fence
        third = lineno() - 1
        over = _over(sim.lint())
        assert sorted(_line(f) for f in over) == [second, third]
        assert [f.count for f in over] == [1, 1]

    def test_the_same_line_of_code_merges_with_what_fences_found(self, sim: SimBackend) -> None:
        v = _view(sim)
        for i in range(2):
            v.u64[4 * i] = 1
            v.u64[4 * i] = 2
            if i == 0:
                v.persist(512, 8)  # reports the first overwrite
        [f] = _over(sim.lint())
        assert f.count == 2
        assert sorted(s for _, s, _ in f.occurrences()) == [0, 32]

    def test_a_fence_that_linted_another_pool_only(self, sim: SimBackend) -> None:
        s = pm.Set(pm.Config(granularity=CL, backend=sim))
        a = s.view(s.map(pm.Part(pm.Source.anonymous(4096))))
        b = s.view(s.map(pm.Part(pm.Source.anonymous(4096))))
        a.u64[0] = 1
        a.u64[0] = 2  # before the last fence, but that fence resolved b only
        b.persist(0, 8)
        [f] = _over(sim.lint())
        assert f.count == 1

    def test_a_run_of_stores_extended_past_a_fence(self, sim: SimBackend) -> None:
        v = _view(sim)
        v.u64[2] = 1  # bytes 16..24, in flight to the end
        v.u64[64] = 0
        v.flush(512, 8)  # pending: the fence below resolves this pool
        for i in range(4):
            v.u64[i] = 2  # one instruction, one record 0..32, begun before the fence
            if i == 1:
                v.drain()  # lints 0..16 (no overwrite yet)
        [f] = _over(sim.lint())
        assert (f.offset, f.length, f.count) == (16, 8, 1)

    def test_clflush_lints_at_once(self) -> None:
        sim = SimBackend(flush_instruction="clflush")
        v = _view(sim)
        v.u64[0] = 1
        v.u64[0] = 2
        v.flush(512, 8)  # a clflush lints this pool's epoch and reports the overwrite
        v.u64[0] = 3  # after it: new
        assert sorted(f.count for f in _over(sim.lint())) == [1, 1]

    def test_other_granularities_have_no_overwrite_findings(self) -> None:
        for granularity in (pm.Granularity.PAGE, pm.Granularity.BYTE):
            sim = SimBackend(granularity)
            s = pm.Set(pm.Config(granularity=granularity, backend=sim))
            v = s.view(s.map(pm.Part(pm.Source.anonymous(4096))))
            v.u64[0] = 1
            v.u64[0] = 2
            assert _over(sim.lint()) == []


# -- logs: check-log's lean replay and the simulator ------------------------------------------

BASE = 0x10000000
REG = f"REGISTER_FILE;/nonexistent-pmemsim-trailing/f.bin;0x{BASE:x};0x1000;0x0"


def _store(off: int, value: int, line: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x};0x1: main (t.c:{line})"


def _lint(ops: list[str], fast_path: bool) -> list[LogFinding]:
    return log_lint("|".join(["START", REG, *ops, "STOP"]), fast_path)[1]


def _both(ops: list[str]) -> list[LogFinding]:
    want = _lint(ops, fast_path=False)
    got = _lint(ops, fast_path=True)
    assert [f.as_dict() for f in got] == [f.as_dict() for f in want]
    assert [f.concerns for f in got] == [f.concerns for f in want]
    return got


def _overwrites(found: list[LogFinding]) -> list[LogFinding]:
    return [f for f in found if f.kind == OVER.value]


def test_the_planted_bug_of_pmdks_basic_example() -> None:
    # As basic_bug.c records it: strcpy's stores, the third over the second, never flushed.
    # The third stores bytes 9-15 again with the value they hold: no overwrite.
    ops = [
        _store(0x0, 0x70202C6F6C6C6568, 58),
        _store(0x8, 0x6E65747369737265, 58),
        _store(0x9, 0x746E657473697372, 58),
        _store(0x11, 0x79726F6D656D20, 58),
    ]
    assert _overwrites(_both(ops)) == []
    ops[2] = _store(0x9, 0x746E6574736973FF, 58)  # byte 9 changed: an overwrite
    [f] = _overwrites(_both(ops))
    # Records: #0 START, #1 REGISTER_FILE, #2.. the stores.
    assert (f.record, f.records, f.offset, f.length) == (4, 1, 9, 7)
    assert (f.source, f.earlier) == ("t.c:58 in main", "t.c:58 in main")


def test_an_overwrite_before_the_last_fence_is_reported_once() -> None:
    ops = [
        _store(0x0, 1, 1),
        _store(0x0, 2, 2),
        _store(0x40, 3, 3),
        "FLUSH;0x10000040;0x40",
        "FENCE",  # reports #3 over #2
        _store(0x80, 4, 4),
        _store(0x80, 5, 5),  # after the last fence
    ]
    found = _overwrites(_both(ops))
    assert sorted((f.record, f.source, f.earlier) for f in found) == [
        (3, "t.c:2 in main", "t.c:1 in main"),
        (8, "t.c:5 in main", "t.c:4 in main"),
    ]


def test_a_run_of_stores_extended_past_a_fence_in_a_log() -> None:
    ops = [
        _store(0x10, 1, 1),  # in flight to the end
        _store(0x200, 2, 2),
        "FLUSH;0x10000200;0x40",
        _store(0x0, 3, 3),
        _store(0x8, 3, 3),  # the same source line, the next address: one record
        "FENCE",
        _store(0x10, 3, 3),  # still that record: overwrites the first store
    ]
    [f] = _overwrites(_both(ops))
    assert (f.record, f.offset, f.length, f.earlier) == (8, 0x10, 8, "t.c:1 in main")


def test_a_log_without_overwrites_has_none_at_the_end() -> None:
    ops = [_store(0x0, 1, 1), _store(0x8, 2, 1), "FLUSH;0x10000000;0x40", "FENCE", _store(0, 3, 2)]
    assert _overwrites(_both(ops)) == []


@pytest.mark.parametrize("fence", [False, True])
def test_check_log_reports_it(tmp_path: os.PathLike[str], fence: bool) -> None:
    ops = [_store(0x0, 1, 1), _store(0x0, 2, 2)] + (["FLUSH;0x10000000;0x40", "FENCE"] * fence)
    code, text = check_log_cli(tmp_path, "|".join(["START", REG, *ops, "STOP"]))
    assert code == 0
    assert "store overwrote a store that was not yet durable: STORE #3 at t.c:2" in text
