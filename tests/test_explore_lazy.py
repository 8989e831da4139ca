"""Lazy exact exploration: soundness (read paths partition the images, verdicts agree with
exhaustive exploration), what it branches on, broken assumptions, hangs and budgets."""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

import pmemsim as pm
from pmemsim.explore import (
    CrashCheck,
    NondeterministicRecovery,
    Progress,
    RecoveryHang,
    check,
    current_crash,
    replay,
)
from pmemsim.explore.executor import LocalProcesses
from pmemsim.explore.lazy import (
    Alternatives,
    Event,
    LazyExplorer,
    Outcome,
    Verdict,
)
from pmemsim.markers import CrashInfo

# -- the explorer on synthetic crash states ----------------------------------------------------


class _Synthetic(Alternatives):
    """Units 0..n-1 of one medium, unit k of the state is unit index 2k (odd ones are fixed)."""

    def __init__(self, contents: list[list[bytes]]) -> None:
        self.contents = contents

    def unit_size(self, medium: int) -> int:
        return 8

    def unit_at(self, medium: int, index: int) -> int | None:
        return index // 2 if index % 2 == 0 and index // 2 < len(self.contents) else None

    def count(self, unit: int) -> int:
        return len(self.contents[unit])

    def content(self, unit: int, option: int) -> bytes:
        return self.contents[unit][option]

    def fixed(self, medium: int, index: int) -> bytes:
        return bytes([index % 251]) * 8

    def total(self) -> int:
        n = 1
        for c in self.contents:
            n *= len(c)
        return n


def _program(rng: random.Random, units: int) -> Callable[[_Synthetic, dict[int, int]], Outcome]:
    """A random deterministic "recovery": reads bytes of units, chooses what to read next
    from what it saw, sometimes writes a unit and reads it back, and judges by a digest of
    everything it saw."""
    table = [rng.randrange(2 * units + 2) for _ in range(64)]
    spans = [(rng.randrange(8), rng.randrange(1, 9)) for _ in range(64)]
    depth = rng.randrange(1, 6)
    writes = {rng.randrange(2 * units) for _ in range(2)}

    def run(alts: _Synthetic, choice: dict[int, int]) -> Outcome:
        events: list[Event] = []
        seen = 0
        written: dict[int, int] = {}
        idx = table[0]
        for step in range(depth):
            start, length = spans[(seen + step) % 64]
            length = min(length, 8 - start)
            if idx in writes and step == 1:
                written[idx] = 0xFF  # bytes 0-7 of unit idx written by recovery
            own = written.get(idx, 0) >> start & ((1 << length) - 1)
            u = alts.unit_at(0, idx)
            data = alts.fixed(0, idx) if u is None else alts.content(u, choice.get(u, 0))
            got = bytes(0x5A if own >> k & 1 else b for k, b in enumerate(data[start:][:length]))
            if own != (1 << length) - 1:
                events.append((0, idx, start, length, own))
            seen = (seen * 31 + int.from_bytes(got, "little")) % 1000003
            idx = table[seen % 64]
        kind = "consistent" if seen % 3 else "inconsistent"
        verdict = Verdict(kind, ("X", str(seen % 2)) if kind != "consistent" else ("", ""))
        return Outcome(verdict, events, [])

    return run


@pytest.mark.parametrize("seed", range(40))
def test_read_paths_partition_the_images_and_each_has_one_verdict(seed: int) -> None:
    rng = random.Random(seed)
    units = rng.randrange(1, 6)
    contents = []
    for _ in range(units):
        n = rng.randrange(1, 5)
        # Alternatives that share some bytes, so reads of those bytes do not tell them apart.
        base = bytes(rng.randrange(4) for _ in range(8))
        contents.append([base[:k] + bytes([rng.randrange(3)]) + base[k + 1 :] for k in range(n)])
        contents[-1] = list(dict.fromkeys(contents[-1]))
    alts = _Synthetic(contents)
    program = _program(rng, units)
    runs: list[tuple[tuple[int, int], ...]] = []

    def run(dev: tuple[tuple[int, int], ...]) -> Outcome:
        runs.append(dev)
        return program(alts, dict(dev))

    info = CrashInfo(0, "fence", ())
    paths = list(LazyExplorer().explore(alts, info, run))
    # Every image belongs to exactly one path, and the program says the path's verdict.
    every = itertools.product(*[range(len(c)) for c in contents])
    for combo in every:
        owners = [p for p in paths if all(combo[u] in opts for u, opts in p.classes.items())]
        assert len(owners) == 1, (combo, [p.classes for p in paths])
        assert program(alts, dict(enumerate(combo))).verdict == owners[0].verdict
    assert sum(p.images for p in paths) == alts.total()
    # A run per path (and the first image once more, to check determinism), never more.
    assert len(runs) == len(paths) + 1
    # The representative of a path is the first alternative of each unit in its class.
    for p in paths:
        assert dict(p.deviations) == {u: o[0] for u, o in p.classes.items() if o[0]}


def test_a_second_state_reuses_the_runs_of_the_first() -> None:
    rng = random.Random(7)
    contents = [[b"\0" * 8, b"\1" * 8], [b"\0" * 8, b"\2" * 8, b"\3" * 8]]
    program = _program(rng, 2)
    runs = []

    def run(alts: _Synthetic) -> Callable[[Any], Outcome]:
        def go(dev: Any) -> Outcome:
            runs.append(dev)
            return program(alts, dict(dev))

        return go

    explorer = LazyExplorer()
    info = CrashInfo(0, "fence", ())
    first = _Synthetic(contents)
    a = list(explorer.explore(first, info, run(first)))
    n = len(runs)
    again = list(explorer.explore(_Synthetic(contents), info, run(first)))
    assert len(runs) == n and [p.verdict for p in a] == [p.verdict for p in again]
    assert not any(p.ran for p in again)


# -- on the simulator, against exhaustive exploration ---------------------------------------


def _random_check(seed: int) -> CrashCheck:
    rng = random.Random(seed)
    lines = rng.randrange(2, 6)
    plan = [(rng.randrange(lines), rng.randrange(8), rng.randrange(1, 4)) for _ in range(8)]
    fences = sorted(rng.sample(range(1, 8), rng.randrange(1, 3)))
    reads = [rng.randrange(lines) for _ in range(4)]

    def workload(v: pm.View) -> None:
        for k, (line, word, value) in enumerate(plan):
            v.u64[line * 8 + word] = value
            if k in fences:
                v.persist(0, lines * 64)

    def recover(v: pm.View) -> bool:
        total = 0
        line = reads[0]
        for step in range(3):
            word = v.u64[line * 8 + step]
            total += word
            line = reads[(total + step) % 4]
        if total % 4 == 1:
            v.u64[63] = total  # a store recovery reads back: not the image's
            v.persist(504, 8)
            total += v.u64[63]
        if total % 5 == 2:
            raise ValueError("odd")
        return total % 3 != 1

    return CrashCheck(f"random {seed}", workload, recover)


@pytest.mark.parametrize("seed", range(12))
def test_lazy_finds_what_exhaustive_finds(seed: int) -> None:
    c = _random_check(seed)
    lazy = check(c, progress=None)
    full = check(c, strategy="exhaustive", progress=None)
    assert lazy.exact and full.exact
    assert lazy.images_covered == lazy.images_possible == full.images_possible
    assert lazy.verdict == full.verdict
    assert {f.signature: f.size_key for f in lazy.failures} == {
        f.signature: f.size_key for f in full.failures
    }
    assert lazy.recovery_runs <= full.recovery_runs + 1


def test_a_constructor_of_twenty_lines_read_in_three_is_exact_in_a_few_runs() -> None:
    def construct(v: pm.View) -> None:
        for line in range(1, 21):
            for word in range(3):
                v.u64[line * 8 + word] = line * 10 + word
        v.u64[0] = 20  # published in the same epoch: the bug
        v.persist(0, 21 * 64)

    def recover(v: pm.View) -> bool:
        return v.u64[0] == 0 or all(v.u64[line * 8] == line * 10 for line in (1, 2, 3))

    r = check(CrashCheck("ctor", construct, recover, expect="inconsistent"), progress=None)
    assert r.as_expected and r.exact and r.images_possible > 4**20
    assert r.recovery_runs < 20
    m = r.minimal
    assert m is not None and [(x.offset, x.lost) for x in m.lines] == [(64, 3)]


def test_reads_of_what_recovery_wrote_do_not_branch() -> None:
    def workload(v: pm.View) -> None:
        for line in range(4):
            v.u64[line * 8] = line + 1
        v.persist(0, 256)

    def rewrite_then_read(v: pm.View) -> bool:
        for line in range(4):
            v.u64[line * 8] = 9  # recovery resets every line first
        return all(v.u64[line * 8] == 9 for line in range(4))

    r = check(CrashCheck("own", workload, rewrite_then_read), progress=None)
    assert r.exact and r.read_paths == 1 and r.images_possible == 2**4 + 1


def test_asking_which_crash_point_it_is_makes_each_point_its_own() -> None:
    asked = CrashCheck("ask", _two_epochs, lambda v: current_crash() is not None and True)
    silent = CrashCheck("silent", _two_epochs, lambda v: True)
    pointwise = CrashCheck(
        "point", _two_epochs, lambda v: (current_crash() or CrashInfo(0, "", ())).point >= 0
    )
    assert check(silent, progress=None).read_paths == 1
    assert check(asked, progress=None).read_paths == 1  # the info object, no field read
    points = check(pointwise, progress=None)
    assert points.read_paths == points.crash_points


def _two_epochs(v: pm.View) -> None:
    v.u64[0] = 1
    v.persist(0, 8)
    v.u64[8] = 2
    v.persist(64, 8)


# -- broken assumptions ----------------------------------------------------------------------


def test_a_recovery_that_is_not_deterministic_is_refused_clearly() -> None:
    calls = itertools.count()

    def moody(v: pm.View) -> bool:
        n = next(calls)
        return v.u64[n % 2 * 8] >= 0  # reads another line every other run

    with pytest.raises(NondeterministicRecovery, match=r"not deterministic|differently"):
        check(CrashCheck("moody", _two_epochs, moody), progress=None)

    def flaky(v: pm.View) -> bool:
        v.u64[0]
        return next(calls) % 2 == 0

    with pytest.raises(NondeterministicRecovery, match="two verdicts"):
        check(CrashCheck("flaky", _two_epochs, flaky), progress=None)


# -- hangs and budgets -----------------------------------------------------------------------


def _loops_on_a_torn_list(v: pm.View) -> bool:
    node = v.u64[0]
    while node:  # a crash can leave the next pointer at its old value: a cycle
        node = v.u64[node // 8]
    return True


def _linked(v: pm.View) -> None:
    v.u64[16] = 0  # node at 128, end of list
    v.persist(128, 8)
    v.u64[16] = 128  # BUG: the node now points to itself before the head is published
    v.u64[0] = 128
    v.persist(0, 256)


def test_a_recovery_that_loops_forever_is_a_hang_with_a_minimal_crash() -> None:
    c = CrashCheck("loop", _linked, _loops_on_a_torn_list, run_timeout=0.2, expect="inconsistent")
    r = check(c, progress=None)
    assert r.verdict == "inconsistent" and r.hangs >= 1
    m = r.minimal
    assert m is not None and m.kind == "hang" and isinstance(m.error, RecoveryHang)
    assert "recovery hung: recovery did not finish within 0.2 s" in m.describe()
    assert isinstance(replay(c, m.token), RecoveryHang)
    by_steps = check(dataclasses.replace(c, run_timeout=None, run_steps=10_000), progress=None)
    assert by_steps.hangs >= 1 and "step budget" in str(by_steps.minimal.error)  # type: ignore[union-attr]
    assert (
        by_steps.report()
        == check(dataclasses.replace(c, run_timeout=None, run_steps=10_000), progress=None).report()
    )


def test_a_hang_is_caught_outside_the_main_thread_too() -> None:
    import threading

    c = CrashCheck("loop", _linked, _loops_on_a_torn_list, run_timeout=0.2, expect="inconsistent")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(check(c, progress=None)))
    t.start()
    t.join(30)
    assert not t.is_alive() and out[0].hangs >= 1
    # No timer thread is left behind (a process that forks later must not inherit one).
    assert not [x for x in threading.enumerate() if x.name == "pmemsim-run-timer"]


def test_time_budgets_cut_exploration_and_say_so() -> None:
    def slow(v: pm.View) -> bool:
        time.sleep(0.02)
        return v.read(0, 640) is not None

    def many(v: pm.View) -> None:
        for line in range(10):
            v.u64[line * 8] = 1
        v.persist(0, 640)

    c = CrashCheck("slow", many, slow, point_budget=0.1, time_budget=0.5)
    r = check(c, progress=None)
    assert not r.exact and r.images_covered < r.images_possible
    assert "time budget per crash point (0.1 s) cut crash point(s) 0" in r.coverage
    assert "% of images covered" in r.coverage
    assert r.as_dict()["exact"] is False and 0 < r.as_dict()["covered_fraction"] < 1


def test_a_huge_random_sample_never_plans_more_than_the_point_has() -> None:
    def four(v: pm.View) -> None:
        for line in range(4):
            v.u64[line * 8] = 1
        v.persist(0, 256)

    r = check(CrashCheck("r", four, lambda v: True), strategy="random:99999999999")
    assert r.images_checked == 16 and r.exact


# -- the API around it -----------------------------------------------------------------------


def test_fields_are_checked_when_the_check_is_made() -> None:
    with pytest.raises(pm.InvalidArgumentError) as info:
        CrashCheck("typo", _two_epochs, lambda v: True, expect="consistant")  # type: ignore[arg-type]
    msg = str(info.value)
    assert "check 'typo'" in msg and "'consistent', 'inconsistent'" in msg
    with pytest.raises(pm.InvalidArgumentError, match=r"'byte', 'cache_line'"):
        CrashCheck("g", _two_epochs, lambda v: True, granularity="line")  # type: ignore[arg-type]
    for name in ("cache_line", "CACHE_LINE", " byte "):
        c = CrashCheck("g", _two_epochs, lambda v: True, granularity=name)  # type: ignore[arg-type]
        assert isinstance(c.granularity, pm.Granularity)
    with pytest.raises(pm.InvalidArgumentError, match="strategy"):
        CrashCheck("s", _two_epochs, lambda v: True, strategy="sometimes")
    with pytest.raises(pm.InvalidArgumentError, match="run_timeout"):
        CrashCheck("t", _two_epochs, lambda v: True, run_timeout=0)
    with pytest.raises(TypeError):
        CrashCheck("k", _two_epochs, lambda v: True, 8192)  # type: ignore[misc]


def _flag_before_data(v: pm.View) -> None:
    v.u64[8] = 7
    v.u64[0] = 1  # the flag's line may be evicted before the data is flushed
    v.persist(0, 8)
    v.persist(64, 8)


def test_check_replays_one_token() -> None:
    c = CrashCheck("evict", _flag_before_data, lambda v: v.u64[0] == 0 or v.u64[8] == 7)
    r = check(c, progress=None)
    assert r.verdict == "inconsistent"
    m = r.minimal
    assert m is not None
    again = check(c, replay=m.token)
    assert again.verdict == "inconsistent" and again.minimal.token == m.token  # type: ignore[union-attr]
    assert check(c, replay="1:").verdict == "consistent"
    for bad in ("2:0.0=1", "9:", "nonsense", "other@0:"):
        with pytest.raises(pm.InvalidArgumentError):
            check(c, replay=bad)


def test_progress_names_the_check_and_counts() -> None:
    seen: list[Progress] = []
    r = check(CrashCheck("p", _two_epochs, lambda v: True), progress=seen.append)
    last = seen[-1]
    assert last.check == "p" and last.point == last.points == r.crash_points
    assert last.images == r.images_covered and last.planned == r.images_possible


def _many_points(v: pm.View) -> None:
    for i in range(60):
        v.u64[(i % 8) * 8 + i // 8] = i + 1
        v.persist((i % 8) * 64, 64) if i % 3 else None


@pytest.mark.parametrize("strategy", ["lazy", "exhaustive", "random:5"])
def test_worker_processes_give_the_same_report(strategy: str) -> None:
    def recover(v: pm.View) -> bool:
        return sum(v.u64[k * 8] for k in range(8)) % 7 != 3

    c = CrashCheck("w", _many_points, recover, strategy=strategy, seed=3)
    one = check(c, progress=None)
    two = check(c, progress=None, executor=LocalProcesses(2))
    assert one.report() == two.report()
    assert one.as_dict() | {"seconds": 0, "images_per_second": 0, "recovery_runs": 0} == (
        two.as_dict() | {"seconds": 0, "images_per_second": 0, "recovery_runs": 0}
    )


def test_one_heavy_crash_point_is_cut_into_slices_with_the_same_report() -> None:
    from pmemsim.explore.executor import work_items

    def ten(v: pm.View) -> None:
        for line in range(10):
            v.u64[line * 8] = line + 1
            v.u64[line * 8 + 1] = line + 2
        v.persist(0, 640)

    def recover(v: pm.View) -> bool:
        return sum(v.u64[k * 8] for k in range(10)) % 11 != 4

    c = CrashCheck("heavy", ten, recover, strategy="exhaustive")
    items = work_items([(3**10, True), (1, True)], 2)
    assert len(items) > 2 and all(first == 0 for first, _, _, parts in items[:-1])
    one = check(c, progress=None)
    two = check(c, progress=None, executor=LocalProcesses(2))
    assert one.report() == two.report() and one.images_covered == two.images_covered
    assert one.images_checked == two.images_checked == 3**10


def test_the_reused_set_shows_each_image_as_a_fresh_one_would() -> None:
    from pmemsim.explore.harness import PoolHarness
    from pmemsim.explore.recovery import run_recovery
    from pmemsim.explore.trace import record

    trace = record(_many_points)
    seen: dict[str, list[bytes]] = {"fresh": [], "reused": []}
    harness = PoolHarness(pm.Granularity.CACHE_LINE, 4096)
    rng = random.Random(5)

    def recover_into(where: str) -> Callable[[pm.View], bool]:
        def recover(v: pm.View) -> bool:
            seen[where].append(v.read(0, 4096))
            v.u64[rng.randrange(512)] = 0xDEAD  # writes that must not leak into the next
            v.flush(0, 64)
            if len(seen[where]) % 7 == 3:
                v.set.close()  # recovery may even close its set
            return True

        return recover

    info = CrashInfo(0, "fence", ())
    for point in trace.points[:12]:
        state = point.state
        for dev in itertools.islice(state.images(), 8):
            snap = dev.snapshot()
            assert (
                run_recovery(recover_into("fresh"), snap, pm.Granularity.CACHE_LINE, info) is None
            )
            assert (
                run_recovery(
                    recover_into("reused"), snap, pm.Granularity.CACHE_LINE, info, harness=harness
                )
                is None
            )
    assert seen["fresh"] == seen["reused"] and len(seen["fresh"]) > 20


def test_image_keys_are_equal_exactly_when_contents_are() -> None:
    from pmemsim.explore.images import _PageSums
    from pmemsim.explore.lazy import StateAlternatives
    from pmemsim.explore.trace import record

    trace = record(_many_points)
    sums = _PageSums()
    by_key: dict[bytes, bytes] = {}
    by_content: dict[bytes, bytes] = {}
    for point in trace.points:
        alts = StateAlternatives(point.state)
        for image in itertools.islice(point.state.images(), 30):
            key = sums.key(point.state, alts, image.deviations)
            content = image.snapshot().to_bytes()
            assert alts.snapshot(image.deviations).to_bytes() == content
            assert by_key.setdefault(key, content) == content
            assert by_content.setdefault(content, key) == key
    assert len(by_key) > 50


@pytest.mark.parametrize("seed", range(4))
def test_lazy_finds_what_exhaustive_finds_when_recovery_is_crashed_too(seed: int) -> None:
    c = dataclasses.replace(_random_check(seed), recovery_crash_depth=1)
    lazy = check(c, progress=None)
    full = check(c, strategy="exhaustive", progress=None)
    assert lazy.exact and lazy.verdict == full.verdict
    assert {f.signature: f.size_key for f in lazy.failures} == {
        f.signature: f.size_key for f in full.failures
    }


def test_a_worker_stuck_in_a_c_call_is_stopped_at_the_check_budget() -> None:
    def stuck(v: pm.View) -> bool:
        if v.u64[0] == 1 and v.u64[8] == 0:  # one image of the first crash point
            sum(range(10**13))  # hours in one C call that no signal interrupts
        return True

    c = CrashCheck("stuck", _flag_before_data, stuck, time_budget=1.0, run_timeout=0.2)
    started = time.monotonic()
    r = check(c, progress=None, executor=LocalProcesses(2, grace=0.5))
    assert time.monotonic() - started < 20
    assert not r.exact and any("worker process" in n for n in r.notes)
    assert "time budget (1 s) ran out" in r.coverage


def test_a_hung_runs_source_is_closed_with_its_run() -> None:
    """A hang's exception holds its run's frames, the source among them: left to the
    collector, that source was closed whenever the verdict went, maybe inside a later run,
    where the time limit's interruption landed in its close ("Exception ignored in
    Source.__del__") and left it open."""
    from pmemsim import source
    from pmemsim.explore.recovery import run_recovery
    from pmemsim.explore.runtimer import RunTimer
    from pmemsim.snapshot import Snapshot

    image = Snapshot(
        "pool",
        4096,
        {
            0: (128).to_bytes(8, "little")
            + bytes(120)
            + (128).to_bytes(8, "little")
            + bytes(4096 - 136)
        },
    )
    before = {id(s) for s in source._open_sources}
    timer = RunTimer(0.2)
    verdict = run_recovery(
        _loops_on_a_torn_list, image, pm.Granularity.CACHE_LINE, CrashInfo(0, "end", ()),
        timer=timer,
    )  # fmt: skip
    assert isinstance(verdict, RecoveryHang) and verdict.__traceback__ is not None
    left = [s for s in source._open_sources if id(s) not in before and not s.closed]
    assert left == []
