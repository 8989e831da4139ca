"""What a library checker's worker costs the check that starts it.

The worker is forked when the checker is parsed, and loads the library (ctypes, dlopen)
while this process reads and replays the log; this process imports nothing that only the
worker needs (ctypes; pickle: messages go as marshal; tempfile and shutil: the image folder
is made here). A library that cannot be loaded is refused by ``LibChecker.loaded()`` and by
the check, at once, even when its constructor crashed after forking.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import c_library

from pmemsim.errors import InvalidArgumentError
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
LOG = (
    f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x1000;0x0|"
    f"STORE;0x{BASE:x};0x1;0x8|FLUSH;0x{BASE:x};0x40|FENCE|STOP\n"
)

#: Its constructor (run by dlopen, in the worker) forks a child that sleeps, holding every
#: descriptor the worker has, writes the child's pid to PMEMSIM_TEST_PIDS, then crashes.
CRASHES_LOADING = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void load(void) {
    pid_t pid = fork();
    if (pid == 0) { sleep(60); _exit(0); }
    FILE *f = fopen(getenv("PMEMSIM_TEST_PIDS"), "a");
    if (f) { fprintf(f, "%d\n", (int)pid); fclose(f); }
    raise(SIGSEGV);
}
int check(const char *path) { return 1; }
"""

CHECKS = """
import sys
from pmemsim.pmlog import LibChecker, Replay, check_log, parse_log

r = check_log(Replay.of(parse_log(sys.argv[2])), LibChecker.parse(sys.argv[1] + ":check"))
assert r.images_checked > 0 and r.inconsistent == 0, r.report()
print(" ".join(sorted(sys.modules)))
"""


def test_the_check_imports_nothing_only_its_library_worker_needs(tmp_path: Path) -> None:
    lib = c_library(tmp_path, "int check(const char *path) { return 1; }\n")
    done = subprocess.run(
        [sys.executable, "-c", CHECKS, str(lib), LOG],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "pmemsim.pmlog.workers" in modules
    assert sorted(modules & {"ctypes", "_ctypes", "pickle", "tempfile", "shutil", "struct"}) == []


def test_a_library_whose_constructor_forks_and_crashes_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The constructor's fork held the worker's pipe: the crash was noticed only after the
    # 60 s allowed for loading, and the fork left running.
    lib = c_library(tmp_path, CRASHES_LOADING)
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("PMEMSIM_TEST_PIDS", str(pids))
    started = time.monotonic()
    checker = LibChecker.parse(f"{lib}:check")  # (returns at once: the worker loads it)
    with pytest.raises(InvalidArgumentError, match=r"failed to load: killed by signal 11"):
        checker.loaded()
    with pytest.raises(InvalidArgumentError, match=r"failed to load: killed by signal 11"):
        check_log(Replay.of(parse_log(LOG)), LibChecker.parse(f"{lib}:check"))
    assert time.monotonic() - started < 20, "a worker's death was not noticed at once"
    forked = [int(p) for p in pids.read_text().split()]
    assert len(forked) == 2
    deadline = time.monotonic() + 5
    while any(_running(p) for p in forked):
        assert time.monotonic() < deadline, "what the library's constructor forked outlived it"
        time.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


#: Notes each call in the file PMEMSIM_TEST_CALLS.
NOTES_CALLS = r"""
#include <stdio.h>
#include <stdlib.h>
int check(const char *path) {
    FILE *f = fopen(getenv("PMEMSIM_TEST_CALLS"), "a");
    if (f) { fputs("called\n", f); fclose(f); }
    return 1;
}
"""


def test_a_checks_first_images_are_judged_while_its_replay_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short check's images come at its one crash point, some way before the replay's
    # end; they were kept for a batch of 8, so the worker sat idle until then.
    from pmemsim.pmlog import workers

    calls = tmp_path / "calls"
    monkeypatch.setenv("PMEMSIM_TEST_CALLS", str(calls))
    checker = LibChecker.parse(f"{c_library(tmp_path, NOTES_CALLS)}:check").loaded()
    seen: list[bool] = []
    finish = workers.Workers.finish

    def finishing(judge: workers.Workers, *args: Any) -> None:
        # The replay is over: has the worker judged the first image meanwhile?
        deadline = time.monotonic() + 10
        while not calls.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        seen.append(calls.exists())
        finish(judge, *args)

    monkeypatch.setattr(workers.Workers, "finish", finishing)
    _check_consistent(checker)
    assert seen == [True]
    assert calls.read_text().count("called") == 2


def test_the_image_buffers_are_unmapped_while_the_worker_judges_the_last_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every image is in a batch sent: unmapped after the last verdict, the buffers cost
    # the check their unmapping on top of the wait.
    from pmemsim.pmlog import images, workers

    checker = LibChecker.parse(f"{c_library(tmp_path, NOTES_CALLS)}:check").loaded()
    monkeypatch.setenv("PMEMSIM_TEST_CALLS", str(tmp_path / "calls"))
    events: list[str] = []
    close, answer = images.PoolImage.close, workers.LibWorker.answer

    def closing(img: images.PoolImage) -> None:
        events.append("unmapped")
        close(img)

    def answering(worker: workers.LibWorker, *args: Any) -> Any:
        events.append("answer")
        return answer(worker, *args)

    monkeypatch.setattr(images.PoolImage, "close", closing)
    monkeypatch.setattr(workers.LibWorker, "answer", answering)
    _check_consistent(checker)
    assert events[:2] == ["unmapped", "answer"], events


def _check_consistent(checker: LibChecker) -> None:
    """LOG checked with ``checker`` (closed after): its two images consistent."""
    try:
        result = check_log(Replay.of(parse_log(LOG)), checker)
    finally:
        checker.close()
    assert result.images_checked == 2 and result.verdict == "consistent"
