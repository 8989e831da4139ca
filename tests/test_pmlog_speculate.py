"""A library checker tried in the checking process, in a fork (pmemsim.pmlog.speculate): its
result is taken only when it is the one the careful way (worker processes) gives; anything
else ends the speculation and the careful way runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pmemsim.pmlog import LibChecker, Replay, check_log, forked, parse_log, read_log, speculate
from pmemsim.pmlog import check as check_module

DATA = Path(__file__).resolve().parent / "data" / "pmlog"
BASE = 0x10000000


def _log(*ops: str) -> str:
    reg = f"REGISTER_FILE;/nonexistent-pmemsim-test/pool.bin;0x{BASE:x};0x1000;0x0"
    return "|".join(["START", reg, *ops, "STOP"])


def _store(off: int, value: int) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x8"


def _flush(off: int) -> str:
    return f"FLUSH;0x{BASE + off:x};0x40"


# Epochs of 4 stores, append.c's invariant kept (FIXED) or broken in some images (BROKEN).
FIXED = _log(
    *[
        rec
        for e in range(6)
        for rec in (
            _store(0x80 + 8 * e, e),
            _store(0xC0, e),
            _flush(0x80),
            _flush(0xC0),
            "FENCE",
        )
    ],
    "m.BEGIN",
    _store(0x100, 9),
    "m.END",
)
BROKEN = _log(
    *[
        rec
        for e in range(4)
        for rec in (_store(0x40, 42 if e % 2 else 7), _store(8, e + 1), _flush(0x40), "FENCE")
    ]
)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/data/pmlog/checkers.c as a shared library."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C checkers cannot be built")
    out = tmp_path_factory.mktemp("checkers") / "libcheckers.so"
    src = str(DATA / "checkers.c")
    subprocess.run([gcc, "-O1", "-shared", "-fPIC", "-o", str(out), src], check=True)
    return str(out)


@pytest.fixture
def tries(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Speculation on every log, however short, and whatever threads earlier tests left
    running; each attempt's outcome (taken or not)."""
    monkeypatch.setattr(forked, "SPECULATE_FROM", 0)
    monkeypatch.setattr(
        check_module,
        "worth_speculating",
        lambda replay, checker, jobs: (
            isinstance(checker, LibChecker) and jobs == 1 and len(replay.pools) == 1
        ),
    )
    outcomes: list[bool] = []
    real = speculate.attempt

    def counted(file: str, run: Any) -> Any:
        got = real(file, run)
        outcomes.append(got[0] is not None)
        return got

    monkeypatch.setattr(speculate, "attempt", counted)
    return outcomes


def _careful(monkeypatch: pytest.MonkeyPatch, *args: Any, **kw: Any) -> dict[str, Any]:
    with monkeypatch.context() as m:
        m.setattr(check_module, "worth_speculating", lambda *a: False)
        return _plain(check_log(*args, **kw))


def _plain(result: Any) -> dict[str, Any]:
    d: dict[str, Any] = result.as_dict()
    d.pop("seconds")
    return d


@pytest.mark.parametrize("text", [FIXED, None], ids=["hand-written", "append-fixed"])
def test_a_consistent_log_is_judged_in_the_fork_with_the_careful_result(
    lib: str, tries: list[bool], monkeypatch: pytest.MonkeyPatch, text: str | None
) -> None:
    replay = Replay.of(
        parse_log(text) if text else read_log(str(DATA / "append-fixed-logfile.log"))
    )
    checker = LibChecker.parse(f"{lib}:check")
    for engine in ("exhaustive", "accumulative"):
        got = _plain(check_log(replay, checker, engine=engine))
        assert got == _careful(monkeypatch, replay, checker, engine=engine)
        assert got["verdict"] == "consistent"
    assert tries == [True, True]


@pytest.mark.parametrize(
    ("function", "timeout"), [("check", None), ("crashy", None), ("hangs", 0.3)]
)
def test_an_inconsistent_image_a_crash_or_a_hang_ends_the_speculation(
    lib: str, tries: list[bool], monkeypatch: pytest.MonkeyPatch, function: str, timeout: Any
) -> None:
    replay = Replay.of(parse_log(BROKEN))
    spec = f"{lib}:{function}"
    checker = LibChecker.parse(spec) if timeout is None else LibChecker.parse(spec, timeout)
    got = _plain(check_log(replay, checker))
    assert got == _careful(monkeypatch, replay, checker)
    assert got["verdict"] == "inconsistent"
    assert tries == [False]


# FIXED's consistent epochs, then one BROKEN epoch: inconsistent only at the last points.
LATE = (
    FIXED.removesuffix("|STOP")
    + "|"
    + "|".join([_store(0x40, 42), _store(8, 1), _flush(0x40), "FENCE", "STOP"])
)


@pytest.mark.parametrize(("function", "timeout"), [("counted", None), ("hangs", 0.3)])
def test_after_a_speculation_ends_the_careful_way_judges_only_the_rest(
    lib: str,
    tries: list[bool],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    function: str,
    timeout: Any,
) -> None:
    """The images of the points before the one the speculation stopped at were judged
    consistent there: the careful way counts them and judges the rest, with the result a
    careful way alone gives."""
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("PMEMSIM_TEST_SEEN", str(seen))

    def calls() -> int:
        return len(seen.read_text().splitlines()) if seen.exists() else 0

    replay = Replay.of(parse_log(LATE))
    checker = LibChecker.parse(f"{lib}:{function}", timeout)
    careful = _careful(monkeypatch, replay, checker)
    assert careful["verdict"] == "inconsistent"
    alone = calls()
    seen.unlink(missing_ok=True)
    stopped: list[tuple[int, int]] = []  # (calls so far, the point the speculation noted)
    real = speculate.attempt

    def noted(file: str, run: Any) -> Any:
        got = real(file, run)
        stopped.append((calls(), got[1]))
        return got

    monkeypatch.setattr(speculate, "attempt", noted)
    got = _plain(check_log(replay, checker))
    assert tries == [False]
    assert got == careful
    ((speculated, point),) = stopped
    assert point > 0
    if function == "counted":
        again = calls() - speculated
        # Judged again only from the failing point on; what was skipped was judged there.
        assert 0 < again < alone // 2
        assert speculated + again >= alone


def test_a_checker_that_writes_its_image_ends_the_speculation(
    lib: str, tries: list[bool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PMEMSIM_TEST_SEEN", str(tmp_path / "seen.txt"))
    replay = Replay.of(parse_log(FIXED))
    checker = LibChecker.parse(f"{lib}:scribbles")
    got = _plain(check_log(replay, checker))
    assert tries == [False]
    # The careful way rebuilds the image the checker scribbled on: each image is seen as it is.
    seen = (tmp_path / "seen.txt").read_text().splitlines()
    (tmp_path / "seen.txt").unlink()
    assert got == _careful(monkeypatch, replay, checker)
    careful = (tmp_path / "seen.txt").read_text().splitlines()
    assert seen[: -len(careful)] and seen[-len(careful) :] == careful


def test_a_checker_that_repairs_its_image_cannot_hide_a_later_bug(
    lib: str, tries: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its write lands in the image file the speculation replays in: the speculation ends
    at once, before a later image is built on it."""
    # The record is never flushed: the first image (all persisted) is consistent, and the
    # count it zeroes would make the image that lost the record look consistent too.
    replay = Replay.of(parse_log(_log(_store(0x40, 42), _store(8, 1), _flush(0), "FENCE")))
    checker = LibChecker.parse(f"{lib}:repairs")
    got = _plain(check_log(replay, checker))
    assert tries == [False]
    assert got == _careful(monkeypatch, replay, checker)
    assert got["verdict"] == "inconsistent"


def test_the_checker_sees_the_careful_ways_markers_image_after_image(
    lib: str, tries: list[bool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("PMEMSIM_TEST_SEEN", str(seen))
    replay = Replay.of(parse_log(FIXED))
    checker = LibChecker.parse(f"{lib}:markers")
    got = _plain(check_log(replay, checker))
    assert tries == [True]
    fast = seen.read_text()
    seen.unlink()
    assert got == _careful(monkeypatch, replay, checker)
    assert fast == seen.read_text() and "m.BEGIN" in fast


def test_not_tried_for_several_files_jobs_threads_or_short_logs(
    lib: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checker = LibChecker.parse(f"{lib}:check")
    short = Replay.of(parse_log(FIXED))
    two = Replay.of(read_log(str(DATA / "twofiles-fixed.log")))
    assert len(two.pools) == 2
    threads = [1]
    monkeypatch.setattr(forked.threading, "active_count", lambda: threads[0])
    assert not forked.worth_speculating(short, checker, 1)  # shorter than SPECULATE_FROM
    monkeypatch.setattr(forked, "SPECULATE_FROM", 0)
    assert forked.worth_speculating(short, checker, 1)
    assert not forked.worth_speculating(short, checker, 2)
    assert not forked.worth_speculating(two, checker, 1)
    threads[0] = 2  # a fork copies only the calling thread
    assert not forked.worth_speculating(short, checker, 1)


def test_no_inotify_means_no_speculation_and_no_traceback(
    lib: str,
    tries: list[bool],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Without a way to see the checker write its image, the speculation is not tried out."""
    from pmemsim.pmlog import imagefile

    def unavailable() -> None:
        raise OSError(38, "inotify_init1")

    replay = Replay.of(parse_log(FIXED))
    checker = LibChecker.parse(f"{lib}:check")
    want = _careful(monkeypatch, replay, checker)
    capfd.readouterr()
    monkeypatch.setattr(imagefile, "Inotify", unavailable)
    assert _plain(check_log(replay, checker)) == want
    assert tries == [False]
    assert "Traceback" not in capfd.readouterr().err
