"""A ``--checker-py`` function has a time limit per run, as a checker program or library has:
a checker that loops forever on one image (a corrupted next pointer followed round and round)
costs that image the limit and the verdict "timed out", and the check goes on; in this
process (main thread: SIGALRM; another thread: a watchdog) and in worker processes
(``--jobs 2``). tests/test_distributed_logs.py has it on a Dask cluster."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from pmemsim.cli import main
from pmemsim.errors import InvalidArgumentError
from pmemsim.pmlog import FunctionChecker, Replay, check_log, checkers, parse_log, readpaths

BASE = 0x10000000
# Two lines stored, flushed together, fenced. Crash point 0 has four images; one of them
# holds the second line's store and not the first's ("0:0.0=1"): the one the checkers
# below loop on.
LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;/nonexistent-pmemsim-test/loop.pool;0x{BASE:x};0x1000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        f"STORE;0x{BASE + 0x40:x};0x2;0x8",
        f"FLUSH;0x{BASE:x};0x80",
        "FENCE",
        "STOP",
    ]
)
TOKEN = "0:0.0=1"

#: Loops in pure Python, reading its image, on the one image; its own ``except Exception``
#: does not keep the limit from stopping it.
LOOPING = """
def check(image):
    while image[0x40] and not image[0]:
        try:
            pass
        except Exception:
            pass
    return True
"""

SLOW = """
import time

def check(image):
    if image[0x40] and not image[0]:
        time.sleep(0.6)
    return True
"""

VERDICT = "timed out after 0.3 s (the time limit per checker run)"


def loops(image: Any) -> bool:
    while image[0x40] and not image[0]:
        pass
    return True


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, *args: str
) -> tuple[int, str, str, dict[str, Any]]:
    log = tmp_path / "loop.log"
    log.write_text(LOG)
    chk = tmp_path / "chk.py"
    chk.write_text(source)
    out = tmp_path / "r.json"
    code = main(["check-log", str(log), "--checker-py", f"{chk}:check", "--json", str(out), *args])
    std = capsys.readouterr()
    return code, std.out, std.err, json.loads(out.read_text()) if out.exists() else {}


def _verdicts(got: dict[str, Any]) -> dict[str, Any]:
    """What the three ways of judging must agree on (not the timings)."""
    return {k: v for k, v in got.items() if k not in ("seconds", "images_per_second")}


def test_a_python_checker_looping_on_one_image_times_out_there_inline_and_in_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for where in ([], ["--jobs", "2"]):
        code, out, err, got = _run(
            tmp_path, capsys, LOOPING, "--timeout", "0.3", "--engine", "exhaustive", *where
        )
        assert code == 1, out + err
        assert (got["inconsistent"], got["timed_out"], got["crashed"]) == (1, 1, 0)
        assert got["timeout"] == 0.3 and got["minimal"]["token"] == TOKEN
        assert got["minimal"]["checker"] == VERDICT
        assert "(1 timed out)" in out and "Traceback" not in err
        assert f"check-log: [crash {TOKEN}] {VERDICT}; counted as inconsistent, going on" in err
        assert "(--timeout SECONDS changes the time limit per checker run" in out
        runs.append(_verdicts(got))
    assert runs[0] == runs[1]


def test_lazy_exploration_goes_on_by_plan_after_a_run_past_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # (The default engine in this process: a run cut by the limit has no read path.)
    code, out, _, got = _run(tmp_path, capsys, LOOPING, "--timeout", "0.3")
    assert code == 1
    assert got["engine"] == "lazy (then exhaustive)"
    assert (got["inconsistent"], got["timed_out"], got["minimal"]["token"]) == (1, 1, TOKEN)
    assert got["minimal"]["checker"] == VERDICT
    assert "explored by plan, not lazily: a checker run " in out
    assert "; a read path needs a run that ends" in out


def test_a_loop_of_reads_under_lazy_exploration_ends_before_memory_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each read of a run is kept, so a run of more than READS reads is cut there too.
    monkeypatch.setattr(readpaths, "READS", 1000)
    code, out, _, got = _run(tmp_path, capsys, LOOPING, "--timeout", "0.3")
    assert code == 1 and got["timed_out"] == 1
    assert "a checker run read its image more than 1,000 times" in out


def test_no_limit_and_the_default_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0.6 s on the one image: past a 0.3 s limit, within none and within the default.
    code, _, _, got = _run(tmp_path, capsys, SLOW, "--timeout", "0.3", "--engine", "exhaustive")
    assert code == 1 and got["timed_out"] == 1 and got["minimal"]["checker"] == VERDICT
    code, _, err, got = _run(tmp_path, capsys, SLOW, "--timeout", "none")
    assert code == 0 and (got["timed_out"], got["timeout"]) == (0, None)
    assert "no time limit per checker run (--timeout none)" in err
    code, _, _, got = _run(tmp_path, capsys, SLOW)
    assert code == 0 and (got["timed_out"], got["timeout"]) == (0, 10.0)
    monkeypatch.setattr(checkers, "DEFAULT_TIMEOUT", 0.3)  # (the CLI reads it when it runs)
    code, _, _, got = _run(tmp_path, capsys, SLOW, "--jobs", "2")
    assert code == 1 and got["timed_out"] == 1 and got["minimal"]["checker"] == VERDICT


@pytest.mark.parametrize("limit", ["0", "-1", "nan", "soon"])
def test_a_bad_limit_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, capsys, LOOPING, "--timeout", limit)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_python_api_takes_the_limit_with_the_same_default() -> None:
    assert FunctionChecker(loops, "loops").timeout == checkers.DEFAULT_TIMEOUT == 10.0
    for bad in (0, -1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(InvalidArgumentError):
            FunctionChecker(loops, "loops", timeout=bad)  # type: ignore[arg-type]
    replay = Replay.of(parse_log(LOG))
    for engine in ("lazy", "exhaustive"):
        r = check_log(replay, FunctionChecker(loops, "loops", timeout=0.3), engine=engine)
        assert (r.inconsistent, r.timed_out, r.timeout) == (1, 1, 0.3)
        assert r.minimal is not None and r.minimal.verdict == VERDICT
        assert r.minimal.token == TOKEN


def test_a_check_run_from_another_thread_is_stopped_by_the_watchdog() -> None:
    replay = Replay.of(parse_log(LOG))
    out: list[Any] = []

    def run() -> None:
        checker = FunctionChecker(loops, "loops", timeout=0.3)
        out.append(check_log(replay, checker, engine="exhaustive"))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the looping checker was not stopped"
    assert (out[0].timed_out, out[0].minimal.verdict) == (1, VERDICT)
    # No timer thread is left behind (a process that forks later must not inherit one).
    assert not [x for x in threading.enumerate() if x.name == "pmemsim-run-timer"]
