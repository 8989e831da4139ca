"""Crash exploration: crash points, strategies, reports, replay, recovery crashes, the
durability self-check."""

from __future__ import annotations

import dataclasses

import pytest

import pmemsim as pm
from pmemsim.explore import (
    Crash,
    CrashCheck,
    CrashConsistencyError,
    check,
    current_crash,
    marker,
    record,
    replay,
    strategy_named,
)
from pmemsim.explore.checks import Workload
from pmemsim.explore.durability import DurabilityViolation
from pmemsim.provenance import locations

BYTE, LINE = pm.Granularity.BYTE, pm.Granularity.CACHE_LINE


def flag_implies_data(v: pm.View) -> bool:
    return v.u64[0] == 0 or v.u64[8] == 7


# -- the cases the issue names ---------------------------------------------------------------


def test_eviction_flag_in_another_line_persisted_before_its_data_is_found() -> None:
    def workload(v: pm.View) -> None:
        v.u64[8] = 7  # data, line 1
        v.u64[0] = 1  # flag, line 0: may be evicted before line 1 is flushed
        v.persist(0, 128)

    r = check(CrashCheck("evict", workload, flag_implies_data, expect="inconsistent"))
    assert r.verdict == "inconsistent" and r.exact
    m = r.minimal
    assert m is not None and [(x.offset, x.lost) for x in m.lines] == [(64, 1)]


def test_a_recovery_calling_sys_exit_is_inconsistent_not_the_end_of_the_run() -> None:
    # SystemExit went past recovery's verdict: check() raised it (pmemsim check called the
    # whole check errored), and check-log's --recovery ended the process with no report.
    import sys

    def workload(v: pm.View) -> None:
        v.write(0, b"\x01" * 8)
        v.persist(0, 8)

    def recover(v: pm.View) -> bool:
        sys.exit(0)

    r = check(CrashCheck("exits", workload, recover, expect="inconsistent"))
    assert r.verdict == "inconsistent"
    assert r.minimal is not None and isinstance(r.minimal.error, SystemExit)


def test_two_stores_to_one_line_flushed_together_are_not_a_false_positive() -> None:
    def workload(v: pm.View) -> None:
        v.u64[0] = 7  # data
        v.u64[1] = 1  # flag, same line, later: the line persists a prefix, never flag alone
        v.persist(0, 16)

    def recover(v: pm.View) -> bool:
        return v.u64[1] == 0 or v.u64[0] == 7

    c = CrashCheck("same line", workload, recover)
    r = check(c, strategy="exhaustive")
    assert r.verdict == "consistent" and r.exact and r.images_checked == 3
    # Lazily: the flag read set (then the data read) and the flag read clear (the data
    # never read): two read paths for the three images.
    lazy = check(c)
    assert lazy.verdict == "consistent" and lazy.exact and lazy.read_paths == 2


def test_bug_in_a_trailing_epoch_without_a_fence_is_found() -> None:
    def workload(v: pm.View) -> None:
        v.u64[8] = 7
        v.persist(64, 8)
        v.u64[0] = 1
        v.flush(0, 8)  # no fence: still the trailing epoch
        v.u64[8] = 0  # then the data is clobbered, never flushed

    r = check(CrashCheck("trailing", workload, flag_implies_data, expect="inconsistent"))
    assert r.verdict == "inconsistent"
    m = r.minimal
    assert m is not None and m.point.kind == "end"


def test_byte_granularity_crashes_after_every_store() -> None:
    def workload(v: pm.View) -> None:
        v.u64[0] = 1  # flag first: on eADR it is durable at once
        v.u64[8] = 7
        v.persist(0, 128)

    r = check(CrashCheck("byte", workload, flag_implies_data, granularity=BYTE))
    assert r.verdict == "inconsistent"
    m = r.minimal
    assert m is not None and m.point.kind == "store" and m.point.position == "after"
    assert locations(m.point.provenance)[0].lineno == workload.__code__.co_firstlineno + 1
    fixed = CrashCheck("b", _data_then_flag, flag_implies_data)
    assert check(fixed).verdict == "consistent"
    assert check(dataclasses.replace(fixed, granularity=BYTE)).verdict == "consistent"


def _data_then_flag(v: pm.View) -> None:
    v.u64[8] = 7
    v.persist(64, 8)
    v.u64[0] = 1
    v.persist(0, 8)


# -- crash point modes and markers --------------------------------------------------------


def _marked(v: pm.View) -> None:
    with marker("init"):
        v.u64[0] = 0
        v.persist(0, 8)
    for i in range(2):
        with marker("insert"):
            v.u64[8 + i] = i + 1
            v.persist(64 + 8 * i, 8)
            v.u64[0] = i + 1
            v.persist(0, 8)


def test_crash_points_at_markers_only_are_not_an_exact_verdict() -> None:
    """Marker boundaries are some of the barriers: the states between them go unseen, so a
    check crashed there alone is heuristic, and says why (it said "exact")."""
    c = CrashCheck("marked", _marked, lambda v: True, strategy="exhaustive")
    assert check(c, progress=None).exact
    r = check(dataclasses.replace(c, crash_points="markers"), progress=None)
    assert not r.exact and r.images_covered == r.images_possible
    assert "crash points at marker boundaries only" in r.limits
    assert r.coverage.endswith("; crash points at marker boundaries only")


def test_crash_point_modes() -> None:
    barriers = record(_marked)
    ops = record(_marked, crash_points="operations")
    marks = record(_marked, crash_points="markers")
    assert [p.kind for p in barriers.points] == ["fence"] * 5 + ["end"]
    assert len(ops.points) > len(barriers.points)
    assert {p.kind for p in ops.points} >= {"store", "flush", "fence", "end"}
    assert [p.markers for p in marks.points] == [
        ("init",),
        ("init",),
        ("insert",),
        ("insert",),
        ("insert",),
        ("insert",),
        (),
    ]
    assert [p.markers for p in barriers.points[:-1]] == [("init",)] + [("insert",)] * 4


def test_recovery_can_ask_which_marked_operation_was_under_way() -> None:
    seen: list[tuple[str, ...]] = []

    def recover(v: pm.View) -> bool:
        info = current_crash()
        assert info is not None
        seen.append(info.markers)
        return True

    check(CrashCheck("m", _marked, recover))
    # Asking is an observation: the end of the run (no marker under way) is recovered from
    # too, though its image is one an earlier point gave.
    assert set(seen) == {("init",), ("insert",), ()}
    assert current_crash() is None
    seen.clear()
    # Planned strategies deduplicate images by content alone (the first point's info).
    check(CrashCheck("m", _marked, recover, strategy="exhaustive"))
    assert set(seen) == {("init",), ("insert",)}


def test_a_marker_can_choose_its_strategy_or_no_crash_points() -> None:
    full = check(CrashCheck("m", _marked, flag_implies_data))
    quiet = check(CrashCheck("m", _marked, flag_implies_data, markers={"insert": "none"}))
    assert quiet.images_checked < full.images_checked
    assert not quiet.exact and full.exact


def test_markers_must_nest_and_close() -> None:
    held = []

    def open_marker(v: pm.View) -> None:
        held.append(marker("x"))
        held[-1].__enter__()
        v.u64[0] = 1

    with pytest.raises(pm.InvalidArgumentError, match="markers open"):
        record(open_marker)
    with pytest.raises(ValueError, match="marker name"), marker("a|b"):
        pass


# -- strategies ------------------------------------------------------------------------------


def _three_lines(v: pm.View) -> None:
    for i in range(3):
        v.u64[8 * i] = i + 1
        v.u64[8 * i + 1] = i + 1
    v.persist(0, 192)


def test_exhaustive_checks_every_distinct_image_and_others_a_subset() -> None:
    ok = CrashCheck("t", _three_lines, lambda v: True)
    exhaustive = check(ok, strategy="exhaustive")
    # 27 at the fence, and the end of the run (everything durable) counts its one image.
    assert exhaustive.images_possible == 28 and exhaustive.images_checked == 27
    assert exhaustive.exact and exhaustive.images_covered == 28
    # A recovery that reads nothing: one read path per point stands for all of its images.
    lazy = check(ok)
    assert (lazy.read_paths, lazy.images_covered, lazy.exact) == (1, 28, True)
    extremes = check(ok, strategy="extremes")
    assert extremes.images_checked == 2 and not extremes.exact
    assert extremes.images_skipped == 25
    bounded = check(ok, strategy="bounded:1")
    assert bounded.images_checked == 1 + 3 * 2 + 1  # persisted, single lines, guaranteed
    assert check(ok, strategy="accumulative").images_checked == 7
    assert check(ok, strategy="ReorderFull").images_checked == 27


def test_exact_falls_back_above_max_images_and_says_what_it_skipped() -> None:
    c = CrashCheck("t", _three_lines, lambda v: True, max_images=5, strategy="exhaustive")
    r = check(c)
    assert not r.exact and r.images_skipped == 27 - r.images_checked
    assert "heuristic" in r.coverage and "of images covered" in r.coverage
    # Lazy exploration stops after that many read paths at a point.
    every = check(dataclasses.replace(c, strategy="lazy", recover=lambda v: v.read(0, 192)))
    assert every.read_paths == 5 and not every.exact
    assert "5 read paths at crash point 0" in every.coverage


def test_random_sampling_is_seeded_and_replayable() -> None:
    def seen(seed: int) -> list[str]:
        out: list[str] = []

        def recover(v: pm.View) -> bool:
            out.append(v.read(0, 192).hex())
            return True

        check(CrashCheck("r", _three_lines, recover), strategy="random:6", seed=seed)
        return out

    assert seen(1) == seen(1)
    assert any(seen(s) != seen(1) for s in (2, 3, 4))


def test_read_guided_branches_only_on_lines_recovery_reads() -> None:
    def recover(v: pm.View) -> bool:
        return v.u64[1] in (0, 1)  # reads line 0 only

    r = check(CrashCheck("g", _three_lines, recover), strategy="read-guided")
    assert r.images_checked == 4  # line 0's 3 alternatives x the others persisted, + floor
    assert not r.exact


def test_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(pm.InvalidArgumentError, match="unknown exploration strategy"):
        strategy_named("sometimes")


# -- reports, tokens, replay -----------------------------------------------------------------


def _two_bugs(v: pm.View) -> None:
    v.u64[8] = 7
    v.u64[0] = 1
    v.u64[24] = 9
    v.u64[16] = 1
    v.persist(0, 256)


def _two_bug_recovery(v: pm.View) -> bool:
    if v.u64[0] and v.u64[8] != 7:
        raise KeyError("first record torn")
    if v.u64[16] and v.u64[24] != 9:
        raise ValueError("second record torn")
    return True


def test_distinct_failures_raise_the_users_exceptions_as_a_group_with_notes() -> None:
    r = check(CrashCheck("two", _two_bugs, _two_bug_recovery))
    assert len(r.distinct()) == 2
    with pytest.raises(ExceptionGroup) as info:
        r.raise_failures()
    kinds = sorted(type(e).__name__ for e in info.value.exceptions)
    assert kinds == ["KeyError", "ValueError"]
    for e in info.value.exceptions:
        assert any("check(check, replay='two@" in n for n in e.__notes__)


def test_one_failure_reraises_the_users_exception() -> None:
    def workload(v: pm.View) -> None:
        v.u64[8] = 7
        v.u64[0] = 1
        v.persist(0, 128)

    r = check(CrashCheck("one", workload, flag_implies_data))
    with pytest.raises(CrashConsistencyError) as info:
        r.raise_failures()
    assert any(r.minimal.token in n for n in info.value.__notes__)  # type: ignore[union-attr]


def test_replay_token_rebuilds_exactly_that_image() -> None:
    images: dict[str, bytes] = {}

    def recover(v: pm.View) -> bool:
        info = current_crash()
        assert info is not None
        images.setdefault("last", v.read(0, 256))
        images["last"] = v.read(0, 256)
        return _two_bug_recovery(v)

    c = CrashCheck("two", _two_bugs, recover)
    r = check(c)
    for f in r.failures:
        check_image = None
        err = replay(c, f.token)
        check_image = images["last"]
        assert type(err) is type(f.error)
        again = replay(c, str(f.crash))
        assert type(again) is type(f.error) and images["last"] == check_image
    assert replay(c, "0:") is None  # nothing lost: consistent


def test_crash_tokens_parse_and_clamp() -> None:
    c = Crash.parse("3/unsafe_shutdown:0.40=1,0.0=2")
    assert c == Crash(3, ((0, 0, 2), (0, 0x40, 1)), ("unsafe_shutdown",))
    assert Crash.parse(str(c)) == c
    with pytest.raises(pm.InvalidArgumentError, match="crash token"):
        Crash.parse("x:")
    # A token names one image exactly: a point out of range, an alternative out of range or
    # a line with nothing in flight is an error, never clamped (Hypothesis clamps its own
    # crashes, see replaying.normalize).
    c2 = CrashCheck("t", _three_lines, lambda v: v.u64[0] == 1)
    assert isinstance(replay(c2, "0:0.0=2"), CrashConsistencyError)
    for bad, why in [("0:0.0=50", "alternatives 0 to 2"), ("99:", "crash points 0 to 1")]:
        with pytest.raises(pm.InvalidArgumentError, match=why):
            replay(c2, bad)
    with pytest.raises(pm.InvalidArgumentError, match="nothing in flight"):
        replay(c2, "1:0.0=1")
    with pytest.raises(pm.InvalidArgumentError, match="for check 'other'"):
        replay(c2, "other@0:")


def test_same_seed_same_report_and_jobs_do_not_change_it() -> None:
    c = CrashCheck("two", _two_bugs, _two_bug_recovery)
    a = check(c, strategy="random:20", seed=5)
    b = check(c, strategy="random:20", seed=5)
    par = check(c, strategy="random:20", seed=5, jobs=2)
    assert a.report() == b.report() == par.report()
    full, full2 = check(c), check(c, jobs=2)
    assert full.report() == full2.report()
    assert [f.token for f in full.failures] == [f.token for f in full2.failures]


# -- crashes during recovery -------------------------------------------------------------------


def _logged_update(v: pm.View) -> None:
    # Two words A (+0) and B (+128) move from 5 to 6 together, under an undo log in line 1
    # (valid flag at +64, saved A at +72, saved B at +80).
    v.u64[0] = 5
    v.u64[16] = 5
    v.persist(0, 136)
    v.u64[9] = 5
    v.u64[10] = 5
    v.u64[8] = 1
    v.persist(64, 24)
    v.u64[0] = 6
    v.persist(0, 8)
    v.u64[16] = 6
    v.persist(128, 8)
    v.u64[8] = 0
    v.persist(64, 8)


def _rollback(v: pm.View) -> None:
    v.u64[0] = v.u64[9]
    v.persist(0, 8)
    v.u64[16] = v.u64[10]
    v.persist(128, 8)


def _same(v: pm.View) -> bool:
    a, b = v.u64[0], v.u64[16]
    return a == b or 0 in (a, b)  # equal, or not initialised yet


def _recover_bad_order(v: pm.View) -> bool:
    if v.u64[8]:
        v.u64[8] = 0  # BUG: the log is dropped before the rollback is durable
        v.persist(64, 8)
        _rollback(v)
    return _same(v)


def _recover_good_order(v: pm.View) -> bool:
    if v.u64[8]:
        _rollback(v)
        v.u64[8] = 0
        v.persist(64, 8)
    return _same(v)


def test_crashing_recovery_finds_a_non_idempotent_recovery() -> None:
    bad = CrashCheck("r", _logged_update, _recover_bad_order)
    assert check(bad).verdict == "consistent"
    deep = check(dataclasses.replace(bad, recovery_crash_depth=1))
    assert deep.verdict == "inconsistent"
    m = deep.minimal
    assert m is not None and len(m.recovery_crashes) == 1 and ">" in m.token
    assert type(replay(bad, m.token)) is type(m.error)
    good = CrashCheck("r", _logged_update, _recover_good_order, recovery_crash_depth=2)
    assert check(good).verdict == "consistent"


# -- the durability self-check ---------------------------------------------------------------


def test_durability_self_check_catches_a_simulator_that_loses_guaranteed_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pmemsim_backends.sim.medium import Medium

    real = Medium.resolve

    def lossy(self: Medium, flushes: list, fence_nt: bool, lint: object) -> None:  # type: ignore[type-arg]
        if flushes and self.pending:
            self.pending.pop(0)  # a broken simulator forgets one flushed store
        real(self, flushes, fence_nt, lint)  # type: ignore[arg-type]

    ok = CrashCheck("ok", _data_then_flag, flag_implies_data)
    assert check(ok).verdict == "consistent"
    monkeypatch.setattr(Medium, "resolve", lossy)
    with pytest.raises(DurabilityViolation, match="pmemsim bug"):
        check(ok)


@pytest.mark.parametrize("granularity", list(pm.Granularity))
@pytest.mark.parametrize("flags", [0, pm.MemFlag.NONTEMPORAL, pm.MemFlag.NOFLUSH])
def test_durability_self_check_agrees_with_the_simulator(
    granularity: pm.Granularity, flags: pm.MemFlag
) -> None:
    def workload(v: pm.View) -> None:
        v.memcpy(0, b"a" * 300, flags=flags | pm.MemFlag.NODRAIN)
        v.u64[70] = 3
        v.memset(512, 1, 100, flags=flags)
        v.flush(0, 64)
        v.u64[1] = 9
        v.drain()
        v.deep_flush(0, 4096)
        v.u32[3] = 4
        v.persist(0, 4096)

    for mode in ("barriers", "operations"):
        trace = record(workload, granularity=granularity, crash_points=mode)
        assert trace.points[-1].kind == "end"


def test_flushed_only_is_pmreorders_blind_spot() -> None:
    def workload(v: pm.View) -> None:
        v.u64[8] = 7
        v.u64[0] = 1  # flag line may be evicted before the data is flushed
        v.persist(64, 8)
        v.persist(0, 8)

    c = CrashCheck("evict", workload, flag_implies_data)
    assert check(c).verdict == "inconsistent"
    assert check(c, strategy="flushed-only").verdict == "consistent"


# -- faults combined with crashes --------------------------------------------------------------


def _commit(deep: bool) -> Workload:
    def workload(v: pm.View) -> None:
        v.u64[8] = 7
        v.persist(64, 8)
        if deep:
            v.deep_flush(64, 8)  # the data must survive an unsafe shutdown before commit
        v.u64[0] = 1
        v.persist(0, 8)
        v.deep_flush(0, 8)

    return workload


def test_unsafe_shutdown_loses_fenced_data_that_was_not_deep_flushed() -> None:
    faults: list[tuple[str, ...]] = []

    def recover(v: pm.View) -> bool:
        info = current_crash()
        assert info is not None
        faults.append(info.faults)
        return flag_implies_data(v)

    shallow = CrashCheck("c", _commit(deep=False), recover)
    assert check(shallow).verdict == "consistent"
    r = check(dataclasses.replace(shallow, faults=("unsafe_shutdown",)))
    assert r.verdict == "inconsistent"
    m = r.minimal
    assert m is not None and m.crash.faults == ("unsafe_shutdown",)
    assert "unsafe_shutdown" in m.describe() and "/unsafe_shutdown:" in m.token
    assert ("unsafe_shutdown",) in faults and () in faults
    assert type(replay(shallow, m.token)) is CrashConsistencyError
    deep = CrashCheck("c", _commit(deep=True), flag_implies_data, faults=("unsafe_shutdown",))
    assert check(deep).verdict == "consistent"


def _record_with_checksum(v: pm.View) -> None:
    payload = b"pmem" * 16
    v.write(512, payload)
    v.u64[1] = sum(payload)  # checksum
    v.persist(512, 64)
    v.persist(8, 8)
    v.u64[0] = len(payload)  # the length publishes the record
    v.persist(0, 8)


def _trusting(v: pm.View) -> bool:
    n = v.u64[0]
    return n == 0 or v.read(512, n) == b"pmem" * 16


def _checking(v: pm.View) -> bool:
    n = v.u64[0]
    if n and sum(v.read(512, n)) != v.u64[1]:
        return True  # a damaged record is detected and dropped (truncated)
    return n == 0 or v.read(512, n) == b"pmem" * 16


def test_bad_block_in_a_sector_recovery_reads() -> None:
    trusting = CrashCheck("bb", _record_with_checksum, _trusting, faults=("badblock",))
    r = check(trusting)
    assert r.verdict == "inconsistent"
    m = r.minimal
    assert m is not None and m.crash.faults == ("badblock.200",) and not m.lines
    assert type(replay(trusting, m.token)) is CrashConsistencyError
    assert check(dataclasses.replace(trusting, recover=_checking)).verdict == "consistent"
    kept = check(dataclasses.replace(trusting, recover=_checking, badblock_policy="keep"))
    assert kept.verdict == "inconsistent"
    assert isinstance(kept.minimal.error, pm.MediaError)  # type: ignore[union-attr]


def test_unknown_faults_are_refused() -> None:
    with pytest.raises(pm.InvalidArgumentError, match="faults"):
        check(CrashCheck("x", _data_then_flag, flag_implies_data, faults=("flood",)))
    with pytest.raises(pm.InvalidArgumentError, match="faults"):
        check(CrashCheck("x", _data_then_flag, flag_implies_data, faults="badblock"))


def test_lint_findings_come_with_the_result_even_when_no_check_failed() -> None:
    def workload(v: pm.View) -> None:
        v.u64[0] = 1  # never flushed

    r = check(CrashCheck("lint", workload, lambda v: True))
    assert r.verdict == "consistent"
    assert [f.kind.name for f in r.findings] == ["UNFLUSHED_STORE"]
    assert "lint: error: store never flushed" in r.report()


def test_per_granularity_names_each_platform_and_its_verdict() -> None:
    from pmemsim.explore import per_granularity

    adr, eadr = per_granularity(
        CrashCheck("evict", _data_then_flag, flag_implies_data),
        cache_line="inconsistent",
        byte="consistent",
    )
    assert (adr.name, adr.granularity, adr.expect) == ("evict[cache_line]", LINE, "inconsistent")
    assert (eadr.name, eadr.granularity, eadr.expect) == ("evict[byte]", BYTE, "consistent")


@pytest.mark.parametrize("granularity", list(pm.Granularity))
def test_durability_self_check_agrees_on_seeded_random_programs(
    granularity: pm.Granularity,
) -> None:
    import random

    flag_sets = [0, pm.MemFlag.NONTEMPORAL, pm.MemFlag.TEMPORAL, pm.MemFlag.NOFLUSH]
    for seed in range(60):
        rng = random.Random(seed)

        def workload(v: pm.View, rng: random.Random = rng) -> None:
            for _ in range(25):
                op = rng.randrange(6)
                off = rng.randrange(0, 4096 - 300)
                if op == 0:
                    v.write(off, bytes([rng.randrange(1, 256)]) * rng.randrange(1, 20))
                elif op == 1:
                    flags = rng.choice(flag_sets) | rng.choice([0, pm.MemFlag.NODRAIN])
                    v.memcpy(off, bytes([rng.randrange(256)]) * rng.randrange(1, 300), flags)
                elif op == 2:
                    v.flush(off, rng.randrange(1, 200))
                elif op == 3:
                    v.drain()
                elif op == 4:
                    v.deep_flush(off, rng.randrange(1, 200))
                else:
                    v.persist(off, rng.randrange(1, 200))

        # record() raises DurabilityViolation at the first point the two models disagree.
        record(workload, granularity=granularity, crash_points=("operations", "barriers")[seed % 2])
