"""The command line's library worker: a new interpreter started before the arguments are
parsed (:func:`pmemsim.pmlog.forked.start_early`), taken by the check that names the same
library, ended when no check takes it; and the exit without tearing the interpreter down
when the checker is C code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SAYS_WHO, c_library

from pmemsim.cli import _c_checker
from pmemsim.pmlog import forked
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
LOG = (
    f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x1000;0x0|"
    f"STORE;0x{BASE:x};0x1;0x8|STORE;0x{BASE + 64:x};0x2;0x8|FLUSH;0x{BASE:x};0x80|FENCE|STOP\n"
)
#: Takes 30 s to load: a worker that no check takes outlives the command unless ended.
SLOW_TO_LOAD = r"""
#include <unistd.h>
__attribute__((constructor)) static void slow(void) { sleep(30); }
int check(const char *path) { return 1; }
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command's status and output, once it exited (its output goes to files: a pipe
    would also wait for any process left holding it)."""
    with open(cwd / "out.txt", "w+") as out, open(cwd / "err.txt", "w+") as err:
        done = subprocess.run(
            [sys.executable, "-m", "pmemsim", *args], stdout=out, stderr=err, cwd=cwd, timeout=120
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())


def _processes_naming(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(pid))
    return found


def _gone(text: str) -> None:
    """No process names ``text`` on its command line within 5 s (killed ones take a moment)."""
    deadline = time.monotonic() + 5
    while _processes_naming(text) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(text) == []


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["check-log", "x.log", "--checker-lib", "a.so:f"], ("a.so:f", True)),
        (["check-log", "x.log", "--checker-lib=a.so:f"], ("a.so:f", True)),
        (
            ["check-log", "--checker-lib", "a.so:f", "x.log", "--checker-lib", "b.so:g"],
            ("b.so:g", True),
        ),
        (["check-log", "x.log", "--", "prog", "--checker-lib", "a.so:f"], (None, True)),
        (["check-log", "x.log", "--checker-py", "m:f"], (None, False)),
        (["check-log", "x.log", "--recovery", "f.py::c"], (None, False)),
        (["check", "scenarios", "--checker-lib", "a.so:f"], (None, False)),
        ([], (None, False)),
    ],
)
def test_the_c_checker_is_read_from_the_command_line(
    argv: list[str], want: tuple[str | None, bool]
) -> None:
    assert _c_checker(argv) == want


def test_the_command_lines_library_worker_is_a_new_interpreter(tmp_path: Path) -> None:
    """The check-log command judges with the worker it spawned at its start (its command line
    is pmemsim's bootstrap, not a copy of pmemsim's own), with the verdicts a forked worker
    gives."""
    lib = c_library(tmp_path, SAYS_WHO)
    (tmp_path / "x.log").write_text(LOG)
    out = tmp_path / "r.json"
    done = _cli(
        "check-log", "x.log", "--checker-lib", f"{lib}:check", "--json", str(out), cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    # Written to files, and whole (the command exits without tearing Python down).
    assert "INCONSISTENT" in done.stdout.splitlines()[1], done.stdout
    report = json.loads(out.read_text())
    said = report["minimal"]["checker"]
    assert "pmemsim.pmlog.serve" in said and " -S " in said, said
    # The same check in this process, its checker not parsed (no spare worker): its worker is
    # a fork of pytest, with the same verdicts.
    forked_result = check_log(Replay.of(parse_log(LOG)), LibChecker(str(lib), "check"))
    assert forked_result.minimal is not None
    assert "pmemsim.pmlog.serve" not in forked_result.minimal.verdict
    assert forked_result.inconsistent == report["inconsistent"]
    assert forked_result.images_checked == report["images_checked"]
    assert forked_result.minimal.token == report["minimal"]["token"]


def test_a_worker_no_check_takes_is_ended(tmp_path: Path) -> None:
    """A usage error after the worker was started (two checkers named): the worker, still in
    its library's 30-second constructor, is ended with the command."""
    lib = c_library(tmp_path, SLOW_TO_LOAD, "slow")
    (tmp_path / "x.log").write_text(LOG)
    (tmp_path / "ck.py").write_text("def ok(image):\n    return True\n")
    done = _cli(
        "check-log", "x.log", "--checker-lib", f"{lib}:check", "--checker-py", "ck.py:ok",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and "name one checker" in done.stderr
    assert "Traceback" not in done.stderr
    _gone(str(lib))


def test_a_check_takes_the_early_worker_of_its_library(tmp_path: Path) -> None:
    lib = c_library(tmp_path, SAYS_WHO)
    spec = f"{lib}:check"
    forked.start_early(spec)
    try:
        assert len(forked._EARLY) == 1
        checker = LibChecker.parse(spec)
        assert forked._EARLY == {}
        result = check_log(Replay.of(parse_log(LOG)), checker)
    finally:
        forked.end_early()
    assert result.minimal is not None and "pmemsim.pmlog.serve" in result.minimal.verdict
    assert _processes_naming(str(lib))  # kept for the next check with the checker
    checker.close()
    _gone(str(lib))


def test_where_none_can_be_spawned_the_worker_is_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = c_library(tmp_path, SAYS_WHO)
    monkeypatch.setattr(forked, "_spawnable", lambda: False)
    forked.start_early(f"{lib}:check")
    assert forked._EARLY == {}
    result = check_log(Replay.of(parse_log(LOG)), LibChecker.parse(f"{lib}:check"))
    assert result.minimal is not None and "pmemsim.pmlog.serve" not in result.minimal.verdict


def test_a_library_that_does_not_load_in_the_early_worker_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.log").write_text(LOG)
    for spec, said in (
        (f"{tmp_path}/nothing.so:check", "cannot open shared object file"),
        (f"{c_library(tmp_path, SAYS_WHO)}:nope", "has no function 'nope'"),
    ):
        done = _cli("check-log", "x.log", "--checker-lib", spec, cwd=tmp_path)
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr


def test_the_spawned_worker_imports_little() -> None:
    """The new interpreter imports serve.py and what it needs, none of pmemsim's packages or
    of Python's heavier modules (each would lengthen the worker's start, on the check's path
    when the machine is busy)."""
    from pmemsim.pmlog import serve

    package = os.path.dirname(os.path.dirname(os.path.abspath(serve.__file__)))
    boot = serve.BOOT.replace("spawned(sys.argv[2:])", "")
    done = subprocess.run(
        [sys.executable, "-E", "-S", "-B", "-X", "importtime", "-c", boot, package],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "pmemsim.pmlog.serve" in imported
    heavy = {"typing", "enum", "functools", "collections", "contextlib", "re", "signal", "ctypes"}
    heavy |= {"os", "stat", "posixpath", "_collections_abc"}  # (os: 6.4M instructions)
    assert sorted(imported & heavy) == []
    assert sorted(m for m in imported if m.startswith("pmemsim")) == [
        "pmemsim.explore.frames",
        "pmemsim.pmlog.clib",
        "pmemsim.pmlog.imagefile",
        "pmemsim.pmlog.serve",
    ]


@pytest.mark.parametrize("why", ["PYTHONHOME", "frozen", "no executable", "old glibc", "not glibc"])
def test_no_worker_is_spawned_where_one_would_not_start(
    why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a new interpreter could not run pmemsim's bootstrap (a PYTHONHOME that -E
    would drop, a frozen application, a C library that keeps the descriptors from it), the
    worker is forked instead."""
    assert forked._spawnable()
    if why == "PYTHONHOME":
        monkeypatch.setenv("PYTHONHOME", sys.prefix)
    elif why == "frozen":
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    elif why == "no executable":
        monkeypatch.setattr(sys, "executable", "")
    else:
        said = "glibc 2.28" if why == "old glibc" else "musl 1.2"
        monkeypatch.setattr(os, "confstr", lambda name: said)
    assert not forked._spawnable()
    assert forked.spawn_worker("/nothing.so", "check") is None
