"""The simulated machine around the rules: counters, lint findings, barrier observers, sparse
memory for huge sources, and what a file receives."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from helpers import lineno, u64
from pmemsim_backends.sim import Barrier, Finding, FindingKind, SimBackend, Statistics

import pmemsim as pm
from pmemsim.provenance import describe, locations

PAGE = 4096
CL = pm.Granularity.CACHE_LINE
NT_NODRAIN = pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN
THIS_FILE = os.path.abspath(__file__)
LABEL = f"anonymous({4 * PAGE})"

MakeSet = Callable[..., pm.Set]


def view_on(sim: SimBackend, granularity: pm.Granularity = CL) -> pm.View:
    s = pm.Set(pm.Config(granularity=granularity, backend=sim))
    return s.view(s.map(pm.Part(pm.Source.anonymous(4 * PAGE))))


# -- statistics ---------------------------------------------------------------------------


class TestStatistics:
    def test_fresh_machine(self, sim: SimBackend, v: pm.View) -> None:
        assert sim.statistics() == Statistics(0, 0, 0, 0, 0, 0, 0, 0)

    def test_known_workload(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1  # line 0: dirty to the end
        v.u64[8] = 2  # line 1: flushed and fenced
        v.flush(64, 8)
        v.memcpy(128, u64(3), NT_NODRAIN)  # line 2: NT, fenced below
        v.drain()
        v.write(192, b"f" * 16)  # line 3: flushed, never fenced
        v.flush(192, 16)
        v.u64[40] = 5  # line 5: two stores, dirty
        v.u64[41] = 6
        st = sim.statistics()
        assert st == Statistics(
            stores=6,
            store_bytes=8 * 5 + 16,
            flushes=2,
            fences=1,
            deep_flushes=0,
            dirty_lines=2,  # lines 0 and 5
            flushed_lines=1,  # line 3
            persistent_lines=2,  # lines 1 and 2
        )

    def test_counters_move_with_persist_and_deep_flush(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.persist(0, 8)
        v.memcpy(64, b"x" * 64)  # WB copy: flush + fence inside
        v.u64[16] = 2
        v.deep_flush(128, 8)
        st = sim.statistics()
        assert (st.stores, st.store_bytes) == (3, 80)
        assert (st.flushes, st.fences, st.deep_flushes) == (2, 2, 1)
        assert (st.dirty_lines, st.flushed_lines, st.persistent_lines) == (0, 0, 3)
        v.u64[1] = 7  # line 0 again: durable content, and now a store in flight
        st = sim.statistics()
        assert (st.dirty_lines, st.flushed_lines, st.persistent_lines) == (1, 0, 2)

    def test_a_line_flushed_out_of_a_wider_store(self, sim: SimBackend, v: pm.View) -> None:
        v.write(0, b"w" * 128)  # one store over lines 0 and 1
        v.flush(0, 64)  # only line 0
        assert [(ln.offset, ln.status, ln.stores, ln.flushed) for ln in sim.lines()] == [
            (0, "flushed", 8, 8),
            (64, "dirty", 8, 0),
        ]
        st = sim.statistics()
        assert (st.dirty_lines, st.flushed_lines) == (1, 1)
        v.drain()
        assert [(ln.offset, ln.status) for ln in sim.lines()] == [(64, "dirty")]
        assert sim.statistics().persistent_lines == 1

    def test_byte_granularity_counts_stores_as_persistent(self) -> None:
        sim = SimBackend(granularity=pm.Granularity.BYTE)
        v = view_on(sim)
        v.u64[0] = 1
        v.u64[100] = 2
        v.flush(0, 8)
        st = sim.statistics()
        assert (st.stores, st.flushes, st.dirty_lines, st.persistent_lines) == (2, 1, 0, 2)


# -- lint ---------------------------------------------------------------------------------


def only(findings: list[Finding], kind: FindingKind) -> Finding:
    matching = [f for f in findings if f.kind == kind]
    assert len(matching) == 1, findings
    return matching[0]


def at_line(f: Finding, line: int) -> None:
    [loc, *_] = locations(f.provenance)
    assert (loc.filename, loc.lineno) == (THIS_FILE, line)
    assert f.location.startswith(f"{THIS_FILE}:{line} in ")


class TestLint:
    def test_correct_program_has_no_findings(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.persist(0, 8)
        v.memcpy(64, b"x" * 300)
        v.memcpy(512, u64(2), NT_NODRAIN)
        v.drain()
        assert sim.lint() == []

    def test_unflushed_store(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        line = lineno() - 1
        [f] = sim.lint()
        assert f.kind == FindingKind.UNFLUSHED_STORE
        assert f.kind.severity == "error"
        assert (f.source, f.offset, f.length, f.count) == (LABEL, 0, 8, 1)
        at_line(f, line)

    def test_flushed_but_unfenced_store(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[8] = 1
        line = lineno() - 1
        v.flush(64, 8)
        [f] = sim.lint()
        assert f.kind == FindingKind.UNFENCED_STORE
        assert f.kind.severity == "error"
        assert (f.offset, f.length) == (64, 8)
        at_line(f, line)

    def test_undrained_nontemporal_store(self, sim: SimBackend, v: pm.View) -> None:
        v.memcpy(128, b"n" * 16, NT_NODRAIN)
        line = lineno() - 1
        [f] = sim.lint()
        assert f.kind == FindingKind.UNDRAINED_NT_STORE
        assert (f.offset, f.length) == (128, 16)
        at_line(f, line)
        v.drain()
        assert sim.lint() == []

    def test_flush_of_a_clean_line(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.flush(0, 8)
        v.flush(192, 64)
        line = lineno() - 1
        v.drain()
        f = only(sim.lint(), FindingKind.CLEAN_FLUSH)
        assert f.kind.severity == "warning"
        assert (f.offset, f.length) == (192, 64)
        at_line(f, line)
        assert [g.kind for g in sim.lint()] == [FindingKind.CLEAN_FLUSH]

    def test_repeated_flush(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[32] = 1
        v.flush(256, 8)
        v.flush(256, 8)
        line = lineno() - 1
        v.drain()
        f = only(sim.lint(), FindingKind.REDUNDANT_FLUSH)
        assert (f.offset, f.length) == (256, 64)
        at_line(f, line)
        assert [g.kind for g in sim.lint()] == [FindingKind.REDUNDANT_FLUSH]

    def test_flush_again_after_a_new_store_is_not_repeated(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 1
        v.flush(0, 8)
        v.u64[1] = 2
        v.flush(0, 8)
        v.drain()
        assert sim.lint() == []

    def test_store_overwriting_a_store_not_yet_durable(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[40] = 5
        first = lineno() - 1
        v.u64[40] = 6
        second = lineno() - 1
        v.persist(320, 8)
        f = only(sim.lint(), FindingKind.OVERWRITTEN_STORE)
        assert (f.offset, f.length) == (320, 8)
        at_line(f, second)
        [other] = locations(f.other)
        assert (other.filename, other.lineno) == (THIS_FILE, first)
        assert f"earlier store at {THIS_FILE}:{first}" in str(f)

    def test_overwriting_a_durable_store_is_fine(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 5
        v.persist(0, 8)
        v.u64[0] = 6
        v.persist(0, 8)
        assert sim.lint() == []

    def test_fence_with_nothing_to_order(self, sim: SimBackend, v: pm.View) -> None:
        v.drain()
        line = lineno() - 1
        f = only(sim.lint(), FindingKind.EMPTY_FENCE)
        assert f.kind.severity == "warning"
        at_line(f, line)

    def test_findings_at_one_location_are_merged(self, sim: SimBackend, v: pm.View) -> None:
        for i in range(5):
            v.u64[i * 8] = i  # one line of code, five lines of memory
        line = lineno() - 1
        [f] = sim.lint()
        assert (f.kind, f.count, f.offset, f.length) == (FindingKind.UNFLUSHED_STORE, 5, 0, 264)
        at_line(f, line)
        assert "5 times" in str(f)

    def test_every_kind_in_one_run(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        unflushed = lineno() - 1
        v.flush(192, 64)
        clean = lineno() - 1
        v.u64[32] = 4
        v.flush(256, 8)
        v.flush(256, 8)
        repeated = lineno() - 1
        v.u64[40] = 5
        v.u64[40] = 6
        overwrite = lineno() - 1
        v.drain()
        v.drain()
        empty = lineno() - 1
        v.u64[8] = 2
        unfenced = lineno() - 1
        v.flush(64, 8)
        v.memcpy(128, u64(3), NT_NODRAIN)
        undrained = lineno() - 1
        findings = sim.lint()
        assert {f.kind for f in findings} == set(FindingKind)
        never_flushed = sorted(
            locations(f.provenance)[0].lineno
            for f in findings
            if f.kind == FindingKind.UNFLUSHED_STORE
        )
        assert never_flushed == [unflushed, overwrite - 1, overwrite]
        for kind, line in [
            (FindingKind.UNFENCED_STORE, unfenced),
            (FindingKind.UNDRAINED_NT_STORE, undrained),
            (FindingKind.CLEAN_FLUSH, clean),
            (FindingKind.REDUNDANT_FLUSH, repeated),
            (FindingKind.OVERWRITTEN_STORE, overwrite),
            (FindingKind.EMPTY_FENCE, empty),
        ]:
            at_line(only(findings, kind), line)
        # Errors sort first.
        severities = [f.kind.severity for f in findings]
        assert severities == sorted(severities, key=lambda s: s != "error")
        assert severities.count("error") == 5

    def test_lint_can_be_turned_off(self) -> None:
        sim = SimBackend(lint=False)
        v = view_on(sim)
        v.u64[0] = 1
        v.drain()
        assert sim.lint() == []


# -- barriers -----------------------------------------------------------------------------


class TestBarriers:
    def test_observers_hear_each_fence_before_it_takes_effect(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        seen: list[tuple[int, str, bool, int]] = []

        def observer(b: Barrier) -> None:
            seen.append((b.index, b.kind, b.after_store, sim.image_count()))

        sim.on_barrier(observer)
        v.u64[0] = 1
        v.persist(0, 8)  # barrier 0: a store came first; the store is still pending
        v.flush(0, 64)
        v.drain()  # barrier 1: a flush to order but no store since barrier 0
        v.drain()  # nothing to order: not a barrier
        v.u64[1] = 2
        v.drain()  # nothing flushed: not a barrier either (the store stays pending)
        v.flush(0, 64)
        v.drain()  # barrier 2: the store above counts
        v.memcpy(64, u64(3), pm.MemFlag.NONTEMPORAL)  # barrier 3: memcpy's own drain
        assert seen == [
            (0, "fence", True, 2),
            (1, "fence", False, 1),
            (2, "fence", True, 2),
            (3, "fence", True, 2),
        ]
        assert sim.image_count() == 1

    def test_barrier_provenance_is_the_callers_line(self, sim: SimBackend, v: pm.View) -> None:
        got: list[Barrier] = []
        sim.on_barrier(got.append)
        v.u64[0] = 1
        v.persist(0, 8)
        line = lineno() - 1
        [b] = got
        assert describe(b.provenance).startswith(f"{THIS_FILE}:{line} in ")
        assert len(b.provenance) > 1  # a stack, not one frame

    def test_kinds_of_barrier(self) -> None:
        kinds: list[tuple[str, bool]] = []

        def observer(b: Barrier) -> None:
            kinds.append((b.kind, b.after_store))

        clflush = SimBackend(flush_instruction="clflush")
        clflush.on_barrier(observer)
        v = view_on(clflush)
        v.u64[0] = 1
        v.flush(0, 8)
        v.deep_flush(0, 8)
        page = SimBackend(granularity=pm.Granularity.PAGE)
        page.on_barrier(observer)
        w = view_on(page, pm.Granularity.PAGE)
        w.u64[0] = 1
        w.drain()  # not a barrier at PAGE
        w.flush(0, 8)
        assert kinds == [("clflush", True), ("deep_flush", False), ("msync", True)]

    def test_removed_observer_is_not_called(self, sim: SimBackend, v: pm.View) -> None:
        calls: list[int] = []

        def observer(b: Barrier) -> None:
            calls.append(b.index)

        sim.on_barrier(observer)
        v.u64[0] = 1
        v.persist(0, 8)
        sim.remove_barrier_observer(observer)
        v.u64[0] = 2
        v.persist(0, 8)
        assert calls == [0]

    def test_crash_state_records_its_barrier_index(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.persist(0, 8)
        v.u64[0] = 2
        v.persist(0, 8)
        assert sim.crash_state().barrier == 2


# -- sparse memory --------------------------------------------------------------------------


def test_a_64_gib_source_costs_only_what_is_touched() -> None:
    size = 64 << 30
    sim = SimBackend()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
            v = s.view(s.map(pm.Part(pm.Source.anonymous(size))))
            assert v.size == size
            offsets = []
            for i in range(256):  # 256 x 4 KiB = 1 MiB, spread over the whole source
                off = (i * 0x9E3779B97F4A7C15) % (size - 2 * PAGE) // 64 * 64
                offsets.append(off)
                v.write(off, bytes([i % 255 + 1]) * PAGE)
                if i % 2:
                    v.persist(off, PAGE)
            grown = tracemalloc.get_traced_memory()[0] - base
            assert grown < 64 << 20, f"{grown / 2**20:.1f} MiB"
            for i, off in enumerate(offsets):
                assert v.read(off, PAGE) == bytes([i % 255 + 1]) * PAGE
            assert v.read(size - 8, 8) == bytes(8)
            assert sim.statistics().persistent_lines == 128 * 64
    finally:
        tracemalloc.stop()


# -- files ----------------------------------------------------------------------------------


def original(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


class TestFileSource:
    def test_file_receives_exactly_the_persisted_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "pool"
        path.write_bytes(original(3 * PAGE))
        sim = SimBackend()
        s = pm.Set(pm.Config(granularity=CL, backend=sim))
        src = pm.Source.from_file(path)
        v = s.view(s.map(pm.Part(src)))
        assert v.read(0, 3 * PAGE) == original(3 * PAGE)
        v.write(0, b"U" * 64)  # never flushed
        v.write(PAGE + 8, b"P" * 40)  # persisted
        v.persist(PAGE + 8, 40)
        v.write(2 * PAGE, b"F" * 8)  # flushed, never fenced
        v.flush(2 * PAGE, 8)
        v.write(PAGE + 100, b"L" * 8)  # same page as persisted data, never flushed
        assert path.read_bytes() == original(3 * PAGE)  # nothing written before close
        s.close()
        src.close()
        expected = bytearray(original(3 * PAGE))
        expected[PAGE + 8 : PAGE + 48] = b"P" * 40
        assert path.read_bytes() == bytes(expected)

        # Reopening (a new machine: after the crash) shows the persisted bytes only.
        again = SimBackend()
        with (
            pm.Source.from_file(path) as src2,
            pm.Set(pm.Config(granularity=CL, backend=again)) as s2,
        ):
            w = s2.view(s2.map(pm.Part(src2)))
            assert w.read(0, 3 * PAGE) == bytes(expected)
            assert again.image_count() == 1

    def test_reopen_on_the_same_machine_sees_the_persisted_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "pool"
        path.write_bytes(original(PAGE))
        sim = SimBackend()
        with (
            pm.Source.from_file(path) as src,
            pm.Set(pm.Config(granularity=CL, backend=sim)) as s,
        ):
            v = s.view(s.map(pm.Part(src)))
            v.u64[0] = 1
            v.persist(0, 8)
            v.u64[1] = 2
        assert path.read_bytes()[:16] == u64(1) + original(16)[8:]
        with (
            pm.Source.from_file(path) as src,
            pm.Set(pm.Config(granularity=CL, backend=sim)) as s,
        ):
            v = s.view(s.map(pm.Part(src)))
            assert v.read(0, 16) == u64(1) + original(16)[8:]

    def test_two_sets_share_one_file_medium(self, tmp_path: Path, sim: SimBackend) -> None:
        path = tmp_path / "pool"
        path.write_bytes(bytes(PAGE))
        a = pm.Set(pm.Config(granularity=CL, backend=sim))
        b = pm.Set(pm.Config(granularity=CL, backend=sim))
        sa, sb = pm.Source.from_file(path), pm.Source.from_file(path)
        va = a.view(a.map(pm.Part(sa)))
        vb = b.view(b.map(pm.Part(sb)))
        va.u64[0] = 7
        assert vb.u64[0] == 7  # one page cache
        assert sim.image_count() == 2
        vb.persist(0, 8)  # either mapping may persist it
        assert sim.image_count() == 1
        a.close()
        b.close()
        sa.close()
        sb.close()
        assert path.read_bytes()[:8] == u64(7)

    def test_page_granularity_file(self, tmp_path: Path) -> None:
        path = tmp_path / "pool"
        path.write_bytes(bytes(2 * PAGE))
        sim = SimBackend(granularity=pm.Granularity.PAGE)
        with (
            pm.Source.from_file(path) as src,
            pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=sim)) as s,
        ):
            v = s.view(s.map(pm.Part(src)))
            v.u64[0] = 1
            v.drain()  # nothing at PAGE
            v.u64[512] = 2
            v.flush(PAGE, 8)  # msync of page 1 only
        data = path.read_bytes()
        assert data[:8] == bytes(8)
        assert data[PAGE : PAGE + 8] == u64(2)


def test_closed_file_leaves_later_crash_states(sim: SimBackend, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(4096))
    src = pm.Source.from_file(path)
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim)) as s:
        s.map(pm.Part(src, 0, 4096))
    assert [m.label for m in sim.crash_state().media] == [str(path)]
    src.close()
    assert sim.crash_state().media == []


def test_source_closed_while_mapped_keeps_loading_until_unmapped(
    sim: SimBackend, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\x11" * 8192)
    src = pm.Source.from_file(path)
    s = pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim))
    v = s.view(s.map(pm.Part(src, 0, 8192)))
    v.u64[0] = 7
    v.persist(0, 8)
    src.close()  # misuse, but the mapping must keep reading the file's real content
    assert v[4096:4104] == b"\x11" * 8  # a page never touched before the close
    assert len(sim.crash_state().media) == 1
    s.close()
    assert sim.crash_state().media == []
    assert path.read_bytes()[:8] == (7).to_bytes(8, "little")
