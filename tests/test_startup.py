"""Start-up (issue 16): a fresh ``pmemsim check-log`` imports only what the command uses.

Checked by module, not by time: ``python -X importtime`` lists every module a process
imports, so a change that drags the simulator, the set layer or the exploration engine back
into check-log's start-up fails here whatever the machine's speed (bench/README.md has the
timings). Each run's output is compared too: the lighter start-up must not change it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: What no check-log run imports, whatever its checker: the simulator backend (a log is
#: replayed without it), the set layer, the exploration engine, the other commands, and
#: the optional heavy packages.
NEVER = {
    "pmemsim_backends.sim.backend",
    "pmemsim_backends.sim.machine",
    "pmemsim_backends.sim.device",
    "pmemsim.backend",
    "pmemsim.config",
    "pmemsim.events",
    "pmemsim.part",
    "pmemsim.set",
    "pmemsim.source",
    "pmemsim.view",
    "pmemsim.explore.budget",
    "pmemsim.explore.checks",
    "pmemsim.explore.engine",
    "pmemsim.explore.executor",
    "pmemsim.explore.files",
    "pmemsim.explore.judges",
    "pmemsim.explore.recovery",
    "pmemsim.explore.replaying",
    "pmemsim.explore.workers",
    "pmemsim.cli.check",
    "pmemsim.cli.discover",
    "pmemsim.cli.info",
    "pmemsim.cli.record",
    "pmemsim.cli.validate",
    "pmemsim.distributed.executor",
    "pmemsim.pmlog.pmemcheck",
    "cffi",
    "hypothesis",
    "multiprocessing",
    # OpenSSL, loaded by hashlib: the digests are BLAKE2b, CPython's own (pmemsim.digest).
    "_hashlib",
    "hashlib",
    # The standard dataclasses and the inspect module they import (5 ms); and 16 ms to make
    # check-log's classes: they are pmemsim._dataclass's.
    "dataclasses",
    "inspect",
}
#: Only when asked for (--json, --html).
ON_REQUEST = {"json", "pmemsim.html"}
#: Only for checkers that are not Python functions run here (programs run from threads,
#: libraries in worker processes).
FOR_OTHER_CHECKERS = {"concurrent.futures", "pmemsim.pmlog.workers", "shutil"}
#: Only for what a short, consistent log without lint findings does not have: describing an
#: inconsistent image or a finding, a long log's twin or speculative run, checker programs'
#: image files and processes, lazy exploration (read paths), exporting a log.
WHEN_NEEDED = {
    "pmemsim.explore.images",
    "pmemsim.explore.lazy",
    "pmemsim.explore.report",
    "pmemsim.pmlog.export",
    "pmemsim.pmlog.lint",
    "pmemsim.pmlog.readpaths",
    "pmemsim.pmlog.slots",
    "pmemsim.pmlog.speculate",
    "pmemsim.pmlog.twin",
    "random",
    "shlex",
    "subprocess",
}

TRIVIAL = (
    "START|REGISTER_FILE;{pool};0x10000;0x1000;0x0|STORE;0x10000;0x1;0x8|"
    "FLUSH;0x10000;0x40|FENCE|STOP\n"
)
#: A second store never flushed: a lint finding, and an image the bad checker refuses.
UNFLUSHED = (
    "START|REGISTER_FILE;{pool};0x10000;0x1000;0x0|STORE;0x10000;0x1;0x8|"
    "STORE;0x10040;0x2;0x8|FLUSH;0x10000;0x40|FENCE|STOP\n"
)


def _imported(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[set[str], str, int]:
    """The modules ``pmemsim ARGS`` imports in a fresh process, its stdout, its status."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pmemsim", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
        env=env,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "pmemsim.cli" in modules, done.stderr[-2000:]
    return (
        modules,
        re.sub(r"in [0-9.]+ s \([0-9,]+ images/s\)", "in T", done.stdout),
        done.returncode,
    )


def _folder(tmp_path: Path, log: str = TRIVIAL) -> Path:
    (tmp_path / "t.log").write_text(log.format(pool=tmp_path / "pool"))
    (tmp_path / "good.py").write_text("def check(image):\n    return True\n")
    (tmp_path / "bad.py").write_text("def check(image):\n    return image[0] != 1\n")
    return tmp_path


def _header(tmp_path: Path, records: int, ops: int, engine: str, checker: str) -> str:
    return (
        f"pmemsim check-log t.log: {records} records, {ops} operations; file "
        f"{tmp_path / 'pool'} (4096 bytes, base image: zeros, no such file); engine {engine}; "
        f"seed 0; checker {checker}\n"
    )


def test_a_python_checker_imports_no_simulator_engine_or_other_command(tmp_path: Path) -> None:
    modules, out, status = _imported(
        ["check-log", "t.log", "--checker-py", "good.py:check"], _folder(tmp_path)
    )
    assert sorted(modules & (NEVER | ON_REQUEST | FOR_OTHER_CHECKERS)) == []
    assert {"pmemsim.pmlog.fastreplay", "pmemsim_backends.sim.images"} <= modules
    assert status == 0
    assert out == _header(tmp_path, 6, 3, "lazy", "good.py:check") + (
        "CONSISTENT (exact); 2 crash point(s), 3 image(s) possible, 2 read path(s) "
        "(1 checker run(s)), 0 inconsistent\n"
        "3 image(s) covered by 1 checker run(s) in T\n"
    )


@pytest.mark.parametrize("engine", ["exhaustive", "accumulative"])
def test_a_planned_check_of_a_short_consistent_log_imports_only_what_it_uses(
    engine: str, tmp_path: Path
) -> None:
    modules, out, status = _imported(
        ["check-log", "t.log", "--engine", engine, "--checker-py", "good.py:check"],
        _folder(tmp_path),
    )
    assert sorted(modules & (NEVER | ON_REQUEST | FOR_OTHER_CHECKERS | WHEN_NEEDED)) == []
    assert status == 0
    assert out.startswith(_header(tmp_path, 6, 3, engine, "good.py:check") + "CONSISTENT")


def test_an_inconsistent_image_and_a_lint_finding_import_no_more(tmp_path: Path) -> None:
    # The failure's description and the lint report are on the way too.
    modules, out, status = _imported(
        ["check-log", "t.log", "--checker-py", "bad.py:check"], _folder(tmp_path, UNFLUSHED)
    )
    assert sorted(modules & (NEVER | ON_REQUEST | FOR_OTHER_CHECKERS)) == []
    assert status == 1
    assert out == _header(tmp_path, 7, 4, "lazy", "bad.py:check") + (
        "INCONSISTENT (exact); 2 crash point(s), 6 image(s) possible, 3 read path(s) "
        "(2 checker run(s)), 1 inconsistent\n"
        "the minimal inconsistent crash:\n"
        "crash point 0, before the FENCE (record #5):\n"
        "  every store persisted (nothing was lost)\n"
        "  checker: returned False\n"
        "  replay: pmemsim check-log t.log --replay 0: --checker-py bad.py:check\n"
        "lint (1 finding(s)):\n"
        "  error: store never flushed: STORE #3, pool +0x40, 8 byte(s)\n"
        "6 image(s) covered by 2 checker run(s) in T\n"
    )


def test_a_checker_program_imports_no_simulator_engine_or_other_command(tmp_path: Path) -> None:
    modules, out, status = _imported(["check-log", "t.log", "--", "true"], _folder(tmp_path))
    assert sorted(modules & (NEVER | ON_REQUEST)) == []
    assert status == 0
    assert out == _header(tmp_path, 6, 3, "exhaustive", "true") + (
        "CONSISTENT (exact); 2 crash point(s), 3 image(s) possible, 2 distinct checked, "
        "0 inconsistent\n"
        "2 distinct image(s) checked in T\n"
    )


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the library")
def test_a_checker_library_imports_no_simulator_engine_or_other_command(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "c.c").write_text("int check(const char *path) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", "libc.so", "c.c"], cwd=folder, check=True)
    modules, out, status = _imported(
        ["check-log", "t.log", "--checker-lib", "./libc.so:check"], folder
    )
    # cffi is the worker processes' business, not this one's.
    assert sorted(modules & (NEVER | ON_REQUEST | (WHEN_NEEDED - {"pmemsim.pmlog.slots"}))) == []
    assert status == 0
    assert out.startswith(_header(tmp_path, 6, 3, "exhaustive", "./libc.so:check"))


def test_json_and_html_are_imported_only_when_asked_for(tmp_path: Path) -> None:
    modules, _, status = _imported(
        [
            "check-log",
            "t.log",
            "--checker-py",
            "good.py:check",
            "--json",
            "r.json",
            "--html",
            "r.html",
        ],
        _folder(tmp_path),
    )
    assert modules >= ON_REQUEST
    assert status == 0
    assert (tmp_path / "r.json").read_text().startswith("{")
    assert "<html" in (tmp_path / "r.html").read_text().lower()


@pytest.mark.parametrize("command", [[], ["check-log"], ["check-program"], ["record"]])
def test_help_imports_no_simulator_set_layer_log_checker_or_engine(
    command: list[str], tmp_path: Path
) -> None:
    modules, out, status = _imported([*command, "--help"], tmp_path)
    assert status == 0 and "usage: pmemsim" in out
    heavy = NEVER - {"pmemsim.cli.check", "pmemsim.cli.discover", "pmemsim.cli.info"}
    heavy -= {"pmemsim.cli.record", "pmemsim.cli.validate"}  # --help lists every command
    if not command:  # (whose modules use the standard dataclasses)
        heavy -= {"dataclasses", "inspect"}
    assert sorted(modules & (heavy | {"pmemsim.pmlog", "pmemsim_backends.sim.images"})) == []


@pytest.mark.parametrize("columns", [70, 150])
def test_help_fits_the_terminal_without_shutil(columns: int, tmp_path: Path) -> None:
    # argparse finds the width through shutil (bz2 and lzma with it): 1.5 ms of every start-up.
    env = {**os.environ, "COLUMNS": str(columns)}
    modules, out, status = _imported(["check-log", "--help"], tmp_path, env)
    assert status == 0 and "shutil" not in modules
    widest = max(len(line) for line in out.split("\n\n", 1)[1].splitlines())  # (usage as given)
    assert columns - 12 <= widest <= columns


# Threads that first use names of the lazily importing packages at the same moment, each a
# name from another module (the shape that deadlocked pmemsim's own names:
# tests/test_pmlog_startup.py).
THREADS_FIRST_USE = """
import sys, threading
sys.setswitchinterval(1e-6)
import pmemsim.explore as ex
import pmemsim.pmlog as log
import pmemsim_backends.sim as sim

names = [(ex, "check"), (ex, "CrashCheck"), (ex, "FileCrashCheck"), (ex, "record"),
         (ex, "replay"), (ex, "Exhaustive"), (sim, "SimBackend"), (sim, "CrashState"),
         (sim, "Op"), (sim, "Finding"), (log, "check_log"), (log, "Store"),
         (log, "LogFinding"), (log, "export_log")]
got = {}
start = threading.Barrier(len(names))

def use(package, name):
    start.wait()
    got[name] = getattr(package, name)

threads = [threading.Thread(target=use, args=pair) for pair in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
for package, name in names:
    assert got[name] is getattr(package, name), name
    assert got[name].__module__.startswith(package.__name__), (name, got[name].__module__)
print("ok")
"""


def test_threads_that_first_use_the_lazy_packages_together_get_every_name() -> None:
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", THREADS_FIRST_USE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and done.stdout.split()[-1:] == ["ok"], done.stderr


_COUNT_COMPILES = """
import atexit, sys
compiled = []
sys.addaudithook(lambda event, args: compiled.append(str(args[1])) if event == "compile" else None)
atexit.register(lambda: print("COMPILED", compiled, file=sys.stderr))
sys.argv[0] = "pmemsim"
from pmemsim.cli import run
run()
"""


@pytest.mark.parametrize("checker", ["--checker-py=good.py:check", "--checker-lib=./libc.so:check"])
def test_a_second_run_compiles_nothing(checker: str, tmp_path: Path) -> None:
    """Once Python's caches hold pmemsim's code, a check compiles nothing: no generated
    ``__init__`` or ``__new__``, no annotation of a named tuple (compiling cost a short check
    a tenth of its instructions)."""
    folder = _folder(tmp_path)
    (folder / "c.c").write_text("int check(const char *path) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", "libc.so", "c.c"], cwd=folder, check=True)
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    said = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_COMPILES, "check-log", "t.log", checker],
            capture_output=True, text=True, timeout=120, cwd=folder, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        said.append(done.stderr.rsplit("COMPILED ", 1)[1].strip())
    assert said[0] != "[]"  # (the test's own check: the first run did compile)
    assert said[1] == "[]"
