"""A lint finding's count is the number of operations it covers, in the Python API as in
check-log; and flushes in the last, never-fenced epoch are linted as a fence would.

The simulator keeps a run of stores (one instruction, the next address, nothing in between)
as one record: a finding about the run covers each of its stores, not one. An operation
merged twice into one finding (an overwrite seen by two fences, a store whose unflushed
bytes lie on both sides of a flushed line) is still one operation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from helpers import check_log_cli, lineno, log_lint
from pmemsim_backends.sim import Finding, FindingKind, SimBackend

import pmemsim as pm
from pmemsim.pmlog.lint import LogFinding
from pmemsim.provenance import describe

CL = pm.Granularity.CACHE_LINE
K = FindingKind


def _view(sim: SimBackend) -> pm.View:
    s = pm.Set(pm.Config(granularity=CL, backend=sim))
    return s.view(s.map(pm.Part(pm.Source.anonymous(4 * 4096))))


def _of(kind: FindingKind, findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


# -- the Python API's count ------------------------------------------------------------------


def test_a_run_of_stores_counts_each_store(sim: SimBackend) -> None:
    v = _view(sim)
    for i in range(4):
        v.u64[8 + i] = i  # one instruction, the next address each time: one record of 4
    [f] = _of(K.UNFLUSHED_STORE, sim.lint())
    assert (f.offset, f.length, f.count) == (64, 32, 4)
    assert str(f).endswith(", 4 times)")
    assert [(s, e) for _, s, e in f.occurrences()] == [(64 + 8 * i, 72 + 8 * i) for i in range(4)]
    assert len({seq for seq, _, _ in f.occurrences()}) == 4


def test_a_run_cut_by_a_flushed_line_counts_the_stores_on_each_side(sim: SimBackend) -> None:
    v = _view(sim)
    for i in range(12):
        v.u64[4 + i] = i  # bytes 32..128: 4 stores on line 0, 8 on line 1
    v.flush(64, 64)
    found = sim.lint()
    [unflushed] = _of(K.UNFLUSHED_STORE, found)
    [unfenced] = _of(K.UNFENCED_STORE, found)
    assert (unflushed.offset, unflushed.length, unflushed.count) == (32, 32, 4)
    assert (unfenced.offset, unfenced.length, unfenced.count) == (64, 64, 8)


def test_one_store_unflushed_on_both_sides_of_a_flushed_line_is_one(sim: SimBackend) -> None:
    v = _view(sim)
    v.write(0, bytes(range(192)))  # one store over three lines
    v.flush(64, 64)  # the middle one flushed
    [f] = _of(K.UNFLUSHED_STORE, sim.lint())
    assert (f.offset, f.length, f.count) == (0, 192, 1)
    assert "times" not in str(f)


def test_an_overwrite_seen_by_two_fences_is_one_operation(sim: SimBackend) -> None:
    v = _view(sim)
    v.u64[0] = 1
    v.u64[0] = 2  # in flight at both fences below, which both see the overwrite
    v.persist(512, 8)
    v.persist(1024, 8)
    [f] = _of(K.OVERWRITTEN_STORE, sim.lint())
    assert f.count == 1
    assert len(list(f.occurrences())) == 1


def test_a_flush_clean_on_both_sides_of_a_dirty_line_is_one(sim: SimBackend) -> None:
    v = _view(sim)
    v.u64[8] = 1  # line 1 dirty, lines 0 and 2 clean
    v.persist(0, 192)
    [f] = _of(K.CLEAN_FLUSH, sim.lint())
    assert (f.offset, f.length, f.count) == (0, 192, 1)


def test_the_explore_report_says_the_count(sim: SimBackend) -> None:
    from pmemsim.explore import CrashCheck, check

    def workload(v: pm.View) -> None:
        for i in range(3):
            v.u64[8 + i] = i  # a run of 3, never flushed
        v.u64[0] = 1
        v.persist(0, 8)

    result = check(CrashCheck("run", workload, lambda v: None))
    [f] = _of(K.UNFLUSHED_STORE, result.findings)
    assert f.count == 3
    assert "(anonymous(4096) +0x40, 24 bytes, 3 times)" in result.report()


# -- flushes after the last fence ------------------------------------------------------------


def _flush_findings(findings: list[Finding]) -> list[tuple[str, int, int, int, int]]:
    return sorted(
        (f.kind.name, f.offset, f.length, f.count, line)
        for f in findings
        if f.kind in (K.CLEAN_FLUSH, K.REDUNDANT_FLUSH)
        for line in [int(describe(f.provenance).split(":")[1].split()[0])]
    )


@pytest.mark.parametrize("fence", [False, True])
def test_a_clean_and_a_repeated_flush_after_the_last_fence(sim: SimBackend, fence: bool) -> None:
    v = _view(sim)
    v.u64[0] = 1
    v.persist(0, 8)
    v.flush(0, 8)  # nothing stored since: clean
    clean = lineno() - 1
    v.u64[16] = 2
    v.flush(128, 8)
    v.flush(128, 8)  # flushed again, nothing stored since
    again = lineno() - 1
    if fence:
        v.drain()
    assert _flush_findings(sim.lint()) == [
        ("CLEAN_FLUSH", 0, 64, 1, clean),
        ("REDUNDANT_FLUSH", 128, 64, 1, again),
    ]


def test_lint_before_the_fence_and_after_it_agree(sim: SimBackend) -> None:
    v = _view(sim)
    v.u64[0] = 1
    v.flush(0, 8)
    v.flush(0, 8)
    before = _flush_findings(sim.lint())
    assert _flush_findings(sim.lint()) == before  # lint() only reads
    v.drain()
    assert _flush_findings(sim.lint()) == before
    assert [f[0] for f in before] == ["REDUNDANT_FLUSH"]


# -- logs: both replays ----------------------------------------------------------------------

BASE = 0x10000000
REG = f"REGISTER_FILE;/nonexistent-pmemsim-counts/f.bin;0x{BASE:x};0x1000;0x0"


def _store(off: int, value: int, line: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x};0x1: main (t.c:{line})"


def _flush(off: int, size: int = 8) -> str:
    return f"FLUSH;0x{BASE + off:x};0x{size:x}"


def _lint(ops: list[str], fast_path: bool) -> tuple[list[Finding], list[LogFinding]]:
    return log_lint("|".join(["START", REG, *ops, "STOP"]), fast_path)


def _both(ops: list[str]) -> list[LogFinding]:
    """check-log's findings, the same from both replays, each counting as its finding in
    the simulator's terms does."""
    out = []
    for fast_path in (False, True):
        findings, logged = _lint(ops, fast_path)
        by_kind = {(f.kind.value, f.offset, f.length): f.count for f in findings}
        for lf in logged:
            assert lf.count == len(lf.concerns) == by_kind[(lf.kind, lf.offset, lf.length)]
        out.append(logged)
    want, got = out
    assert [f.as_dict() for f in got] == [f.as_dict() for f in want]
    assert [f.concerns for f in got] == [f.concerns for f in want]
    return got


def test_a_logged_run_counts_as_many_in_both_terms() -> None:
    ops = [_store(8 * i, i, 7) for i in range(4)] + [_store(0x100, 1, 8), _flush(0x100), "FENCE"]
    [f] = [f for f in _both(ops) if f.kind == K.UNFLUSHED_STORE.value]
    # Records: #0 START, #1 REGISTER_FILE, #2.. the stores.
    assert (f.count, f.record, f.concerns) == (4, 2, (2, 3, 4, 5))


def _flushes(found: list[LogFinding]) -> list[tuple[str, int | None, int]]:
    return sorted(
        (f.kind, f.record, f.count)
        for f in found
        if f.kind in (K.CLEAN_FLUSH.value, K.REDUNDANT_FLUSH.value)
    )


@pytest.mark.parametrize("fence", [False, True])
def test_a_logged_clean_and_repeated_flush_after_the_last_fence(fence: bool) -> None:
    ops = [
        _store(0x0, 1, 1),
        _flush(0x0),
        "FENCE",
        _flush(0x0),  # #5: clean
        _store(0x80, 2, 2),
        _flush(0x80),
        _flush(0x80),  # #8: again
    ] + ["FENCE"] * fence
    assert _flushes(_both(ops)) == [
        (K.CLEAN_FLUSH.value, 5, 1),
        (K.REDUNDANT_FLUSH.value, 8, 1),
    ]


def test_check_log_prints_a_trailing_clean_flush(tmp_path: os.PathLike[str]) -> None:
    ops = [_store(0x0, 1, 1), _flush(0x0), "FENCE", _flush(0x0)]
    js = os.path.join(tmp_path, "out.json")
    code, out = check_log_cli(tmp_path, "|".join(["START", REG, *ops, "STOP"]), "--json", js)
    assert code == 0
    assert "flush of clean lines: FLUSH #5" in out
    with open(js) as f:
        found = json.load(f)["lint"]
    assert [(f["kind"], f["record"], f["count"]) for f in found] == [(K.CLEAN_FLUSH.value, 5, 1)]


# -- a finding names exactly its operations ----------------------------------------------------

_FOUND_ON = {
    K.UNFLUSHED_STORE: "store",
    K.UNFENCED_STORE: "store",
    K.UNDRAINED_NT_STORE: "store",
    K.OVERWRITTEN_STORE: "store",
    K.CLEAN_FLUSH: "flush",
    K.REDUNDANT_FLUSH: "flush",
    K.EMPTY_FENCE: "fence",
}


def _random_program(seed: int) -> Callable[[pm.View], None]:
    """Stores (runs of them from one line, overlaps), flushes of dirty and clean lines,
    copies with and without flushing, fences with and without anything to order."""
    import random

    rng = random.Random(seed)
    steps = [
        (rng.randrange(7), rng.randrange(0, 4096 - 256, 8), rng.randrange(1, 5)) for _ in range(40)
    ]

    def workload(v: pm.View) -> None:
        for what, off, n in steps:
            if what <= 1:
                for i in range(n):
                    v.u64[off // 8 + i] = i + 1  # a run of n stores
            elif what == 2:
                v.flush(off, 8 * n)
            elif what == 3:
                v.drain()
            elif what == 4:
                v.memcpy(off, bytes([n]) * 8 * n, pm.MemFlag.NODRAIN)
            elif what == 5:
                v.memcpy(off, bytes([n]) * 64 * n, pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN)
            else:
                v.u32[off // 4] = n  # may overwrite a store in flight

    return workload


@pytest.mark.parametrize("flush", ["clwb", "clflush"])
@pytest.mark.parametrize("seed", range(6))
def test_each_occurrence_is_the_tapped_operation_of_that_number(seed: int, flush: str) -> None:
    """A finding's occurrences name operations by number (a store's or flush's sequence
    number, a fence's count): each is one tapped operation of the kind the finding is
    about, and a store's bytes are inside that store. Every kind is seen over the seeds
    (all seven with seed 2)."""
    from pmemsim.explore import record

    sim = SimBackend(flush_instruction=flush)
    trace = record(_random_program(seed), keep_ops=True, backend=sim)  # seed: the test id
    by_number: dict[tuple[bool, int], Any] = {}
    for op in trace.ops:
        if op.kind in ("store", "flush", "fence", "deep_flush") and op.seq:
            assert (op.kind == "fence", op.seq) not in by_number, op
            by_number[(op.kind == "fence", op.seq)] = op
    assert trace.findings
    for f in trace.findings:
        kind = _FOUND_ON[f.kind]
        seen = list(f.occurrences())
        assert len(seen) == f.count
        for seq, start, end in seen:
            op = by_number[(kind == "fence", seq)]
            assert op.kind == kind, (f, op)
            if kind == "store":
                assert op.offset <= start < end <= op.offset + op.length, (f, op)
            elif kind == "flush":  # lines of the flushed range
                assert start < op.offset + op.length and op.offset < end, (f, op)


def test_without_lint_a_run_of_stores_keeps_no_boundaries() -> None:
    """The boundaries of a run's stores are for lint alone: a simulator without lint keeps
    none (its store path pays nothing for them; bench/bench_sim.py --baseline times it),
    and one with lint keeps them while the run is in flight."""
    for lint in (False, True):
        sim = SimBackend(lint=lint)
        v = _view(sim)
        for i in range(16):
            v.u64[i] = i  # one record of 16 stores
        [medium] = sim._media
        assert len(medium.pending) == 1
        assert [len(b) for b in medium.runs.values()] == ([17] if lint else [])
        v.persist(0, 128)
        assert not medium.runs
