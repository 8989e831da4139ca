"""The pytest plugin (pmemsim.pytest_plugin), run inside pytester sessions.

The plugin is installed through its pytest11 entry point, so every inner session (and this
suite itself) loads it without ``-p``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

# Imported here once: pytester drops what an inner session imports, and Hypothesis'
# plugin and the crash check would otherwise import (and assertion-rewrite) them afresh in
# every inner session, at about a second each.
import hypothesis  # noqa: F401
import pytest

import pmemsim.pytest_plugin as plugin

# (pmemsim.explore imports all its modules at the first use of one of its names.)
from pmemsim.explore import CrashCheck  # noqa: F401

pytest_plugins = ["pytester"]

# A workload whose flag (line 0) can persist before its data (line +0x40): the eviction bug.
WORKLOADS = """
import pytest


def bug(v):
    v.u64[8] = 7
    v.u64[0] = 1
    v.persist(0, 72)


def fixed(v):
    v.u64[8] = 7
    v.persist(64, 8)
    v.u64[0] = 1
    v.persist(0, 8)


def recover(v):
    assert v.u64[0] == 0 or v.u64[8] == 7, "flag without data"
"""


def _line_of(text: str, code: str) -> int:
    """The line number of ``code`` in a file pytester made from ``text``."""
    return textwrap.dedent(text).strip().splitlines().index(code) + 1


def _header(result: pytest.RunResult) -> str:
    # Only the session header: on CI pytest prints failure messages (which may start with
    # "pmemsim:") in full in the short summary.
    (line,) = [ln for ln in result.outlines if ln.startswith("pmemsim: backend=")]
    return line


def _seed(result: pytest.RunResult) -> int:
    m = re.fullmatch(r"pmemsim: backend=\w+ seed=(\d+)", _header(result))
    assert m is not None
    return int(m[1])


@pytest.fixture
def passing(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_ok="def test_ok(pmemsim_seed):\n    print('SEED', pmemsim_seed)\n")
    return pytester


# -- installation ------------------------------------------------------------------------


def test_installed_as_a_pytest11_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "pmemsim"]
    assert ep.value == "pmemsim.pytest_plugin"


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, pmemsim.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'cffi', 'hypothesis', 'pmemsim_backends'} or m.startswith('pmemsim.explore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_autoloaded_in_a_fresh_process(passing: pytest.Pytester) -> None:
    result = passing.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    assert _header(result) == "pmemsim: backend=sim seed=0"
    result.stdout.fnmatch_lines(["*SEED 0*"])


def test_help_shows_the_option_group_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--help")
    result.stdout.fnmatch_lines(
        ["pmemsim: persistent-memory crash testing:", "*--pmemsim-backend*", "*--pmemsim-seed*"]
    )
    result.stdout.fnmatch_lines(["*pmemsim_backend (string):*"])


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.crash_consistency()\ndef test_marked():\n    pass\n"
    )
    pytester.runpytest_inprocess("--strict-markers").assert_outcomes(passed=1)
    pytester.runpytest_inprocess("--markers").stdout.fnmatch_lines(
        ["@pytest.mark.crash_consistency(**options):*"]
    )


# -- backend -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ini, cli, expected",
    [
        (None, [], "sim"),
        ("real", [], "real"),
        ("real", ["--pmemsim-backend=sim"], "sim"),
        ("sim", ["--pmemsim-backend=real"], "real"),
    ],
)
def test_backend_precedence_cli_then_ini_then_sim(
    passing: pytest.Pytester, ini: str | None, cli: list[str], expected: str
) -> None:
    if ini is not None:
        passing.makeini(f"[pytest]\npmemsim_backend = {ini}\n")
    result = passing.runpytest_inprocess(*cli)
    assert result.ret == 0
    assert _header(result) == f"pmemsim: backend={expected} seed=0"


def test_a_bad_backend_is_a_usage_error(passing: pytest.Pytester) -> None:
    passing.makeini("[pytest]\npmemsim_backend = cuda\n")
    result = passing.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pmemsim_backend = 'cuda'*expected one of sim, real*"])
    bad_cli = passing.runpytest_inprocess("--pmemsim-backend=cuda")
    assert bad_cli.ret == pytest.ExitCode.USAGE_ERROR


PMEM_SET_TEST = f"""
import pmemsim


def test_set(pmem_set):
    v = pmem_set.view()
    assert len(v) == {plugin.PMEM_SET_SIZE}
    assert v.read(0, {plugin.PMEM_SET_SIZE}) == bytes({plugin.PMEM_SET_SIZE})
    v.u64[3] = 0xABCD
    v.persist(24, 8)
    assert v.u64[3] == 0xABCD
    print("GRANULARITY", pmem_set.granularity.name)
"""


def test_pmem_set_on_the_simulator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PMEM_SET_TEST)
    result = pytester.runpytest_inprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*GRANULARITY CACHE_LINE*"])


def test_pmem_set_on_libpmem2(pytester: pytest.Pytester) -> None:
    import pmemsim_backends.real as real

    reason = real.unavailable_reason()
    if reason:
        pytest.skip(f"libpmem2 is not usable here: {reason}")
    pytester.makepyfile(PMEM_SET_TEST)
    result = pytester.runpytest_inprocess("-s", "--pmemsim-backend=real")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*GRANULARITY BYTE*"])  # anonymous memory on libpmem2


def test_pmem_set_skips_with_the_reason_when_the_backend_is_unavailable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pmemsim_backends.real as real

    monkeypatch.setattr(real, "unavailable_reason", lambda: "libpmem2.so.1 not found (test)")
    pytester.makepyfile(PMEM_SET_TEST)
    result = pytester.runpytest_inprocess("-rs", "--pmemsim-backend=real")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*backend 'real': libpmem2.so.1 not found (test)*"])


# -- seed --------------------------------------------------------------------------------


def test_an_explicit_seed_reaches_header_and_fixture(passing: pytest.Pytester) -> None:
    result = passing.runpytest_inprocess("-s", "--pmemsim-seed=7")
    result.assert_outcomes(passed=1)
    assert _header(result) == "pmemsim: backend=sim seed=7"
    result.stdout.fnmatch_lines(["*SEED 7*"])


def test_a_random_seed_is_printed_and_replayed_by_last(passing: pytest.Pytester) -> None:
    first = passing.runpytest_inprocess("-s", "--pmemsim-seed=random")
    seed = _seed(first)
    first.stdout.fnmatch_lines([f"*SEED {seed}*"])
    again = passing.runpytest_inprocess("-s", "--pmemsim-seed=last")
    assert _seed(again) == seed
    again.stdout.fnmatch_lines([f"*SEED {seed}*"])
    # A random choice really is one: another run picks another seed (1 in 2**32 to clash).
    assert _seed(passing.runpytest_inprocess("--pmemsim-seed=random")) != seed
    # Every run saves its seed, explicit ones too.
    passing.runpytest_inprocess("--pmemsim-seed=12")
    assert _seed(passing.runpytest_inprocess("--pmemsim-seed=last")) == 12


@pytest.mark.parametrize("value", ["-1", "seven", str(2**32), "1.5"])
def test_a_bad_seed_is_a_usage_error(passing: pytest.Pytester, value: str) -> None:
    result = passing.runpytest_inprocess(f"--pmemsim-seed={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--pmemsim-seed=*expected an integer in [[]0, 4294967296)*"])


def test_last_without_a_saved_seed_is_a_usage_error(passing: pytest.Pytester) -> None:
    result = passing.runpytest_inprocess("--pmemsim-seed=last")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--pmemsim-seed=last: no seed saved yet"])
    off = passing.runpytest_inprocess("-p", "no:cacheprovider", "--pmemsim-seed=last")
    assert off.ret == pytest.ExitCode.USAGE_ERROR
    off.stderr.fnmatch_lines(["*no seed saved yet (the cacheprovider plugin is disabled)"])


def test_random_works_without_the_cache(passing: pytest.Pytester) -> None:
    result = passing.runpytest_inprocess("-p", "no:cacheprovider", "--pmemsim-seed=random")
    result.assert_outcomes(passed=1)
    _seed(result)


# -- crash_check and the marker ----------------------------------------------------------


def test_a_crash_bug_fails_with_the_minimal_crash(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_crash=WORKLOADS
        + """
@pytest.mark.crash_consistency()
def test_bug(crash_check):
    crash_check(bug, recover)


def test_fixed(crash_check):
    result = crash_check(fixed, recover)
    assert result.verdict == "consistent" and result.exact and result.images_checked > 1
"""
    )
    result = pytester.runpytest_inprocess("--pmemsim-seed=3")
    result.assert_outcomes(passed=1, failed=1)
    fence = _line_of(WORKLOADS, "    v.persist(0, 72)")
    store = _line_of(WORKLOADS, "    v.u64[8] = 7")
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: flag without data",
            "*pmemsim: test_bug is inconsistent after this crash:",
            f"*crash point 0, before the fence at *test_crash.py:{fence} in bug:",
            "*line +0x40: 1 store(s) in flight, lost 1",
            f"*+0x40 (8 bytes) stored at *test_crash.py:{store} in bug",
            "*replay: pytest test_crash.py::test_bug --pmemsim-replay=0:0.40=1",
            "*pmemsim: rerun the test with: pytest test_crash.py::test_bug --pmemsim-seed=3",
        ]
    )
    assert "pmemsim replay" not in result.stdout.str()


def test_expect_inconsistent_pins_a_known_bug(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_pin=WORKLOADS
        + """
@pytest.mark.crash_consistency(expect="inconsistent")
def test_still_buggy(crash_check):
    result = crash_check(bug, recover)
    assert result.minimal.crash.point == 0


@pytest.mark.crash_consistency(expect="inconsistent")
def test_not_buggy(crash_check):
    crash_check(fixed, recover)
"""
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: expected an inconsistent crash, found none*"])


def test_options_come_from_the_call_then_the_marker_then_the_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_opts=WORKLOADS
        + """
def test_defaults(crash_check):
    r = crash_check(fixed, recover)
    assert (r.strategy, r.seed) == ("lazy", 11)


@pytest.mark.crash_consistency(strategy="random:3", max_images=64)
def test_marker(crash_check):
    r = crash_check(fixed, recover)
    assert (r.strategy, r.seed) == ("random:3", 11)


@pytest.mark.crash_consistency(strategy="random:3", seed=5)
def test_call_over_marker(crash_check):
    r = crash_check(fixed, recover, strategy="extremes")
    assert (r.strategy, r.seed) == ("extremes", 5)


@pytest.mark.crash_consistency(granularity="byte", crash_points="operations")
def test_eadr_has_no_bug(crash_check):
    # With caches in the power-fail domain the data is durable before the flag is stored.
    r = crash_check(bug, recover)
    assert r.crash_points > 3


@pytest.mark.crash_consistency(jobs=2, size=8192)
def test_jobs(crash_check):
    crash_check(fixed, recover)
"""
    )
    pytester.runpytest_inprocess("--pmemsim-seed=11").assert_outcomes(passed=5)


def test_bad_marker_options_are_clear_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad=WORKLOADS
        + """
@pytest.mark.crash_consistency(bogus=1)
def test_unknown(crash_check):
    pass


@pytest.mark.crash_consistency("exhaustive")
def test_positional(crash_check):
    pass


@pytest.mark.crash_consistency(granularity="huge")
def test_granularity(crash_check):
    pass


def test_call(crash_check):
    crash_check(fixed, recover, colour="red")
"""
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*InvalidArgumentError*unknown option(s) bogus; known: strategy, size*",
            "*InvalidArgumentError*takes keyword options only*",
            "*InvalidArgumentError*granularity 'huge' is not one of BYTE, CACHE_LINE, PAGE*",
            "*InvalidArgumentError*crash_check(): unknown option(s) colour*",
        ],
        consecutive=False,
    )


def test_a_failure_replays_with_the_line_it_prints(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_crash=WORKLOADS + "\ndef test_bug(crash_check):\n    crash_check(bug, recover)\n"
    )
    first = pytester.runpytest_inprocess()
    first.assert_outcomes(failed=1)
    line = re.search(r"replay: pytest (\S+) (--pmemsim-replay=\S+)", first.stdout.str())
    assert line is not None
    # Run as printed: only that crash, the same exception.
    again = pytester.runpytest_inprocess(line[1], line[2])
    again.assert_outcomes(failed=1)
    assert _header(again) == "pmemsim: backend=sim seed=0 replay=0:0.40=1"
    again.stdout.fnmatch_lines(
        [
            "*AssertionError: flag without data",
            "*line +0x40: 1 store(s) in flight, lost 1",
            "*replay: pytest test_crash.py::test_bug --pmemsim-replay=0:0.40=1",
        ]
    )
    # After the fix, the same line passes; a crash the run does not have is an error.
    pytester.makepyfile(
        test_crash=WORKLOADS + "\ndef test_bug(crash_check):\n    crash_check(fixed, recover)\n"
    )
    pytester.runpytest_inprocess(line[1], line[2]).assert_outcomes(passed=1)
    bad = pytester.runpytest_inprocess(line[1], "--pmemsim-replay=nonsense")
    bad.assert_outcomes(failed=1)
    bad.stdout.fnmatch_lines(["*InvalidArgumentError*not a crash token*"])


def test_the_marker_takes_faults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marker_faults="""
import pytest


def work(v):
    v.u64[8] = 7
    v.persist(64, 8)      # fenced, not deep-flushed
    v.u64[0] = 1
    v.persist(0, 8)
    v.deep_flush(0, 8)    # the flag reaches the media; its data may not


def recover_durable(v):
    assert v.u64[0] == 0 or v.u64[8] == 7, "flag without data"


def test_power_failures_only(crash_check):
    crash_check(work, recover_durable)


@pytest.mark.crash_consistency(faults=("unsafe_shutdown",), expect="inconsistent")
def test_unsafe_shutdown_loses_it(crash_check):
    r = crash_check(work, recover_durable)
    assert r.minimal.crash.faults == ("unsafe_shutdown",)
"""
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=2)


PROGRAM = """
import pmemsim as pm


def write(backend, folder):
    src = pm.Source.from_file(folder / "pool", pm.SourceFlag.CREATE_IF_NEEDED)
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=backend)) as s:
        v = s.view(s.map(pm.Part(src, 0, 4096)))
        v.u64[8] = 7
        v.u64[0] = 1
        v.persist(0, 72)  # BUG: one fence for the flag and its data
    src.close()


def read(backend, folder):
    src = pm.Source.from_file(folder / "pool", pm.SourceFlag.DO_NOT_GROW)
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=backend)) as s:
        v = s.view(s.map(pm.Part(src, 0, 4096)))
        assert v.u64[0] == 0 or v.u64[8] == 7, "flag without data"
    src.close()
"""


def test_crash_check_runs_programs_over_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_files=PROGRAM
        + """

import pytest
from pmemsim.explore import FileCrashCheck


def test_functions(crash_check):
    crash_check(write, read, files=True)


@pytest.mark.crash_consistency(files=True, expect="inconsistent")
def test_marker(crash_check):
    assert crash_check(write, read).minimal is not None


def test_prepared(crash_check):
    r = crash_check(FileCrashCheck("prepared", write, read), expect="inconsistent")
    assert r.name == "prepared"


def test_size_is_not_an_option_for_files(crash_check):
    crash_check(write, read, files=True, size=8192)
"""
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: flag without data",
            "*files: 0 pool*",
            "*unknown option(s) size for a FileCrashCheck; known: strategy, granularity*",
        ],
        consecutive=False,
    )


def test_several_distinct_failures_come_back_as_a_group(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_group="""
def two_bugs(v):
    v.u64[8] = 7      # data A, line +0x40
    v.u64[16] = 9     # data B, line +0x80
    v.u64[0] = 1      # flag, line 0
    v.persist(0, 136)


def recover(v):
    if v.u64[0] == 1:
        if v.u64[8] != 7:
            raise KeyError("A lost")
        if v.u64[16] != 9:
            raise ValueError("B lost")


def test_group(crash_check):
    crash_check(two_bugs, recover)
"""
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "ExceptionGroup: test_group: 2 distinct crash-consistency failures" in out
    assert "KeyError: 'A lost'" in out and "ValueError: B lost" in out
    assert "--pmemsim-replay=0:0.40=1" in out and "--pmemsim-replay=0:0.80=1" in out
    assert "pmemsim replay" not in out
    assert "pmemsim: rerun the test with: pytest test_group.py::test_group --pmemsim-seed=0" in out


def test_this_suite_runs_with_the_plugin_loaded(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("pmemsim")
    assert re.fullmatch(
        r"pmemsim: backend=(sim|real) seed=\d+", plugin.pytest_report_header(pytestconfig)
    )


def test_the_documented_examples_behave_as_documented(pytester: pytest.Pytester) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "hypothesis-pytest.md").read_text()
    log, machine, counter, publish = re.findall(r"```python\n(.*?)```", doc, re.S)
    pytester.makeconftest(
        """
from hypothesis import Phase, settings

settings.register_profile(
    "fast",
    database=None,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
settings.load_profile("fast")
"""
    )
    pytester.makepyfile(
        test_log=log, test_machine=machine, test_counter=counter, test_publish=publish
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=3)
    out = result.stdout.str()
    shown = doc.split("shrinks the failure to one step", 1)[1].split("```")[1]
    relative = out.replace(f"{pytester.path}/", "")
    for line in shown.strip().splitlines():
        if line != "...":
            assert line.strip() in relative, line
    assert "AssertionError: entry 0 of 1 is missing" in out and "Draw 1: [1]" in out
    assert "Draw 2: Crash(point=0, lines=((0, 64, 1),), faults=())" in out
    assert "Crash.parse('0:0.40=1')" in out
    assert "rerun the test with: pytest test_publish.py::test_publish --pmemsim-seed=0" in out
    assert "replay: pytest test_publish.py::test_publish --pmemsim-replay=0:0.40=1" in out
