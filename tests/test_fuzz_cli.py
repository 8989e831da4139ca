"""Random command lines for every subcommand: the exit status is 0, 1 or 2, a user's mistake
never shows a traceback, and the process never dies of a signal.

Hypothesis builds argument lists from a vocabulary of every option, good and bad values
(numbers that overflow, nan and inf, unwritable and missing paths, malformed tokens) and
paths in a private folder. Most runs call ``main`` in this process (fast, output captured);
a few run ``python -m pmemsim`` to see the real exit status. The budget is fixed
(derandomized, so CI runs the same cases every time); PMEMSIM_FUZZ_EXAMPLES raises it.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pmemsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("PMEMSIM_FUZZ_EXAMPLES", "300"))

CHECKS = """
from pmemsim.explore import CrashCheck, FileCrashCheck

def w(v):
    v.u64[8] = 7
    v.u64[0] = 1
    v.persist(0, 72)

def r(v):
    return v.u64[0] == 0 or v.u64[8] == 7

good = CrashCheck("good", w, lambda v: True)
bug = CrashCheck("bug", w, r, expect="inconsistent")
"""

LOG = "START|REGISTER_FILE;{pool};0x10000000;0x1000;0x0|STORE;0x10000000;0x1;0x8|FENCE|STOP\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The private folder, also the current one: a relative word used as a path (``-o 0``,
    ``validate ""``) writes there, not into the checkout."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "checks.py").write_text(textwrap.dedent(CHECKS))
    (d / "broken.py").write_text("raise RuntimeError('broken on import')\n")
    (d / "empty.py").write_text("x = 1\n")
    (d / "store.log").write_text(LOG.format(pool=d / "pool.bin"))
    (d / "out").mkdir()
    before = os.getcwd()
    os.chdir(d)
    try:
        yield d
    finally:
        os.chdir(before)


def _words(d: Path) -> list[str]:
    checks = str(d / "checks.py")
    return [
        # subcommand options
        "-k", "--select", "--strategy", "--crash-points", "--recovery-depth", "--max-images",
        "--seed", "--jobs", "--json", "--junit-xml", "--html", "--color", "-q", "-v",
        "--version", "--help", "--dir", "--scenarios", "--granularity", "--force-granularity",
        "--backend", "--keep", "--engine", "--marker-engine", "-x", "--timeout", "--replay",
        "--image-out", "--checker-py", "--recovery", "--base-image", "-o", "--output",
        "--pool", "--base", "--no-frames", "--write-pool", "--scenario", "--",
        # numbers, good and bad
        "0", "1", "2", "-1", "3", "99999999999999999999999", "nan", "inf", "-inf", "1e309",
        "0x10", "1.5", "", " ",
        # names and expressions
        "exhaustive", "extremes", "random:3", "random:-1", "bounded:2", "bogus", "lazy",
        "none", "barriers", "operations", "markers", "cache_line", "byte", "page", "huge",
        "sim", "real", "always", "never", "auto", "good", "bug", "good and not bug",
        "(", "not", "cmap", "append_log: correct", "unsafe_shutdown", "x=ReorderFull",
        "ReorderFull", "m=bogus",
        # paths: the private folder's files, and ones that cannot be used
        checks, str(d / "broken.py"), str(d / "empty.py"), str(d), str(d / "store.log"),
        str(d / "out"), str(d / "out" / "r.json"), str(d / "out" / "r.xml"),
        str(d / "out" / "r.html"), str(d / "out" / "x.log"), str(d / "missing.py"),
        "/proc/pmemsim.json", "/no/such/folder/r.json", "/dev/null",
        str(ROOT / "scenarios" / "append_log.py"),
        # replay tokens and references
        f"{checks}::bug@0:0.40=1", f"{checks}::bug@0:", f"{checks}::bug@99:",
        f"{checks}::bug@0:7.40=1", f"{checks}::nope@0:", f"{checks}::good", "log@0:0.40=1",
        "@", "::", f"{checks}::bug", "0:0.40=1", "0/unsafe_shutdown:", "0:zz",
        f"{checks}:r", "json:loads", "true", "false", "/nonexistent/checker",
        # oddities
        "é", "-", "--=", "-kk", "--jobs=0", "--seed=-3", "--timeout=nan",
    ]  # fmt: skip


def _grammar(d: Path) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """Per subcommand: good positional arguments, and each option with good values ([] for
    a flag)."""
    checks = str(d / "checks.py")
    paths = [str(d / "out" / n) for n in ("r.json", "r.xml", "r.html", "x.log", "pool.bin")]
    paths += ["/proc/pmemsim.out", "/no/such/folder/r.out", str(d / "out"), "/dev/null"]
    scenario_paths = [checks, str(d / "broken.py"), str(d / "empty.py"), str(d)]
    numbers = ["0", "1", "2", "3"]
    tokens = [f"{checks}::bug@0:0.40=1", f"{checks}::bug@0:", f"{checks}::bug@9:", "0:0.40=1"]
    return {
        "check": (
            scenario_paths,
            {
                "-k": ["good", "bug", "good and not bug", "nothing", "(good"],
                "--strategy": ["exhaustive", "extremes", "random:3", "bounded:1", "bogus"],
                "--crash-points": ["barriers", "operations", "markers"],
                "--recovery-depth": numbers,
                "--max-images": numbers,
                "--seed": numbers,
                "--jobs": ["1", "2"],
                "--json": paths,
                "--junit-xml": paths,
                "--html": paths,
                "--color": ["always", "never", "auto"],
                "-q": [],
                "-v": [],
            },
        ),
        "replay": (tokens, {"--html": paths}),
        "info": ([], {"--dir": [str(d), str(d / "out")], "--json": []}),
        "validate": (
            [str(d / "out")],
            {
                "--scenarios": scenario_paths,
                "--granularity": ["page", "cache_line", "byte"],
                "--force-granularity": ["page", "cache_line", "byte"],
                "--backend": ["sim", "real"],
                "--json": paths,
                "--keep": [],
                "-k": ["good", "bug"],
            },
        ),
        "check-log": (
            [str(d / "store.log")],
            {
                "--checker-py": [f"{checks}:r", "json:loads"],
                "--recovery": [f"{checks}::bug", f"{checks}::good"],
                "--engine": ["exhaustive", "ReorderFull", "ReorderPartial", "bogus"],
                "-x": ["m=ReorderFull", "m=bogus"],
                "--jobs": ["1", "2"],
                "--seed": numbers,
                "--crash-points": ["barriers", "operations"],
                "--max-images": numbers,
                "--timeout": ["1", "0.5", "nan", "inf", "-1", "0"],
                "--json": paths,
                "--replay": ["0:", "0:0.0=1", "5:"],
                "--image-out": paths,
                "--base-image": [str(d / "out" / "pool.bin")],
            },
        ),
        "export-log": (
            scenario_paths,
            {
                "-k": ["good", "bug"],
                "--scenario": [f"{checks}::bug", f"{checks}::nope"],
                "-o": paths,
                "--pool": paths,
                "--base": ["0x10000000", "0", "-1"],
                "--no-frames": [],
                "--write-pool": [],
            },
        ),
    }


@st.composite
def command_lines(draw: st.DrawFn, d: Path) -> list[str]:
    """A subcommand with, mostly, arguments and options of the right kinds (so that most
    lines get past the parser), each value sometimes replaced by anything at all."""
    words = _words(d)
    grammar = _grammar(d)
    command = draw(st.sampled_from([*grammar, "bogus"]))
    if command == "bogus" or not draw(st.integers(0, 9)):
        return [command, *draw(st.lists(st.sampled_from(words), max_size=6))]
    positional, options = grammar[command]

    def value(good: list[str]) -> str:
        return draw(st.sampled_from(good if good and draw(st.integers(0, 3)) else words))

    argv = [command]
    if positional and draw(st.integers(0, 9)):
        argv.append(value(positional))
    chosen = draw(st.lists(st.sampled_from(sorted(options)), max_size=4))
    # What the command needs to get going, most of the time.
    needed = {"export-log": ["-o", "-k"], "check-log": ["--checker-py"]}.get(command, [])
    for option in needed:
        if option not in chosen and draw(st.integers(0, 4)):
            chosen.append(option)
    for option in chosen:
        argv.append(option)
        if options[option]:
            argv.append(value(options[option]))
    if command == "check-log" and draw(st.booleans()):
        argv += ["--", draw(st.sampled_from(["true", "false", "/nonexistent/checker"]))]
    return argv


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own exit (usage, --help, --version)
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _mistakes(err: str) -> str:
    """stderr without what replay shows on purpose: the traceback of the user's recovery
    failing on the image it rebuilt."""
    if err.rstrip().endswith("failed") and "recovery on the image of crash" in err:
        return ""
    return err


# Pinned: every option that names a file to write, with a path that cannot be written, on a
# command line that is otherwise right. Each must be refused before any work (exit 2, a
# message, nothing written), never a traceback after the work.
UNWRITABLE = ["/proc/pmemsim.out", "/no/such/folder/out"]


def _writers(d: Path) -> list[list[str]]:
    checks = str(d / "checks.py")
    return [
        ["check", checks, "--json"],
        ["check", checks, "--junit-xml"],
        ["check", checks, "--html"],
        ["replay", f"{checks}::bug@0:0.40=1", "--html"],
        ["validate", str(d / "out"), "--backend", "sim", "--scenarios", checks, "--json"],
        ["check-log", str(d / "store.log"), "--checker-py", f"{checks}:r", "--json"],
        ["check-log", str(d / "store.log"), "--checker-py", f"{checks}:r", "--replay", "0:",
         "--image-out"],
        ["export-log", checks, "-k", "bug", "-o"],
        ["export-log", checks, "-k", "bug", "-o", str(d / "out" / "x.log"), "--write-pool",
         "--pool"],
    ]  # fmt: skip


@pytest.mark.parametrize("where", UNWRITABLE)
@pytest.mark.parametrize("i", range(9))
def test_an_output_path_that_cannot_be_written_is_refused_first(
    folder: Path, i: int, where: str
) -> None:
    argv = [*_writers(folder)[i], where]
    code, out, err = _main(argv)
    assert (code, out) == (2, ""), (argv, code, out, err)
    assert where in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "x"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(
    folder: Path, value: str
) -> None:
    argv = ["check-log", str(folder / "store.log"), "--timeout", value, "--", "true"]
    code, out, err = _main(argv)
    assert (code, out) == (2, ""), (argv, code, out, err)
    assert "--timeout" in err


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_random_command_lines_in_process(folder: Path, data: st.DataObject) -> None:
    argv = data.draw(command_lines(folder))
    code, _, err = _main(argv)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in _mistakes(err), (argv, err)
    if code == 2 and argv[0] != "bogus" and "--help" not in argv:
        assert err.strip(), f"exit 2 without a message: {argv}"


@settings(FUZZ, max_examples=max(8, EXAMPLES // 25))
@given(data=st.data())
def test_random_command_lines_in_a_process(folder: Path, data: st.DataObject) -> None:
    argv = data.draw(command_lines(folder))
    proc = subprocess.run(
        [sys.executable, "-m", "pmemsim", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=folder,
    )
    assert proc.returncode in (0, 1, 2), (argv, proc.returncode, proc.stderr)
    assert "Traceback" not in _mistakes(proc.stderr), (argv, proc.stderr)
