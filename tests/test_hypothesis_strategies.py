"""pmemsim.hypothesis: crashes drawn over a recorded trace, shrinking to the minimal crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib.metadata import entry_points

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import pmemsim as pm
from pmemsim.explore import Crash, CrashCheck, CrashConsistencyError, Trace, check, record
from pmemsim.explore.images import crash_for
from pmemsim.explore.replaying import check_crash, crash_snapshot, normalize
from pmemsim.explore.seeding import fresh_seed, parse_seed
from pmemsim.hypothesis import _alternatives_bound, crashes

# No explain phase: it re-runs every example under coverage and costs seconds.
FAST = settings(
    database=None,
    derandomize=True,
    deadline=None,
    max_examples=150,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


def _flag_after_data(v: pm.View) -> None:
    """Four crash points; from point 1 on the data line (two stores, never flushed) can lose
    its stores while the flag in line 0 is flushed and fenced."""
    v.u64[16] = 5
    v.persist(128, 8)  # point 0: nothing recovery cares about is in flight
    v.u64[8] = 7
    v.u64[9] = 8
    v.u64[0] = 1
    v.flush(0, 8)
    v.drain()  # point 1: the flag is flushed, the data line is dirty
    v.u64[24] = 1
    v.persist(192, 8)  # point 2: the flag is durable, the data line still dirty
    # point 3: the end


def _flag_means_data(v: pm.View) -> None:
    if v.u64[0] == 1:
        assert (v.u64[8], v.u64[9]) == (7, 8), "the flag is set but the data is not there"


def _fails(trace: Trace, recover: Callable[[pm.View], object]) -> Callable[[Crash], bool]:
    def fails(crash: Crash) -> bool:
        try:
            check_crash(trace, crash, recover)
        except AssertionError:
            return True
        return False

    return fails


@pytest.fixture(scope="module")
def trace() -> Trace:
    return record(_flag_after_data)


# -- the encoding ------------------------------------------------------------------------


@FAST
@given(st.data())
def test_every_draw_is_a_legal_crash_in_normal_form(data: st.DataObject) -> None:
    t = record(_flag_after_data)
    crash = data.draw(crashes(t))
    assert crash == normalize(t, crash)
    assert 0 <= crash.point < len(t.points)
    state = t.points[crash.point].state
    options = {
        (u.medium_index, u.offset): line.images
        for u, line in zip(state.units, state.lines(), strict=True)
    }
    keys = [(m, off) for m, off, _ in crash.lines]
    assert keys == sorted(set(keys))
    for m, off, alt in crash.lines:
        assert 1 <= alt < options[(m, off)]


def test_every_distinct_image_has_a_crash_the_encoding_can_draw(trace: Trace) -> None:
    """Surjectivity: each image of each point is a normal-form crash whose lines are in the
    alphabet and whose alternatives are within the drawn range."""
    bound = _alternatives_bound(trace)
    count = 0
    for point in trace.points:
        for image in point.state.images():
            crash = crash_for(point, image.deviations)
            assert normalize(trace, crash) == crash
            for m, off, alt in crash.lines:
                assert (m, off) in trace.lines and 1 <= alt <= bound
            assert crash_snapshot(trace, crash).pages == image.snapshot().pages
            count += 1
    assert count == sum(p.state.image_count() for p in trace.points) > len(trace.points)


def test_normalize_clamps_instead_of_rejecting(trace: Trace) -> None:
    last = len(trace.points) - 1
    state = trace.points[last].state
    (n,) = [line.images for line in state.lines() if line.offset == 64]
    far = Crash(99, ((0, 64, 50), (0, 4096 * 7, 3), (0, 0, 0)))
    # Past the end: the last point; past the last alternative: the last one; a line not in
    # flight at the point and a line losing nothing: dropped.
    assert n == 3
    assert normalize(trace, far) == Crash(last, ((0, 64, n - 1),))
    assert normalize(trace, Crash(-3)) == Crash(0)


def test_the_empty_crash_is_everything_persisted_and_the_simplest(trace: Trace) -> None:
    simplest = find(crashes(trace), lambda c: True, settings=FAST)
    assert simplest == Crash(0)
    for p in trace.points:
        got = crash_snapshot(trace, Crash(p.index))
        assert got.read(0, 256) == p.state.persisted_image().read(0, 256)


def test_max_lines_caps_the_lines_of_a_crash(trace: Trace) -> None:
    def two_lines(c: Crash) -> bool:
        return len(c.lines) >= 2

    assert len(find(crashes(trace), two_lines, settings=FAST).lines) == 2
    with pytest.raises(NoSuchExample):
        find(crashes(trace, max_lines=1), two_lines, settings=FAST)


def test_a_run_with_nothing_in_flight_draws_points_only() -> None:
    t = record(lambda v: None)
    assert t.lines == []
    assert find(crashes(t), lambda c: True, settings=FAST) == Crash(0)


@pytest.mark.parametrize(
    "bad, what",
    [({"trace": object()}, "needs a Trace"), ({"max_lines": -1}, "max_lines")],
)
def test_bad_arguments_are_typed_errors(trace: Trace, bad: dict[str, object], what: str) -> None:
    kwargs: dict[str, object] = {"trace": trace, **bad}
    with pytest.raises(pm.InvalidArgumentError, match=what):
        crashes(**kwargs)  # type: ignore[arg-type]


# -- shrinking ---------------------------------------------------------------------------


def test_shrinks_to_the_minimal_crash_the_exact_explorer_reports(trace: Trace) -> None:
    found = find(crashes(trace), _fails(trace, _flag_means_data), settings=FAST)
    # Earliest point where the bug shows (1, not 2 or 3), one line, losing only its last
    # store (alternative 1 of the data line at +0x40).
    assert found == Crash(1, ((0, 64, 1),))
    exact = check(CrashCheck("flag", _flag_after_data, _flag_means_data, expect="inconsistent"))
    assert exact.minimal is not None and exact.minimal.crash == found


def test_shrinking_keeps_every_line_the_bug_needs() -> None:
    def two_halves(v: pm.View) -> None:
        v.u64[8] = 1  # line +0x40
        v.u64[16] = 1  # line +0x80
        v.u64[24] = 1  # line +0xc0, irrelevant
        v.persist(64, 192)

    def one_half_is_enough(v: pm.View) -> None:
        assert v.u64[8] or v.u64[16], "both halves lost"

    t = record(two_halves)
    found = find(crashes(t), _fails(t, one_half_is_enough), settings=FAST)
    assert found == Crash(0, ((0, 64, 1), (0, 128, 1)))


# -- inside @given over the user's own operations ----------------------------------------


def _append_all(values: list[int], *, fixed: bool) -> Callable[[pm.View], None]:
    """A log: entry i at u64[8 + i], the count at u64[0] (line 0)."""

    def work(v: pm.View) -> None:
        for i, x in enumerate(values):
            v.u64[8 + i] = x
            if fixed:
                v.persist(64 + 8 * i, 8)
            v.u64[0] = i + 1
            v.persist(0, 64 + 8 * len(values))

    return work


def _every_counted_entry_is_there(v: pm.View) -> None:
    for i in range(v.u64[0]):
        assert v.u64[8 + i] != 0, f"entry {i} of {v.u64[0]} is missing"


def _log_test(fixed: bool) -> Callable[[], None]:
    @FAST
    @given(st.data())
    def test_log(data: st.DataObject) -> None:
        values = data.draw(st.lists(st.integers(1, 2**64 - 1), min_size=1, max_size=6))
        trace = record(_append_all(values, fixed=fixed))
        crash = data.draw(crashes(trace))
        check_crash(trace, crash, _every_counted_entry_is_there, name="log")

    return test_log


def test_given_finds_the_log_bug_and_reports_the_minimal_case() -> None:
    with pytest.raises(AssertionError, match="entry 0 of 1 is missing") as info:
        _log_test(fixed=False)()
    notes = "\n".join(info.value.__notes__)
    # The shortest operation sequence, the first crash point, the entry's line losing its
    # one store; the notes carry the user's stack and the token that rebuilds the image.
    assert "Draw 1: [1]" in notes
    assert "Draw 2: Crash(point=0, lines=((0, 64, 1),), faults=())" in notes
    assert "pmemsim: log is inconsistent after this crash:" in notes
    assert f"stored at {__file__}:" in notes and "in _append_all.<locals>.work" in notes
    assert "Crash.parse('0:0.40=1')" in notes


def test_given_passes_the_fixed_log() -> None:
    _log_test(fixed=True)()


def test_check_crash_reports_a_false_verdict_as_an_error(trace: Trace) -> None:
    with pytest.raises(CrashConsistencyError) as info:
        check_crash(trace, Crash(1, ((0, 64, 2),)), lambda v: v.u64[8] == 7)
    assert any("lost 2" in n for n in info.value.__notes__)
    check_crash(trace, Crash(1), lambda v: v.u64[8] == 7)  # everything persisted: fine


def test_check_crash_refuses_faults_it_cannot_replay(trace: Trace) -> None:
    with pytest.raises(pm.InvalidArgumentError, match="unsafe_shutdown=True"):
        check_crash(trace, Crash(0, (), ("unsafe_shutdown",)), lambda v: True)
    with pytest.raises(pm.InvalidArgumentError, match="neither unsafe_shutdown nor badblock"):
        check_crash(trace, Crash(0, (), ("meteor",)), lambda v: True)
    with pytest.raises(pm.InvalidArgumentError, match="unsafe_shutdown=True"):
        crashes(trace, faults=("unsafe_shutdown",))
    with pytest.raises(pm.InvalidArgumentError, match="unknown fault"):
        crashes(trace, faults=("meteor",))


# -- faults ------------------------------------------------------------------------------


def _deep_flag(v: pm.View) -> None:
    """Correct against power failures; an unsafe shutdown can take the data (fenced, never
    deep-flushed) while the flag, deep-flushed, stays."""
    v.u64[8] = 7
    v.persist(64, 8)
    v.u64[0] = 1
    v.persist(0, 8)
    v.deep_flush(0, 8)


def _data_if_flag(v: pm.View) -> None:
    assert v.u64[0] == 0 or v.u64[8] == 7, "the flag without its data"


def test_crashes_with_faults_find_what_only_a_fault_breaks() -> None:
    t = record(_deep_flag, unsafe_shutdown=True)
    plain = _fails(t, _data_if_flag)
    with pytest.raises(NoSuchExample):
        find(crashes(t), plain, settings=FAST)
    found = find(crashes(t, faults=("unsafe_shutdown", "badblock")), plain, settings=FAST)
    # The minimal failing crash needs the unsafe shutdown and nothing else.
    assert found.faults == ("unsafe_shutdown",)
    with pytest.raises(AssertionError, match="flag without its data") as info:
        check_crash(t, found, _data_if_flag)
    assert any("unsafe_shutdown" in n for n in info.value.__notes__)


def test_a_bad_block_in_what_recovery_reads_is_drawn_and_replayed() -> None:
    def recover(v: pm.View) -> None:
        v.u64[0]  # a load of the first sector

    t = record(_deep_flag)

    def poisoned(crash: Crash) -> bool:
        try:
            check_crash(t, crash, recover, badblock_policy="keep")
        except pm.PmemError:
            return True
        return False

    found = find(crashes(t, faults=("badblock",)), poisoned, settings=FAST)
    assert found.faults == ("badblock.0",) and found.point == 0
    check_crash(t, found, recover)  # cleared at map time: zeros, and recovery reads them


# -- state machines ----------------------------------------------------------------------


def _log_machine(fixed: bool) -> type:
    from hypothesis.stateful import rule

    from pmemsim.hypothesis import CrashCheckedMachine

    def append(v: pm.View, value: int) -> None:
        n = v.u64[0]
        v.u64[8 + n] = value
        if fixed:
            v.persist(64 + 8 * n, 8)
        v.u64[0] = n + 1
        v.persist(0, 8)

    class Log(CrashCheckedMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model: list[int] = []

        def model_state(self) -> list[int]:
            return list(self.model)

        @rule(value=st.integers(1, 2**64 - 1))
        def add(self, value: int) -> None:
            self.execute(lambda v: append(v, value))
            self.model.append(value)
            assert [self.view.u64[8 + i] for i in range(self.view.u64[0])] == self.model

        def recover(self, view: pm.View, before: list[int], after: list[int]) -> None:
            got = [view.u64[8 + i] for i in range(view.u64[0])]
            assert got in (before, after), f"recovered {got}, not {before} or {after}"

    return Log


def test_a_state_machine_has_every_step_crash_checked() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    machine = settings(FAST, max_examples=20, stateful_step_count=5)
    run_state_machine_as_test(_log_machine(fixed=True), settings=machine)
    with pytest.raises(AssertionError, match=r"recovered \[0\], not \[\] or \[1\]") as info:
        run_state_machine_as_test(_log_machine(fixed=False), settings=machine)
    notes = "\n".join(info.value.__notes__)
    assert "Log, step 1 is inconsistent after this crash" in notes
    assert "crash token: 0:0.40=1 (in step 1)" in notes
    assert notes.count("state.add(") == 1  # shrunk to one step


# -- pmemsim's seed generator under Hypothesis -------------------------------------------


def test_seed_generator_is_seeded_by_hypothesis_for_every_example() -> None:
    seen: list[int] = []

    @FAST
    @given(st.integers())
    def draws(_: int) -> None:
        seen.append(fresh_seed())

    draws()
    # Hypothesis seeds registered generators before every example: one value throughout,
    # however many seeds were drawn outside.
    assert len(seen) > 10 and len(set(seen)) == 1
    outside = {fresh_seed() for _ in range(5)}
    assert len(outside) > 1


def test_the_hypothesis_entry_point_registers_it_without_importing_pmemsim_hypothesis() -> None:
    (ep,) = [e for e in entry_points(group="hypothesis") if e.name == "pmemsim"]
    assert ep.value == "pmemsim.explore.seeding:register_with_hypothesis"
    code = textwrap.dedent(
        """
        import sys
        from hypothesis import given, settings, strategies as st
        from pmemsim.explore.seeding import fresh_seed
        seen = []
        @settings(database=None, derandomize=True, max_examples=20)
        @given(st.integers())
        def t(_):
            seen.append(fresh_seed())
        t()
        assert "pmemsim.hypothesis" not in sys.modules
        print(len(set(seen)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("bad", ["-1", "x", str(2**32), True, ""])
def test_parse_seed_rejects_what_is_not_a_seed(bad: object) -> None:
    with pytest.raises(pm.InvalidArgumentError):
        parse_seed(bad)  # type: ignore[arg-type]


def test_parse_seed_accepts_seeds() -> None:
    assert parse_seed(" 42 ") == 42 and parse_seed(0) == 0
