"""check-log tells stderr of a long wait on one image's checker run (pmemsim.pmlog.waiting):
which image, for how long, how to stop; nothing on stdout, nothing for a quick check."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pmemsim.cli import main
from pmemsim.pmlog import forked, waiting
from pmemsim.pmlog.checkers import LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
# Two lines stored, flushed together, fenced: one image has the first line's store and not
# the second's (the one the checkers below are slow on, and find inconsistent).
LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;/nonexistent-pmemsim-test/wait.pool;0x{BASE:x};0x1000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        f"STORE;0x{BASE + 0x40:x};0x2;0x8",
        f"FLUSH;0x{BASE:x};0x80",
        "FENCE",
        "STOP",
    ]
)

PY_CHECKER = """
import time

def check(image):
    if image[0] == 1 and image[0x40] == 0:
        time.sleep({sleep})
        return False
    return True
"""

PROGRAM = """
import sys, time
with open(sys.argv[-1], "rb") as f:
    image = f.read(0x41)
if image[0] == 1 and image[0x40] == 0:
    time.sleep({sleep})
    sys.exit(1)
"""

NOTICE = re.compile(
    r"check-log: \[crash ((?:point )?\S+)\] still waiting for the checker on this image after "
    r"([\d.]+) s \(([^)]*)\); Ctrl-C stops the check and prints the failures found so far; "
)


@pytest.fixture
def soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notice after 0.5 s of waiting, not 10: more than a checker program's start-up on a
    loaded machine (at 0.2 s a quick image's program was told of, now and then)."""
    monkeypatch.setattr(waiting, "FIRST", 0.5)


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str, dict[str, Any]]:
    log = tmp_path / "wait.log"
    log.write_text(LOG)
    out = tmp_path / "r.json"
    code = main(["check-log", str(log), "--json", str(out), *args])
    std = capsys.readouterr()
    return code, std.out, std.err, json.loads(out.read_text())


def _notices(err: str, token: str) -> list[tuple[float, str]]:
    found = [(m[1], float(m[2]), m[3]) for m in NOTICE.finditer(err)]
    assert found, err
    assert {t for t, _, _ in found} == {token}, err  # the slow image, named as the replay
    return [(s, bound) for _, s, bound in found]


@pytest.mark.usefixtures("soon")
def test_a_long_wait_on_a_python_checker_in_a_worker_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chk = tmp_path / "chk.py"
    chk.write_text(PY_CHECKER.format(sleep=1.6))
    code, out, err, got = _run(tmp_path, capsys, "--checker-py", f"{chk}:check", "--jobs", "2")
    assert code == 1 and got["inconsistent"] == 1
    told = _notices(err, got["minimal"]["token"])
    assert all(bound == "time limit 10 s" for _, bound in told)  # (the default)
    assert "--timeout SECONDS changes the limit" in err
    seconds = [s for s, _ in told]
    assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds)
    assert "still waiting" not in out  # stdout is the report's


@pytest.mark.usefixtures("soon")
@pytest.mark.parametrize("limit", ["none", "30"])
def test_a_long_wait_on_a_checker_program_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    prog = tmp_path / "chk.py"
    prog.write_text(PROGRAM.format(sleep=1.6))
    code, out, err, got = _run(
        tmp_path, capsys, "--timeout", limit, "--", sys.executable, str(prog)
    )
    assert code == 1 and got["inconsistent"] == 1 and got["timed_out"] == 0
    told = _notices(err, got["minimal"]["token"])
    bound = "no time limit" if limit == "none" else "time limit 30 s"
    assert all(b == bound for _, b in told)
    hint = "--timeout SECONDS limits each run" if limit == "none" else "changes the limit"
    assert hint in err
    assert "still waiting" not in out


def test_a_quick_check_tells_of_no_wait(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chk = tmp_path / "chk.py"
    chk.write_text(PY_CHECKER.format(sleep=0))
    code, _, err, _ = _run(tmp_path, capsys, "--checker-py", f"{chk}:check", "--jobs", "2")
    assert code == 1
    assert "still waiting" not in err


def test_notices_come_at_doubling_waits_of_one_image() -> None:
    """10, 20, 40 s ... of waiting, at most 600 s apart; a new image starts again; a late
    look tells once."""
    now = [0.0]
    on: list[Any] = [("a", 0.0)]
    told: list[tuple[str, float]] = []
    p = waiting.Patience(lambda t: on[0], lambda key, s: told.append((key, s)))

    def run_to(t: float) -> None:
        while True:
            look = p.next(now[0])
            assert look > now[0]
            if look > t:
                break
            now[0] = look
        now[0] = t

    run_to(3000)
    assert [s for _, s in told] == [10, 20, 40, 80, 160, 320, 640, 1240, 1840, 2440]
    told.clear()
    on[0] = ("b", 3000.0)
    run_to(3015)
    assert told == [("b", 10.0)]
    told.clear()
    on[0] = None  # nothing waited on: nothing told
    run_to(4000)
    assert told == []
    on[0] = ("c", 4000.0)
    now[0] = 4050.0  # looked at late: one notice for the 10, 20 and 40 s ones
    p.next(now[0])
    assert told == [("c", 50.0)]
    run_to(4085)
    assert told == [("c", 50.0), ("c", 80.0)]  # then the next one due


def test_a_library_checker_is_not_speculated_on_when_a_hang_could_go_untold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The speculative child calls the library itself, and nobody watches it wait: a limit
    longer than the first notice, or none, is checked with a worker."""
    monkeypatch.setattr(forked, "SPECULATE_FROM", 1)
    monkeypatch.setattr(forked, "_alone", lambda: True)
    replay = Replay.of(parse_log(LOG))
    for timeout, speculated in ((1.0, True), (10.0, True), (11.0, False), (None, False)):
        lib = LibChecker("libc.so.6", "abs", timeout)
        assert forked.worth_speculating(replay, lib, 1) is speculated, timeout


SCENARIO = """
import time
from pmemsim.explore import CrashCheck

def work(view):
    view.write(0, b"\\x01")
    view.write(0x40, b"\\x02")
    view.persist(0, 0x80)

def slow(view):  # slow on the one odd image, and inconsistent there
    if view.read(0, 1) == b"\\x01" and view.read(0x40, 1) == b"\\x00":
        time.sleep({sleep})
        raise AssertionError("odd image")

slow = CrashCheck("slow", work, slow, size=4096, run_timeout=5)
"""


@pytest.mark.usefixtures("soon")
@pytest.mark.parametrize("engine", ["lazy", "exhaustive"])
@pytest.mark.parametrize("checker", ["recovery", "python"])
def test_a_long_wait_on_a_checker_in_this_process_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str, checker: str
) -> None:
    """--jobs 1: the checker runs in this process's main thread; a thread watches it."""
    if checker == "recovery":
        scenario = tmp_path / "scenario.py"
        scenario.write_text(SCENARIO.format(sleep=1.6))
        args = ["--recovery", f"{scenario}::slow", "--timeout", "none"]
    else:
        chk = tmp_path / "chk.py"
        chk.write_text(PY_CHECKER.format(sleep=1.6))
        args = ["--checker-py", f"{chk}:check", "--timeout", "none"]
    code, out, err, got = _run(tmp_path, capsys, *args, "--engine", engine)
    assert code == 1 and got["inconsistent"] == 1
    point = got["minimal"]["token"].split(":")[0]
    told = _notices(err, f"point {point}")
    assert all(bound == "no time limit" for _, bound in told)
    assert "still waiting" not in out
    assert [t.name for t in threading.enumerate()] == [threading.main_thread().name]


@pytest.mark.usefixtures("soon")
def test_a_quick_check_in_this_process_tells_of_no_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chk = tmp_path / "chk.py"
    chk.write_text("import time\n\ndef check(image):\n    time.sleep(0.02)\n    return True\n")
    code, _, err, _ = _run(tmp_path, capsys, "--checker-py", f"{chk}:check")
    assert code == 0
    assert "still waiting" not in err
