"""The Python API's library worker: the spare that LibChecker.parse starts is a new
interpreter (a fork would make every page the check writes afterwards a copy), kept for later
checks with the same checker (tests/test_pmlog_kept_worker.py), and the check sends batches
ahead while the new interpreter loads instead of waiting for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SAYS_WHO, c_library

from pmemsim.pmlog import forked, workers
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
#: Takes a second to load: long after the replay of a short log has sent everything it may.
SLOW_TO_LOAD = r"""
#include <unistd.h>
__attribute__((constructor)) static void slow(void) { usleep(1000000); }
int check(const char *path) { (void)path; return 1; }
"""


def _log(epochs: int) -> str:
    """``epochs`` epochs of two stores on two lines, flushed and fenced: two new images per
    epoch for the accumulative engine."""
    records = [f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x1000;0x0"]
    for e in range(epochs):
        a, b = BASE + 64 * (e % 32), BASE + 64 * (32 + e % 32)
        records += [
            f"STORE;0x{a:x};0x{e + 1:x};0x8",
            f"STORE;0x{b:x};0x{e + 2:x};0x8",
            f"FLUSH;0x{a:x};0x40",
            f"FLUSH;0x{b:x};0x40",
            "FENCE",
        ]
    return "|".join([*records, "STOP"]) + "\n"


def _judged_by(checker: LibChecker) -> str:
    """The command line of the process that judged the check's failing image (the first
    image whose first byte is 1: the log's first store)."""
    result = check_log(Replay.of(parse_log(_log(1))), checker)
    assert result.minimal is not None
    return result.minimal.verdict


def test_the_parsed_checkers_worker_is_a_new_interpreter(tmp_path: Path) -> None:
    lib = c_library(tmp_path, SAYS_WHO)
    checker = LibChecker.parse(f"{lib}:check")
    said = _judged_by(checker)
    assert "pmemsim.pmlog.serve" in said and " -S " in said, said
    # The next check with the same checker takes the same worker, kept.
    assert _judged_by(checker) == said


def test_where_none_can_be_spawned_the_parsed_checkers_worker_is_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = c_library(tmp_path, SAYS_WHO)
    monkeypatch.setattr(forked, "_spawnable", lambda: False)
    said = _judged_by(LibChecker.parse(f"{lib}:check"))
    assert "pmemsim.pmlog.serve" not in said


@pytest.mark.parametrize("spawnable", [True, False])
def test_batches_go_ahead_while_the_worker_loads(
    spawnable: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker loads its checker for a second; the check meanwhile sends it LOOKAHEAD
    batches (not 2) before it waits, and then every verdict comes."""
    lib = c_library(tmp_path, SLOW_TO_LOAD)
    if not spawnable:
        monkeypatch.setattr(forked, "_spawnable", lambda: False)
    sent_when_waited: list[int] = []
    ready = workers.LibWorker.ready

    def waited(self: workers.LibWorker) -> None:
        if not self.loaded and not sent_when_waited:
            sent_when_waited.append(self.sent)
        ready(self)

    monkeypatch.setattr(workers.LibWorker, "ready", waited)
    # 8 batches of 8, 16, ... 256 images hold 1,016: more than that are made.
    result = check_log(
        Replay.of(parse_log(_log(600))),
        LibChecker.parse(f"{lib}:check"),
        engine="accumulative",
    )
    assert result.verdict == "consistent" and result.images_checked > 1016
    assert sent_when_waited == [workers.LOOKAHEAD]


def test_a_worker_that_dies_while_loading_is_the_checkers_error(tmp_path: Path) -> None:
    """Batches sent ahead to a worker that then fails to load change nothing: the check is
    refused with the loading error."""
    from pmemsim.errors import InvalidArgumentError

    lib = c_library(tmp_path, SLOW_TO_LOAD)
    with pytest.raises(InvalidArgumentError, match="has no function 'nope'"):
        check_log(Replay.of(parse_log(_log(600))), LibChecker.parse(f"{lib}:nope"))


#: Prints a line to stdout, then one to stderr, and finds every image inconsistent.
TALKS = r"""
#include <stdio.h>
int check(const char *path) {
    printf("first, on stdout\n");
    fprintf(stderr, "then, on stderr\n");
    return 0;
}
"""


def test_a_checkers_output_is_in_the_order_it_was_written(tmp_path: Path) -> None:
    """A new interpreter's C stdout is fully buffered where it is no terminal: the stderr
    line came first in the verdict. Its worker runs unbuffered (``-u``)."""
    lib = c_library(tmp_path, TALKS)
    said = _judged_by(LibChecker.parse(f"{lib}:check"))
    assert said == "returned 0: first, on stdout\nthen, on stderr", said


def test_a_forked_workers_checker_output_is_in_the_order_it_was_written(tmp_path: Path) -> None:
    """The same from a worker forked by a process whose C stdout is buffered (no -u, no
    PYTHONUNBUFFERED): a checker made directly has no spare, so its worker is a fork."""
    lib = c_library(tmp_path, TALKS)
    code = (
        "import sys\n"
        "from pmemsim.pmlog.check import check_log\n"
        "from pmemsim.pmlog.checkers import LibChecker\n"
        "from pmemsim.pmlog.grammar import parse_log\n"
        "from pmemsim.pmlog.replay import Replay\n"
        "r = check_log(Replay.of(parse_log(sys.argv[1])), LibChecker(sys.argv[2], 'check'))\n"
        "print(r.minimal.verdict)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", code, _log(1), str(lib)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout == "returned 0: first, on stdout\nthen, on stderr\n", done.stdout
