"""check-log's time limit per checker run, and the count of images whose checker timed out
or crashed (apart from plain inconsistent verdicts)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pmemsim.cli import main
from pmemsim.errors import InvalidArgumentError
from pmemsim.pmlog import FunctionChecker, LibChecker, ProgramChecker, Replay, check_log, parse_log
from pmemsim.pmlog import checkers as checkers_module

BASE = 0x10000000
NOFILE = "/nonexistent-pmemsim-test/limits.pool"


def log_text(*ops: str) -> str:
    return "|".join(["START", f"REGISTER_FILE;{NOFILE};0x{BASE:x};0x1000;0x0", *ops, "STOP"])


def store(off: int, value: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x}"


# Two lines stored, flushed together, fenced: the image with the first line's store and
# without the second's is the one bad image (and the one the checkers below hang on).
LOG = log_text(store(0, 1), store(0x40, 2), f"FLUSH;0x{BASE:x};0x80", "FENCE")


def bad(img: Any) -> bool:
    return bool(img[0] == 1 and img[0x40] == 0)


def expected_token() -> str:
    """The minimal failing image, as a Python checker that says "inconsistent" finds it."""
    r = check_log(
        Replay.of(parse_log(LOG)),
        FunctionChecker(lambda img: not bad(img), "py"),
        engine="exhaustive",
    )
    assert r.inconsistent == 1 and r.minimal is not None
    return r.minimal.token


LOOPS = """#!/bin/sh
# Loops forever on the bad image (bytes 0 and 0x40 of the image file: 1 and 0).
a=$(od -An -tu1 -j0 -N1 "$1" | tr -d ' ')
b=$(od -An -tu1 -j64 -N1 "$1" | tr -d ' ')
if [ "$a" = 1 ] && [ "$b" = 0 ]; then
    while :; do sleep 1; done
fi
exit 0
"""


def test_a_checker_program_looping_on_one_image_times_out_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "two.log"
    log.write_text(LOG)
    checker = tmp_path / "loops.sh"
    checker.write_text(LOOPS)
    checker.chmod(0o755)
    out = tmp_path / "r.json"
    # The default limit (no --timeout given), lowered so that the test takes a second.
    monkeypatch.setattr(checkers_module, "DEFAULT_TIMEOUT", 0.5)
    started = time.monotonic()
    assert main(["check-log", str(log), "--json", str(out), "--", str(checker)]) == 1
    took = time.monotonic() - started
    std = capsys.readouterr()
    token = expected_token()
    got = json.loads(out.read_text())
    assert (got["inconsistent"], got["timed_out"], got["crashed"]) == (1, 1, 0)
    assert got["timeout"] == 0.5
    assert got["minimal"]["token"] == token
    verdict = "timed out after 0.5 s (the time limit per checker run)"
    assert got["minimal"]["checker"] == verdict
    assert "1 inconsistent (1 timed out)" in std.out
    assert "ran past 0.5 s per run" in std.out
    assert f"--replay {token} --timeout 0.5 --" not in std.out  # the default is not repeated
    # Told on stderr as it happened, not only at the end.
    assert f"check-log: [crash {token}] {verdict}; counted as inconsistent" in std.err
    assert took < 30  # (the limit is what ended it: without one this never returns)


def test_timeout_none_turns_the_limit_off_and_bad_limits_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "two.log"
    log.write_text(LOG)
    out = tmp_path / "r.json"
    argv = ["check-log", str(log), "--json", str(out), "--timeout", "none", "--", "true"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["timeout"] is None
    for bad_limit in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as stopped:
            main(["check-log", str(log), "--timeout", bad_limit, "--", "true"])
        assert stopped.value.code == 2
        assert "--timeout: " in capsys.readouterr().err
    for value in (0, -1.0, float("nan"), float("inf"), "10", True):
        with pytest.raises(InvalidArgumentError, match="timeout="):
            ProgramChecker(("true",), value)  # type: ignore[arg-type]
    assert ProgramChecker(("true",)).timeout == checkers_module.DEFAULT_TIMEOUT
    assert ProgramChecker(("true",), None).timeout is None


def test_help_states_the_default_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check-log", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {checkers_module.DEFAULT_TIMEOUT:g} s; none: no limit" in text


def test_timeouts_and_crashes_are_counted_apart_from_other_verdicts() -> None:
    from pmemsim.pmlog.check import LogCheckResult

    r = LogCheckResult("x.log", "exhaustive", 0, "c", inconsistent=5, timed_out=2, crashed=1)
    r.timeout = 10.0
    assert "5 inconsistent (2 timed out, 1 crashed the checker)" in r.summary()
    assert "2 image(s) inconsistent because the checker ran past 10 s per run" in r.report()
    assert "1 image(s) inconsistent because the checker crashed" in r.report()
    d = r.as_dict()
    assert (d["inconsistent"], d["timed_out"], d["crashed"], d["timeout"]) == (5, 2, 1, 10.0)
    plain = LogCheckResult("x.log", "exhaustive", 0, "c", inconsistent=5)
    assert plain.summary().endswith("5 inconsistent")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C checker cannot be built")
    out = tmp_path_factory.mktemp("limits")
    src, lib = out / "limits.c", out / "liblimits.so"
    src.write_text(
        """
#include <stdio.h>
#include <stdint.h>
#include <signal.h>
static int bytes(const char *path, unsigned char *a, unsigned char *b, uint64_t *w)
{
    unsigned char buf[0x48];
    FILE *f = fopen(path, "rb");
    if (!f || fread(buf, 1, sizeof buf, f) != sizeof buf) { if (f) fclose(f); return 0; }
    fclose(f);
    *a = buf[0]; *b = buf[0x40];
    *w = 0; for (int i = 7; i >= 0; i--) *w = (*w << 8) | buf[i];
    return 1;
}
/* Spins (in C: no Python code runs meanwhile) on the bad image. */
int spins(const char *path)
{
    unsigned char a, b; uint64_t w;
    if (!bytes(path, &a, &b, &w)) return 0;
    if (a == 1 && b == 0) { volatile unsigned long n = 0; for (;;) n++; }
    return 1;
}
/* Crashes on the bad image. */
int crashes(const char *path)
{
    unsigned char a, b; uint64_t w;
    if (!bytes(path, &a, &b, &w)) return 0;
    if (a == 1 && b == 0) raise(SIGSEGV);
    return 1;
}
/* Of many epochs, spins on one late image only (line 0 holds 90, line 0x40 still 88). */
int late(const char *path)
{
    unsigned char a, b; uint64_t w;
    if (!bytes(path, &a, &b, &w)) return 0;
    if (w == 90 && b == 88) { volatile unsigned long n = 0; for (;;) n++; }
    return 1;
}
"""
    )
    subprocess.run([gcc, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return str(lib)


def test_a_library_checker_spinning_in_c_times_out_and_a_crash_is_counted(library: str) -> None:
    token = expected_token()
    spins = check_log(Replay.of(parse_log(LOG)), LibChecker.parse(f"{library}:spins", 0.3))
    assert (spins.inconsistent, spins.timed_out, spins.crashed) == (1, 1, 0)
    assert spins.minimal is not None and spins.minimal.token == token
    assert spins.minimal.verdict == "timed out after 0.3 s (the time limit per checker run)"
    crashes = check_log(Replay.of(parse_log(LOG)), LibChecker.parse(f"{library}:crashes"))
    assert (crashes.inconsistent, crashes.timed_out, crashes.crashed) == (1, 0, 1)
    assert crashes.minimal is not None and crashes.minimal.token == token
    told: list[tuple[str, str]] = []
    check_log(
        Replay.of(parse_log(LOG)),
        LibChecker.parse(f"{library}:crashes"),
        notice=lambda t, v: told.append((t, v)),
    )
    assert told == [(token, crashes.minimal.verdict)]


def test_a_hang_in_a_large_batch_costs_its_image_s_limit_not_the_batch_s(library: str) -> None:
    # 60 epochs: images go to the worker in batches growing to 256, and the hanging image
    # (value 90 is stored in epoch 45) is in a batch of over a hundred. The parent's
    # deadline for a batch is the limit times its images (a backstop); the worker's own
    # timer ends the run at the limit.
    ops = []
    for e in range(1, 61):
        ops += [store(0, 2 * e), store(0x40, 2 * e), f"FLUSH;0x{BASE:x};0x80", "FENCE"]
    text = log_text(*ops)
    started = time.monotonic()
    r = check_log(Replay.of(parse_log(text)), LibChecker.parse(f"{library}:late", 0.3))
    took = time.monotonic() - started
    assert r.images_checked > 100
    assert (r.inconsistent, r.timed_out) == (1, 1)
    # A batch of dozens of images times 0.3 s would be well past 10 s.
    assert took < 10, took


# -- lint: a finding's count and records are the records it merged ------------------------


def framed(off: int, value: int, line: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x};0x4011{line:02X}: main (prog.c:{line})"


def lint_of(*ops: str, simulator: bool = False) -> list[Any]:
    r = check_log(
        Replay.of(parse_log(log_text(*ops))),
        FunctionChecker(lambda img: True, "ok"),
        simulator=simulator,
    )
    return r.findings


@pytest.mark.parametrize("simulator", [False, True])
def test_lint_counts_agree_with_the_records_a_finding_merged(simulator: bool) -> None:
    # PMDK's basic example with its persist left out: four stores from one C line, none
    # flushed. Two of them run on (the simulator keeps them as one record of 16 bytes). The
    # third's first byte is changed (as strcpy stores it, it rewrites 7 bytes with the value
    # they hold: no overwrite).
    f, over = lint_of(
        framed(0, 0x70202C6F6C6C6568, 58),
        framed(8, 0x6E65747369737265, 58),
        framed(9, 0x746E6574736973FF, 58),
        framed(0x11, 0x79726F6D656D20, 58),
        simulator=simulator,
    )
    assert (f.kind, f.record, f.records, f.count) == ("store never flushed", 2, 4, 4)
    # The third store rewrites 7 bytes of the second (no fence after it: found at the end).
    assert (over.kind, over.record, over.records, over.offset, over.length) == (
        "store overwrote a store that was not yet durable",
        4,
        1,
        9,
        7,
    )
    assert str(f).startswith("error: store never flushed: STORE #2 (and 3 more) at prog.c:58")
    assert str(f).endswith(", 25 byte(s)")  # ("(and 3 more)" is the count)


@pytest.mark.parametrize("simulator", [False, True])
def test_lint_names_the_records_it_concerns_not_others_at_the_same_place(
    simulator: bool,
) -> None:
    # The first store to +0 from line 7 is flushed and fenced; the second is never flushed:
    # the finding is about record #6 alone.
    ops = [framed(0, 1, 7), f"FLUSH;0x{BASE:x};0x40", "FENCE", framed(0, 2, 7)]
    (f,) = lint_of(*ops, simulator=simulator)
    assert (f.kind, f.record, f.records, f.count) == ("store never flushed", 5, 1, 1)
    # The HTML report marks that record on the timeline, and no other.
    from pmemsim.html.pmlog import log_finding, log_run

    run = log_run(Replay.of(parse_log(log_text(*ops))))
    assert [run.ops[i].label for i in log_finding(run, f).ops] == ["STORE #5"]
    # A flush of a line with nothing stored since it was durable: the second FLUSH only.
    ops = [framed(0, 1, 7), f"FLUSH;0x{BASE:x};0x40", "FENCE", f"FLUSH;0x{BASE:x};0x40", "FENCE"]
    (f,) = lint_of(*ops, simulator=simulator)
    assert (f.kind, f.record, f.records, f.count) == ("flush of clean lines", 5, 1, 1)


SCENARIO = """
import time
from pmemsim.explore import CrashCheck

def work(view):
    view.write(0, b"\\x01")
    view.write(0x40, b"\\x02")
    view.persist(0, 0x80)

def recover(view):
    if view.read(0, 1) == b"\\x01" and view.read(0x40, 1) == b"\\x00":
        while True:  # a recovery that loops on the bad image
            time.sleep(0.02)
    return True

looping = CrashCheck("looping", work, recover, size=4096, run_timeout=0.3)
"""


@pytest.mark.parametrize("engine", ["lazy", "exhaustive"])
def test_a_recovery_looping_on_one_image_stops_at_its_run_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    log = tmp_path / "two.log"
    log.write_text(LOG)
    scenario = tmp_path / "scenario.py"
    scenario.write_text(SCENARIO)
    out = tmp_path / "r.json"
    argv = ["check-log", str(log), "--recovery", f"{scenario}::looping", "--json", str(out)]
    assert main([*argv, "--engine", engine]) == 1
    std = capsys.readouterr()
    got = json.loads(out.read_text())
    assert (got["inconsistent"], got["timed_out"]) == (1, 1)
    assert got["minimal"]["token"] == expected_token()
    verdict = "timed out: recovery did not finish within 0.3 s (run_timeout)"
    assert got["minimal"]["checker"] == verdict
    assert f"the run_timeout of {scenario}::looping" in std.out
    assert verdict in std.err


# Inconsistent at the first fence (the first line's store without the second's), then it
# never returns on the image holding the third store (with no time limit), after touching
# a file so that the test knows.
STOPS = """#!/bin/sh
a=$(od -An -tu1 -j0 -N1 "$1" | tr -d ' ')
b=$(od -An -tu1 -j64 -N1 "$1" | tr -d ' ')
c=$(od -An -tu1 -j128 -N1 "$1" | tr -d ' ')
if [ "$a" = 1 ] && [ "$b" = 0 ]; then exit 1; fi
if [ "$c" = 7 ]; then touch "$1.hanging"; touch {flag}; while :; do sleep 1; done; fi
exit 0
"""


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_check_shows_the_minimal_failure_so_far(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """A check stopped by Ctrl-C (a checker looping on image after image, say) said only
    "interrupted": the failures found so far were lost with it."""
    log = tmp_path / "stops.log"
    log.write_text(
        LOG.removesuffix("|STOP") + f"|{store(0x80, 7)}|FLUSH;0x{BASE + 0x80:x};0x40|FENCE|STOP"
    )
    flag = tmp_path / "hanging"
    checker = tmp_path / "stops.sh"
    checker.write_text(STOPS.format(flag=flag))
    checker.chmod(0o755)
    argv = ["check-log", str(log), "--timeout", "none", "--", str(checker)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmemsim", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert "Traceback" not in err
    assert "INTERRUPTED: 1 inconsistent image(s) found so far" in out, out
    assert "the minimal inconsistent crash so far:" in out
    token = expected_token()
    assert f"--replay {token}" in out
