"""check-log --timeout with the checkers it does not usually limit: taken with --checker-py
(tests/test_check_log_python_timeout.py has more), the run_timeout's replacement with
--recovery."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pmemsim.cli import main

BASE = 0x10000000
NOFILE = "/nonexistent-pmemsim-test/timeout.pool"
# Two lines stored, flushed together, fenced: one image has the first line's store and not
# the second's (the one the recoveries below are slow or hang on).
LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;{NOFILE};0x{BASE:x};0x1000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        f"STORE;0x{BASE + 0x40:x};0x2;0x8",
        f"FLUSH;0x{BASE:x};0x80",
        "FENCE",
        "STOP",
    ]
)

SCENARIO = """
import time
from pmemsim.explore import CrashCheck

def work(view):
    view.write(0, b"\\x01")
    view.write(0x40, b"\\x02")
    view.persist(0, 0x80)

def slow(view):  # 0.6 s on the one odd image, then consistent
    if view.read(0, 1) == b"\\x01" and view.read(0x40, 1) == b"\\x00":
        time.sleep(0.6)
    return True

def loops(view):
    if view.read(0, 1) == b"\\x01" and view.read(0x40, 1) == b"\\x00":
        while True:
            time.sleep(0.02)
    return True

slow_tight = CrashCheck("slow_tight", work, slow, size=4096, run_timeout=0.2)
looping_loose = CrashCheck("looping_loose", work, loops, size=4096, run_timeout=20)
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "two.log"
    log.write_text(LOG)
    scenario = tmp_path / "scenario.py"
    scenario.write_text(SCENARIO)
    return log, scenario


def test_timeout_with_a_python_checker_is_taken(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # (It was refused: a Python function had no time limit.)
    log, _ = files
    chk = tmp_path / "chk.py"
    chk.write_text("def check(image):\n    return True\n")
    out = tmp_path / "r.json"
    for limit, seconds in (("5", 5.0), ("none", None)):
        argv = ["check-log", str(log), "--checker-py", f"{chk}:check", "--timeout", limit]
        assert main([*argv, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["timeout"] == seconds
        assert "Traceback" not in capsys.readouterr().err


def test_no_time_limit_is_said_at_the_start(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = files
    for limit, said in (("none", True), ("5", False)):
        assert main(["check-log", str(log), "--timeout", limit, "--", "true"]) == 0
        err = capsys.readouterr().err
        assert ("no time limit per checker run (--timeout none)" in err) == said, err
    assert main(["check-log", str(log), "--", "true"]) == 0
    assert "no time limit" not in capsys.readouterr().err


@pytest.mark.parametrize(("limit", "jobs"), [("5", "1"), ("none", "1"), ("5", "2")])
def test_timeout_replaces_a_recoverys_run_timeout(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], limit: str, jobs: str
) -> None:
    # (With --jobs 2, the recoveries run in worker processes, which send their verdicts.)
    log, scenario = files
    argv = ["check-log", str(log), "--recovery", f"{scenario}::slow_tight", "--jobs", jobs]
    # Its own run_timeout (0.2 s) stops the 0.6 s run: timed out.
    assert main(argv) == 1
    std = capsys.readouterr()
    assert "(1 timed out)" in std.out
    assert f"the run_timeout of {scenario}::slow_tight; --timeout SECONDS replaces it" in std.out
    # A longer limit, or none, lets it finish: consistent.
    assert main([*argv, "--timeout", limit]) == 0
    assert "timed out" not in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["lazy", "exhaustive"])
def test_a_shorter_timeout_stops_a_looping_recovery_sooner(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    log, scenario = files
    out = tmp_path / "r.json"
    argv = ["check-log", str(log), "--recovery", f"{scenario}::looping_loose", "--json", str(out)]
    started = time.monotonic()
    assert main([*argv, "--engine", engine, "--timeout", "0.3"]) == 1
    assert time.monotonic() - started < 15  # (its own run_timeout is 20 s)
    std = capsys.readouterr()
    got = json.loads(out.read_text())
    assert (got["inconsistent"], got["timed_out"], got["timeout"]) == (1, 1, 0.3)
    verdict = "timed out: recovery did not finish within 0.3 s (run_timeout)"
    assert got["minimal"]["checker"] == verdict
    assert f"--timeout replaced the run_timeout of {scenario}::looping_loose" in std.out
    # The replay line keeps the limit, so that it judges the image the same way.
    token = got["minimal"]["token"]
    [replay] = [line for line in std.out.splitlines() if "--replay" in line]
    assert f"--replay {token} --timeout 0.3 --recovery" in replay


def test_help_says_what_timeout_does_with_each_checker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check-log", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "with --recovery it replaces the check's run_timeout" in text
    assert "time limit per checker run (default 10 s; none: no limit)" in text
    assert "not with --checker-py" not in text  # (a Python function has its limit too)
