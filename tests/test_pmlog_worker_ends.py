"""How a checker's worker process ends.

What a checker run in a worker starts (a library's fork, a Python checker's subprocess)
ends with the worker: each worker leads a process group, killed when the worker is closed
or reaped, and on Ctrl-C or SIGTERM. A checker that ends its worker itself (C's exit(0),
Python's os._exit) is said to have done so (it read "the checker crashed: exit status 0").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import c_library

from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import FunctionChecker, LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
LOG = (
    f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x1000;0x0|"
    f"STORE;0x{BASE:x};0x1;0x8|STORE;0x{BASE + 64:x};0x1;0x8|FLUSH;0x{BASE:x};0x80|FENCE|STOP\n"
)
#: A checker that forks a child sleeping in the background, writes the child's pid to the
#: file PMEMSIM_TEST_PIDS names, then sleeps itself for PMEMSIM_TEST_NAP seconds.
FORKS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int check(const char *path) {
    pid_t pid = fork();
    if (pid == 0) { sleep(30); _exit(0); }
    FILE *f = fopen(getenv("PMEMSIM_TEST_PIDS"), "a");
    if (f) { fprintf(f, "%d\n", (int)pid); fclose(f); }
    const char *nap = getenv("PMEMSIM_TEST_NAP");
    if (nap) sleep(atoi(nap));
    return 1;
}
"""


#: Ends its process on an image whose first byte is 1; consistent otherwise.
EXITS = r"""
#include <stdio.h>
#include <stdlib.h>
int check(const char *path) {
    FILE *f = fopen(path, "rb");
    int first = f ? fgetc(f) : -1;
    if (f) fclose(f);
    if (first == 1) exit(0);
    return 1;
}
"""


@pytest.fixture
def forks(tmp_path: Path) -> Path:
    return c_library(tmp_path, FORKS)


def _gone(pid: int) -> bool:
    """``pid`` exited (a zombie counts: whoever adopted it has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _all_gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not all(_gone(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


@pytest.mark.parametrize("jobs", [1, 2])
def test_what_a_library_checker_forks_does_not_outlive_the_check(
    forks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("PMEMSIM_TEST_PIDS", str(pids))
    r = check_log(Replay.of(parse_log(LOG)), LibChecker.parse(f"{forks}:check"), jobs=jobs)
    assert r.images_checked > 0 and r.inconsistent == 0
    assert len(_pids(pids)) == r.images_checked
    assert _all_gone(_pids(pids)), "a process the checker forked outlived check_log"


def test_what_a_python_checker_starts_does_not_outlive_the_check(tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"

    def starts_one(image: object) -> bool:  # runs in a worker (jobs=2)
        child = subprocess.Popen(["sleep", "30"])
        with pids.open("a") as f:
            f.write(f"{child.pid}\n")
        return True

    r = check_log(Replay.of(parse_log(LOG)), FunctionChecker(starts_one, "starts"), jobs=2)
    assert r.images_checked > 0 and r.inconsistent == 0
    assert _all_gone(_pids(pids)), "a process the checker started outlived check_log"


@pytest.mark.parametrize(
    "sig, to_group",
    [
        (signal.SIGINT, True),  # Ctrl-C at a terminal: the worker, in a group of its own,
        # does not get it; check-log must end it
        (signal.SIGTERM, False),
    ],
)
def test_a_signal_ends_the_workers_and_what_their_checker_forked(
    forks: Path, tmp_path: Path, sig: signal.Signals, to_group: bool
) -> None:
    (tmp_path / "t.log").write_text(LOG)
    pids = tmp_path / "pids.txt"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "PMEMSIM_TEST_PIDS": str(pids),
        "PMEMSIM_TEST_NAP": "60",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmemsim", "check-log", "t.log", "--checker-lib", f"{forks}:check"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not pids.exists() or not pids.read_text().endswith("\n"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the checker never ran"
            time.sleep(0.02)
        workers = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert workers and _all_gone([int(p) for p in workers]), "a worker outlived check-log"
    assert _all_gone(_pids(pids)), "a process the checker forked outlived check-log"
    assert list(scratch.iterdir()) == []


def _exits_python(image: Any) -> bool:
    if bytes(image)[0] == 1:
        os._exit(0)
    return True


@pytest.mark.parametrize("kind", ["library", "python"])
def test_a_checker_that_exits_is_said_to_have_ended_its_worker(tmp_path: Path, kind: str) -> None:
    checker = (
        LibChecker.parse(f"{c_library(tmp_path, EXITS)}:check")
        if kind == "library"
        else FunctionChecker(_exits_python, "exits")
    )
    r = check_log(Replay.of(parse_log(LOG)), checker, engine="exhaustive", jobs=2)
    assert r.images_checked >= 2
    assert r.inconsistent == r.crashed >= 1
    assert r.minimal is not None
    assert r.minimal.verdict == (
        "the checker ended its worker process (exit status 0) instead of returning"
    )


#: Closes every descriptor of its worker (the pipes to pmemsim among them) on an image whose
#: first byte is 1, and sleeps on; consistent otherwise.
CLOSES_ITS_PIPES = r"""
#include <stdio.h>
#include <unistd.h>
int check(const char *path) {
    FILE *f = fopen(path, "rb");
    int first = f ? fgetc(f) : -1;
    if (f) fclose(f);
    if (first == 1) {
        for (int fd = 3; fd < 4096; fd++) close(fd);
        sleep(30);
    }
    return 1;
}
"""


def test_a_checker_that_closes_its_workers_pipe_and_goes_on_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pipe ends but the worker runs on (no time limit to end it): the worker is
    given workers.DYING seconds to exit, then stopped, and the image's verdict says so
    (the check used to wait for the checker's whole sleep, then blamed an exit status)."""
    from pmemsim.pmlog import workers

    monkeypatch.setattr(workers, "DYING", 0.3)
    checker = LibChecker.parse(f"{c_library(tmp_path, CLOSES_ITS_PIPES)}:check", timeout=None)
    started = time.monotonic()
    r = check_log(Replay.of(parse_log(LOG)), checker, engine="exhaustive")
    assert time.monotonic() - started < 20  # not the checker's 30 s sleep, once per image
    assert r.inconsistent == r.crashed >= 1
    assert r.minimal is not None
    assert r.minimal.verdict == (
        "the checker closed its worker's pipe and was still running 0.3 s later (stopped)"
    )


SPECULATING = """
import sys
from pmemsim.pmlog import forked, speculate
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

forked.SPECULATE_FROM = 0  # every log is long enough
tried = []
real = speculate.attempt
speculate.attempt = lambda *a: tried.append(1) or real(*a)
r = check_log(Replay.of(parse_log(sys.argv[2])), LibChecker.parse(sys.argv[1] + ":check"))
print(len(tried), r.images_checked, r.inconsistent)
"""


def test_what_a_library_checker_forks_does_not_hold_the_speculative_check(
    tmp_path: Path,
) -> None:
    # The speculative child (a library called in a fork of check-log, on long logs) was read
    # until end of file: a process its checker forked held the pipe, and check-log waited
    # for it (here an hour); then it was left running.
    lib = c_library(tmp_path, FORKS.replace("sleep(30)", "sleep(3600)"))
    pids = tmp_path / "pids.txt"
    done = subprocess.run(
        [sys.executable, "-c", SPECULATING, str(lib), LOG],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PMEMSIM_TEST_PIDS": str(pids)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tried, checked, bad = map(int, done.stdout.split())
    assert tried == 1 and checked > 0 and bad == 0
    assert _all_gone(_pids(pids)), "a process the checker forked outlived check_log"


#: Forks a child that sleeps (holding every descriptor the worker has, the pipe of its
#: answers included), writes the child's pid to PMEMSIM_TEST_PIDS, then ends the worker:
#: exit(3) where PMEMSIM_TEST_EXIT is set, else a crash (SIGSEGV).
FORKS_AND_ENDS = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int check(const char *path) {
    pid_t pid = fork();
    if (pid == 0) { sleep(60); _exit(0); }
    FILE *f = fopen(getenv("PMEMSIM_TEST_PIDS"), "a");
    if (f) { fprintf(f, "%d\n", (int)pid); fclose(f); }
    if (getenv("PMEMSIM_TEST_EXIT")) exit(3);
    raise(SIGSEGV);
    return 1;
}
"""


def _forks_and_crashes(image: Any) -> bool:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    with open(os.environ["PMEMSIM_TEST_PIDS"], "a") as f:
        f.write(f"{pid}\n")
    os.kill(os.getpid(), signal.SIGSEGV)
    return True


@pytest.mark.parametrize(
    "kind, verdict",
    [
        ("library", "the checker ended its worker process (exit status 3) instead of returning"),
        ("library", "the checker crashed: killed by signal 11 (SIGSEGV)"),
        ("python", "the checker crashed: killed by signal 11 (SIGSEGV)"),
    ],
)
def test_a_worker_that_dies_is_noticed_at_once_though_its_checker_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, verdict: str
) -> None:
    # The checker's fork held the worker's answers open (no end of file): its death was
    # noticed at the batch's deadline (the time limit per image, times the batch's images),
    # and again for each image of the batch, judged again one at a time.
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("PMEMSIM_TEST_PIDS", str(pids))
    if "exit" in verdict:
        monkeypatch.setenv("PMEMSIM_TEST_EXIT", "1")
    limit = 60.0
    checker = (
        LibChecker.parse(f"{c_library(tmp_path, FORKS_AND_ENDS)}:check", limit)
        if kind == "library"
        else FunctionChecker(_forks_and_crashes, "forks and crashes")
    )
    started = time.monotonic()
    r = check_log(Replay.of(parse_log(LOG)), checker, engine="exhaustive", jobs=2)
    took = time.monotonic() - started
    assert took < limit / 4, f"{took:.0f} s: the worker's death was not noticed at once"
    assert r.images_checked == r.inconsistent == r.crashed > 0
    assert r.minimal is not None and r.minimal.verdict == verdict
    assert _all_gone(_pids(pids)), "a process the checker forked outlived check_log"
