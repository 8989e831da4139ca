"""The pmemcheck / pmreorder store log: parsing, replay, check-log, export-log."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pmemsim as pm
from pmemsim.cli import main
from pmemsim.errors import ErrorCode, InvalidArgumentError, NotSupportedError
from pmemsim.explore import CrashCheck, check, current_crash, marker, record
from pmemsim.pmlog import (
    DeepSync,
    Fence,
    Flush,
    FunctionChecker,
    LogFormatError,
    LogPool,
    Marker,
    ProgramChecker,
    Replay,
    Store,
    check_log,
    export_log,
    format_log,
    parse_log,
    recovery_checker,
)

ROOT = Path(__file__).resolve().parent.parent
BASE = 0x10000000
NOFILE = "/nonexistent-pmemsim-test/pool.bin"


def log_text(*ops: str, path: str = NOFILE, size: int = 0x1000) -> str:
    return "|".join(["START", f"REGISTER_FILE;{path};0x{BASE:x};0x{size:x};0x0", *ops, "STOP"])


def store(off: int, value: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x}"


def flush(off: int, n: int = 64) -> str:
    return f"FLUSH;0x{BASE + off:x};0x{n:x}"


def run(text: str, fn: Callable[[memoryview], object], **kw: Any) -> Any:
    """check-log by plan (exhaustive unless said): these tests count images."""
    kw.setdefault("engine", "exhaustive")
    return check_log(Replay.of(parse_log(text)), FunctionChecker(fn, "test"), **kw)


def u32(img: memoryview, off: int) -> int:
    return int.from_bytes(img[off : off + 4], "little")


def u64(img: memoryview, off: int) -> int:
    return int.from_bytes(img[off : off + 8], "little")


# The two small logs of pmreorder-log.md.
BAD_ORDER = log_text(
    store(12, 1, 4), store(0, 1, 4), store(4, 1, 4), store(8, 1, 4), flush(0), "FENCE"
)
SAME_LINE = log_text(store(0, 1), store(8, 1), flush(0), "FENCE")


def flag_guards_abc(img: memoryview) -> bool:
    return u32(img, 12) == 0 or u32(img, 0) == u32(img, 4) == u32(img, 8) == 1


def q1_implies_q0(img: memoryview) -> bool:
    return u64(img, 8) != 1 or u64(img, 0) == 1


def flag_guards_data(img: memoryview) -> bool:
    """Flag at offset 0 (line 0) published => data at 64 (line 1) is there."""
    return u64(img, 0) == 0 or u64(img, 64) == 7


# -- parsing -------------------------------------------------------------------------------


def test_every_record_type_parses_with_its_fields() -> None:
    text = (
        "START|REGISTER_FILE;/a;b.bin;0x10000000;0x1000;0x40|"
        "STORE;0x10000008;0x0102;0x2;main (x.c:3);0x4011b4|FLUSH;0x10000000;0x40|FENCE|"
        "tx.BEGIN|lib.op.BEGIN|DEEP_SYNC;0x10000000;0x1000|lib.op.END|tx.END|STOP\n"
    )
    log = parse_log(text)
    (reg,) = log.files
    assert (reg.path, reg.base, reg.size, reg.offset, reg.index) == ("/a;b.bin", BASE, 4096, 64, 1)
    s, f, fe, b1, b2, d, e2, e1 = log.operations
    assert isinstance(s, Store) and (s.address, s.value, s.size) == (BASE + 8, 0x102, 2)
    assert s.data == b"\x02\x01"  # little-endian
    assert s.frames == ("main (x.c:3)", "0x4011b4")
    assert isinstance(f, Flush) and (f.address, f.size) == (BASE, 64)
    assert isinstance(fe, Fence)
    assert isinstance(b1, Marker) and (b1.name, b1.begin) == ("tx", True)
    assert isinstance(b2, Marker) and (b2.name, b2.begin) == ("lib.op", True)
    assert isinstance(e2, Marker) and (e2.name, e2.begin) == ("lib.op", False)
    assert isinstance(d, DeepSync) and (d.address, d.size) == (BASE, 4096)
    assert isinstance(e1, Marker) and (e1.name, e1.begin) == ("tx", False)
    assert [op.index for op in log.operations] == list(range(2, 10))
    assert text[s.pos :].startswith("STORE;0x10000008") and text[d.pos :].startswith("DEEP_SYNC")
    assert log.records == 11 and log.record(4) is fe and log.record(1) is None


def test_only_operations_between_the_last_start_and_the_last_stop_count() -> None:
    text = log_text(store(0, 1)) + "\n" + "START|FENCE|STOP|" + store(8, 2) + "|STOP\n"
    log = parse_log(text)
    assert [type(op) for op in log.operations] == [Fence, Store]
    assert len(log.files) == 1  # registrations count wherever they are
    assert log.start[0] == 4


BAD_LOGS = [
    # (text, record number, problem)
    ("STORE;0x10;0x1;0x8|STOP", 0, "no START"),
    ("START|FENCE", 0, "no STOP"),
    ("START|STOP|START|FENCE", 2, "no STOP"),
    ("START|STORE;0x10;zz;0x4|STOP", 1, "value 'zz'"),
    ("START|STORE;16;0x1;0x4|STOP", 1, "address '16'"),
    ("START|STORE;0x10;0x1|STOP", 1, "expected STORE"),
    ("START|STORE;0x10;0x1;0x9|STOP", 1, "1 to 8 bytes"),
    ("START|STORE;0x10;0x0;0x0|STOP", 1, "1 to 8 bytes"),
    ("START|STORE;0x10;0x100;0x1|STOP", 1, "does not fit"),
    ("START|FENCE|FLUSH;0x10|STOP", 2, "expected FLUSH"),
    ("START|DEEP_SYNC;0x10;0x8;0x1|STOP", 1, "expected DEEP_SYNC"),
    ("START|FENCE;0x1|STOP", 1, "takes no fields"),
    ("START|LOAD;0x10;0x8|STOP", 1, "unknown record type 'LOAD'"),
    ("START|hello|STOP", 1, "not a record"),
    ("START|a.BEGIN|b.BEGIN|a.END|b.END|STOP", 3, "'b' is open"),
    ("START|a.END|STOP", 1, "none is open"),
    ("START|FENCE|a.BEGIN|STOP", 3, "'a' begun at record #2 never ends"),
    ("START|REGISTER_FILE;/p;0x1000;0x0;0x0|STOP", 1, "maps 0 bytes"),
    ("START|REGISTER_FILE;0x1000;0x10;0x0|STOP", 1, "expected REGISTER_FILE"),
]


@pytest.mark.parametrize(("text", "number", "problem"), BAD_LOGS)
def test_malformed_log_names_the_record_and_where_it_starts(
    text: str, number: int, problem: str
) -> None:
    text = "  " + text.replace("|", " |\n", 1)  # blanks and newlines do not move positions
    with pytest.raises(LogFormatError) as info:
        parse_log(text)
    err = info.value
    assert isinstance(err, InvalidArgumentError) and err.code == ErrorCode.EINVAL
    assert err.record == number, str(err)
    assert problem in str(err)
    assert f"record #{number} at character {err.offset}" in str(err)
    assert text[err.offset :].startswith(err.text.rstrip(".")[:20])


def test_a_log_that_is_not_text_is_a_typed_error(tmp_path: Path) -> None:
    from pmemsim.pmlog import read_log

    bad = tmp_path / "bin.log"
    bad.write_bytes(b"START|\xff\xfe|STOP")
    with pytest.raises(LogFormatError, match="not UTF-8"):
        read_log(str(bad))


# -- the registered file ---------------------------------------------------------------------


def test_base_image_is_the_file_content_or_zeros_and_the_file_is_never_written(
    tmp_path: Path,
) -> None:
    pool = tmp_path / "pool.bin"
    content = bytes(range(256)) * 16
    pool.write_bytes(content)
    os.utime(pool, (1_000_000, 1_000_000))
    seen: list[bytes] = []

    def keep(img: memoryview) -> bool:
        seen.append(bytes(img))
        return True

    r = run(log_text(store(0, 0xAB, 1), flush(0), "FENCE", path=str(pool)), keep)
    assert r.verdict == "consistent" and r.images_checked == 2
    assert {s[1:] for s in seen} == {content[1:]}  # the file's bytes wherever the log is silent
    assert {s[0] for s in seen} == {0x00, 0xAB}
    assert pool.read_bytes() == content and pool.stat().st_mtime == 1_000_000
    seen.clear()
    run(log_text(store(0, 0xAB, 1), flush(0), "FENCE"), keep)
    assert {s[1:] for s in seen} == {bytes(4095)}


def test_same_file_registered_twice_is_one_file_and_aliases_share_its_bytes() -> None:
    twice = f"REGISTER_FILE;{NOFILE};0x{BASE:x};0x1000;0x0"
    alias = f"REGISTER_FILE;{NOFILE};0x20000000;0x1000;0x0"
    text = log_text(
        twice, alias, "STORE;0x20000000;0x5;0x8", f"FLUSH;0x{BASE:x};0x40", "FENCE", store(64, 6)
    )
    replay = Replay.of(parse_log(text))
    assert len(replay.pool.mappings) == 2 and replay.pool.size == 4096
    seen: set[tuple[int, int]] = set()

    def note(img: memoryview) -> bool:
        seen.add((u64(img, 0), u64(img, 64)))
        return True

    check_log(replay, FunctionChecker(note, "note"), engine="exhaustive")
    # The store through the alias landed at offset 0 and the flush of the other address
    # made it durable: after the fence it is in every image.
    assert (5, 0) in seen and (5, 6) in seen and (0, 0) in seen  # (0, 0): before the fence
    assert {a for a, _ in seen if seen and _ == 6} == {5}


def test_conflicting_registrations_are_refused_and_several_files_are_pools() -> None:
    clash = f"REGISTER_FILE;{NOFILE};0x{BASE + 0x800:x};0x1000;0x0"
    with pytest.raises(LogFormatError, match="other file offsets"):
        Replay.of(parse_log(log_text(clash)))
    other = "REGISTER_FILE;/nonexistent-pmemsim-test/other.bin;0x20000000;0x1000;0x0"
    replay = Replay.of(parse_log(log_text(other)))
    assert [p.path for p in replay.pools] == [NOFILE, "/nonexistent-pmemsim-test/other.bin"]
    overlap = "REGISTER_FILE;/nonexistent-pmemsim-test/other.bin;0x10000800;0x1000;0x0"
    with pytest.raises(LogFormatError, match="registers for another file"):
        Replay.of(parse_log(log_text(overlap)))
    with pytest.raises(NotSupportedError, match="2 different files"):
        LogPool.from_log(parse_log(log_text(other)))
    with pytest.raises(LogFormatError, match="registers no file"):
        LogPool.from_log(parse_log("START|FENCE|STOP"))


def test_records_outside_the_file_are_left_out_and_counted() -> None:
    text = log_text(
        "STORE;0x8;0x1;0x8",
        "FLUSH;0x0;0x40",
        "DEEP_SYNC;0x0;0x40",
        store(0x1000 - 4, 0xFFFFFFFF_FFFFFFFF, 8),  # straddles the end: cut to 4 bytes
        flush(0),
        "FENCE",
    )
    r = run(text, lambda img: True)
    assert r.ignored == {"STORE": 1, "FLUSH": 1, "DEEP_SYNC": 1} and r.clipped == 1
    assert r.stores == 1 and "left out (outside every registered file)" in r.report()


# -- what check-log finds --------------------------------------------------------------------


def test_pmreorder_bad_ordering_log_is_found_with_the_lost_store_named() -> None:
    r = run(BAD_ORDER, flag_guards_abc)
    assert r.verdict == "inconsistent" and r.exact
    m = r.minimal
    assert m is not None and len(m.lines) == 1 and len(m.lost) == 1
    (lost,) = m.lost
    # Four stores to line 0, the flag first: losing only the last store (b or c) while the
    # flag persisted is the smallest crash that breaks the invariant.
    assert (lost.record, lost.address, lost.size, lost.value) == (5, BASE + 8, 4, 1)
    assert "STORE #5 at 0x10000008" in m.describe() and "before the FENCE (record #7)" in m.where


def test_same_line_stores_flushed_together_are_not_a_false_positive() -> None:
    r = run(SAME_LINE, q1_implies_q0)
    assert r.verdict == "consistent" and r.exact and r.images_checked == 3  # prefixes only
    # The same invariant across two lines is a real bug, and is found.
    r2 = run(
        log_text(store(0, 1), store(64, 1), flush(0, 128), "FENCE"),
        lambda i: u64(i, 64) != 1 or u64(i, 0) == 1,
    )
    assert r2.verdict == "inconsistent"


def test_eviction_of_an_unflushed_flag_before_its_data_is_found() -> None:
    # The data is flushed; the flag (another line) never is, yet it may be evicted first.
    evicted = log_text(store(64, 7), store(0, 1), flush(64), "FENCE")
    r = run(evicted, flag_guards_data)
    assert r.verdict == "inconsistent"
    # pmreorder's model (unflushed stores never persist) misses it.
    assert run(evicted, flag_guards_data, engine="flushed-only").verdict == "consistent"
    m = r.minimal
    assert m is not None and [s.record for s in m.lost] == [2]  # the data's store
    assert m.point.index == 0  # before the fence
    fixed = log_text(store(64, 7), flush(64), "FENCE", store(0, 1), flush(0), "FENCE")
    assert run(fixed, flag_guards_data).verdict == "consistent"


def test_a_bug_in_a_trailing_epoch_without_a_fence_is_found() -> None:
    r = run(log_text(store(64, 7), store(0, 1), flush(0, 128)), flag_guards_data)
    assert r.verdict == "inconsistent" and r.crash_points == 1
    assert r.minimal is not None and "at the end of the log" in r.minimal.where


def test_torn_store_reports_the_part_it_lost() -> None:
    # An 8-byte store at offset 4 crosses an 8-byte boundary: its halves persist apart.
    r = run(
        log_text(store(4, 0x11111111_22222222), flush(0), "FENCE"),
        lambda i: u64(i, 0) == 0 or u32(i, 8) == 0x11111111,
    )
    assert r.verdict == "inconsistent"
    m = r.minimal
    assert m is not None and len(m.lost) == 1
    (lost,) = m.lost
    assert (lost.record, lost.address, lost.size, lost.whole) == (2, BASE + 8, 4, False)
    assert "(part of it)" in str(lost)


@pytest.mark.parametrize("engine", ["exhaustive", "accumulative"])
def test_a_checker_sees_its_images_crash_point_and_the_crash_before_is_back_after(
    engine: str,
) -> None:
    # The judge keeps the first point's token and only replaces the value after: each
    # image still names its own point, and the check gives back what was there before.
    from pmemsim.markers import CrashInfo, reset_crash, set_crash

    text = log_text(
        *[op for i in range(4) for op in (store(64 * i, i + 1), flush(64 * i), "FENCE")]
    )
    seen: list[tuple[int, int]] = []

    def note(img: memoryview) -> bool:
        info = current_crash()
        assert info is not None
        seen.append((info.point, sum(u64(img, 64 * i) != 0 for i in range(4))))
        return True

    outer = CrashInfo(99, "outer", ())
    token = set_crash(outer)
    try:
        r = run(text, note, engine=engine)
        assert current_crash() is outer
    finally:
        reset_crash(token)
    assert r.verdict == "consistent" and r.crash_points == 5
    # Point k (before fence k, from 0) shows k stores and maybe store k; the end's image is
    # point 3's all-persisted one, judged there.
    assert {p for p, _ in seen} == set(range(4))
    assert all(n in (p, p + 1) for p, n in seen)


def test_an_exhaustive_point_past_max_images_is_capped() -> None:
    # Five lines in flight, two options each: 32 images at the fence, past 16. The one-loop
    # exhaustive plan takes the state's image count to see it (and falls back to the cap).
    ops = [*[store(64 * i, i + 1) for i in range(5)], *[flush(64 * i) for i in range(5)]]
    text = log_text(*ops, "FENCE")
    capped = run(text, lambda img: True, max_images=16)
    assert not capped.exact and capped.images_checked <= 16 + 1
    assert capped.images_possible == 33 and capped.images_skipped > 0
    assert any("more than 16 images" in limit for limit in capped.as_dict()["limits"])
    whole = run(text, lambda img: True, max_images=32)
    assert whole.exact and (whole.images_checked, whole.images_skipped) == (32, 0)


def test_markers_reach_the_checker_and_choose_the_engine() -> None:
    text = log_text(
        "tx.BEGIN",
        store(0, 1),
        "add.BEGIN",
        store(64, 2),
        flush(0, 128),
        "FENCE",
        "add.END",
        store(128, 3),
        flush(128),
        "FENCE",
        "tx.END",
        store(192, 4),
    )
    seen: set[tuple[tuple[str, ...], str]] = set()

    def note(img: memoryview) -> bool:
        info = current_crash()
        assert info is not None
        seen.add((info.markers, os.environ["PMREORDER_MARKERS"]))
        return True

    before = os.environ.get("PMREORDER_MARKERS")
    r = run(text, note)
    # PMREORDER_MARKERS: every marker record before the crash, as pmreorder sets it.
    assert seen == {
        (("tx", "add"), "tx.BEGIN|add.BEGIN"),
        (("tx",), "tx.BEGIN|add.BEGIN|add.END"),
        ((), "tx.BEGIN|add.BEGIN|add.END|tx.END"),
    }
    assert os.environ.get("PMREORDER_MARKERS") == before
    seen.clear()
    r2 = run(text, note, markers={"tx": "ReorderFull", "add": "NoReorderNoCheck"})
    # The innermost marker with an engine wins.
    assert seen == {
        (("tx",), "tx.BEGIN|add.BEGIN|add.END"),
        ((), "tx.BEGIN|add.BEGIN|add.END|tx.END"),
    }
    assert not r2.exact and r2.images_checked < r.images_checked


def test_read_guided_is_refused_for_logs() -> None:
    with pytest.raises(InvalidArgumentError, match="read-guided"):
        run(SAME_LINE, lambda i: True, engine="read-guided")


# -- the fast path against the engine --------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("store"),
            st.integers(0, 3 * 64 + 60),
            st.sampled_from([1, 2, 4, 8]),
            st.integers(0, 2),
        ),
        st.tuples(st.just("flush"), st.integers(0, 3), st.just(0), st.just(0)),
        st.tuples(st.just("fence"), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=14,
)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(ops=OPS, with_file=st.booleans())
def test_fast_path_checks_exactly_the_distinct_images_the_simulator_allows(
    ops: list[tuple[str, int, int, int]], with_file: bool, tmp_path_factory: Any
) -> None:
    records = []
    for kind, a, size, value in ops:
        if kind == "store":
            records.append(store(a, int.from_bytes(bytes([value]) * size, "little"), size))
        elif kind == "flush":
            records.append(flush(a * 64))
        else:
            records.append("FENCE")
    path = NOFILE
    initial = None
    if with_file:
        path = str(tmp_path_factory.mktemp("pool") / "pool.bin")
        initial = bytes([1]) * 4096  # stores of 1s write what is there already
        Path(path).write_bytes(initial)
    replay = Replay.of(parse_log(log_text(*records, path=path)))
    seen: list[bytes] = []

    def keep(img: memoryview) -> bool:
        seen.append(bytes(img))
        return True

    r = check_log(replay, FunctionChecker(keep, "keep"), max_images=1 << 20, engine="exhaustive")
    trace = replay.record()
    expected = {image.snapshot().to_bytes() for p in trace.points for image in p.state.images()}
    assert len(seen) == len(set(seen)) == r.images_checked
    assert set(seen) == expected


def test_jobs_do_not_change_the_result_in_process() -> None:
    text = log_text(*[store(64 * i, i + 1) for i in range(6)], flush(0, 6 * 64), "FENCE")
    checker = FunctionChecker(lambda i: u64(i, 5 * 64) == 0 or u64(i, 0) == 1, "c")
    one = check_log(Replay.of(parse_log(text)), checker, engine="exhaustive").as_dict()
    two = check_log(Replay.of(parse_log(text)), checker, jobs=2).as_dict()
    one.pop("seconds"), two.pop("seconds")
    assert one == two and one["inconsistent"] > 0 and one["minimal"]["checker"]


# -- checker programs and the command line --------------------------------------------------

CHECKER = """\
import os, sys
if len(sys.argv) > 2:
    with open(sys.argv[1], "a") as f:
        f.write(os.environ["PMREORDER_MARKERS"] + "\\n")
path = sys.argv[-1]
data = open(path, "rb").read()
with open(path, "r+b") as f:  # a checker may scribble on its image: it is a copy
    f.write(b"\\xff" * 16)
g = lambda o: int.from_bytes(data[o:o + 4], "little")
sys.exit(0 if g(12) == 0 or g(0) == g(4) == g(8) == 1 else 3)
"""


@pytest.fixture
def program(tmp_path: Path) -> list[str]:
    script = tmp_path / "checker.py"
    script.write_text(CHECKER)
    return [sys.executable, str(script)]


def test_checker_program_judges_file_images_and_sees_markers(
    tmp_path: Path, program: list[str]
) -> None:
    pool = tmp_path / "pool.bin"
    pool.write_bytes(bytes(4096))
    out = tmp_path / "markers.txt"
    text = log_text("op.BEGIN", *BAD_ORDER.split("|")[2:-1], "op.END", store(64, 1), path=str(pool))
    r = check_log(Replay.of(parse_log(text)), ProgramChecker((*program, str(out))))
    assert r.verdict == "inconsistent" and r.minimal is not None
    assert r.minimal.verdict.startswith("exit status 3")
    assert set(out.read_text().splitlines()) == {"op.BEGIN", "op.BEGIN|op.END"}
    assert pool.read_bytes() == bytes(4096)


def test_cli_exit_statuses_json_and_jobs(
    tmp_path: Path, program: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad, good = tmp_path / "bad.log", tmp_path / "good.log"
    bad.write_text(BAD_ORDER + "\n")
    good.write_text(SAME_LINE + "\n")
    j1, j2 = tmp_path / "1.json", tmp_path / "2.json"
    assert main(["check-log", str(bad), "--json", str(j1), "--", *program]) == 1
    printed = capsys.readouterr().out
    assert "INCONSISTENT (exact)" in printed and "STORE #5 at 0x10000008" in printed
    assert main(["check-log", str(bad), "--jobs", "2", "--json", str(j2), "--", *program]) == 1
    one, two = json.loads(j1.read_text()), json.loads(j2.read_text())
    assert one.pop("seconds") >= 0 and two.pop("seconds") >= 0
    assert one == two
    for key in ("images_checked", "inconsistent", "crash_points", "images_possible", "exact"):
        assert key in one
    assert one["engine"] == "exhaustive" and one["seed"] == 0
    assert one["minimal"]["lost_stores"] == [
        {"record": 5, "address": BASE + 8, "size": 4, "value": 1, "source": None, "frames": []}
    ]
    checker_py = tmp_path / "chk.py"
    checker_py.write_text(
        "def check(img):\n    return int.from_bytes(img[8:16], 'little') != 1 "
        "or int.from_bytes(img[0:8], 'little') == 1\n"
    )
    assert main(["check-log", str(good), "--checker-py", f"{checker_py}:check"]) == 0
    assert "CONSISTENT (exact)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{bad}", "--", "true"], "record #2 at character"),
        (["{missing}", "--", "true"], "no such log file"),
        (["{good}"], "name one checker"),
        (["{good}", "--checker-py", "x:y", "--", "true"], "name one checker"),
        (["{good}", "--engine", "nope", "--", "true"], "unknown exploration strategy"),
        (["{good}", "-x", "tx", "--", "true"], "MARKER=ENGINE"),
        (["{good}", "--checker-py", "{good}.py:f"], "no such Python file"),
        (["{good}", "--", "/nonexistent-pmemsim-test/checker"], "cannot run the checker"),
        (["{good}", "--replay", "zz", "--", "true"], "not a crash token"),
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, good = tmp_path / "bad.log", tmp_path / "good.log"
    bad.write_text("START|" + store(0, 1) + "|STORE;0x1;0x1|STOP")
    good.write_text(SAME_LINE)
    names = {"bad": str(bad), "good": str(good), "missing": str(tmp_path / "none.log")}
    assert main(["check-log", *[a.format(**names) for a in argv]]) == 2
    assert message in capsys.readouterr().err


def test_crash_points_at_markers_only_are_not_an_exact_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "m.log"
    log.write_text(log_text("m.BEGIN", store(0, 1), flush(0), "FENCE", "m.END"))
    out = tmp_path / "r.json"
    for mode, exact in (("barriers", True), ("markers", False)):
        argv = ["check-log", str(log), "--crash-points", mode, "--json", str(out), "--", "true"]
        assert main(argv) == 0
        got = json.loads(out.read_text())
        assert got["exact"] is exact
        assert got["limits"] == ([] if exact else ["crash points at marker boundaries only"])
        said = capsys.readouterr().out
        assert ("(exact)" in said) is exact
        assert ("; crash points at marker boundaries only)" in said) is not exact


def test_cli_replay_rebuilds_the_failing_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "bad.log"
    log.write_text(BAD_ORDER)
    checker = tmp_path / "chk.py"
    checker.write_text(
        "def check(i):\n    g = lambda o: int.from_bytes(i[o:o + 4], 'little')\n"
        "    return g(12) == 0 or g(0) == g(4) == g(8) == 1\n"
    )
    out = tmp_path / "r.json"
    spec = f"{checker}:check"
    assert main(["check-log", str(log), "--checker-py", spec, "--json", str(out)]) == 1
    token = json.loads(out.read_text())["minimal"]["token"]
    assert f"--replay {token}" in capsys.readouterr().out
    image = tmp_path / "image.bin"
    argv = ["check-log", str(log), "--replay", token, "--image-out", str(image)]
    assert main([*argv, "--checker-py", spec]) == 1
    data = image.read_bytes()
    assert [int.from_bytes(data[o : o + 4], "little") for o in (0, 4, 8, 12)] == [1, 1, 0, 1]
    # The persisted image of the same point is consistent.
    assert main(["check-log", str(log), "--replay", "0:", "--checker-py", spec]) == 0


# -- exporting -------------------------------------------------------------------------------


def _mixed(v: pm.View) -> None:
    with marker("put"):
        v.u64[1] = 0x0807060504030201
        v.write(20, b"abcdefghijkl")  # 12 bytes at 20: parts of 4, 8
        v.memcpy(256, bytes(range(1, 65)), pm.MemFlag.NONTEMPORAL)
        v.persist(0, 32)
    v.deep_flush(0, 8)


def test_export_writes_stores_in_8_byte_parts_and_nt_stores_as_flushed_stores() -> None:
    c = CrashCheck("mixed", _mixed, lambda v: True)
    log = parse_log(export_log(c, "/tmp/p.bin"))
    assert [(f.path, f.base, f.size) for f in log.files] == [("/tmp/p.bin", BASE, 4096)]
    ops = log.operations
    assert isinstance(ops[0], Marker) and ops[0].name == "put" and ops[0].begin
    stores = [op for op in ops if isinstance(op, Store)]
    assert [(s.address - BASE, s.size) for s in stores[:3]] == [(8, 8), (20, 4), (24, 8)]
    assert stores[0].value == 0x0807060504030201 and stores[1].data == b"abcd"
    assert stores[0].frames and "_mixed (test_pmlog.py:" in stores[0].frames[0]
    nt = [s for s in stores if s.address >= BASE + 256]
    assert len(nt) == 8 and all(s.size == 8 for s in nt)
    after = ops[ops.index(nt[-1]) + 1]
    assert isinstance(after, Flush) and (after.address, after.size) == (BASE + 256, 64)
    kinds = [type(op).__name__ for op in ops[ops.index(after) + 1 :]]
    assert kinds == ["Fence", "Flush", "Fence", "Marker", "DeepSync"]
    assert isinstance(ops[-1], DeepSync) and (ops[-1].address, ops[-1].size) == (BASE, 64)


def test_export_refuses_what_a_log_cannot_say() -> None:
    c = CrashCheck("b", _mixed, lambda v: True, granularity=pm.Granularity.BYTE)
    with pytest.raises(InvalidArgumentError, match="x86 cache lines"):
        export_log(c)
    with pytest.raises(InvalidArgumentError, match="page-aligned"):
        format_log([], 4096, "/p", base=0x10000008)
    with pytest.raises(InvalidArgumentError, match=r"'\|'"):
        format_log([], 4096, "/p|q")


@settings(max_examples=25, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=40)), max_size=8))
def test_exported_stores_rebuild_the_visible_memory(writes: list[tuple[int, bytes]]) -> None:
    def work(v: pm.View) -> None:
        for off, data in writes:
            v.write(off, data)

    trace = record(work, keep_ops=True)
    log = parse_log(format_log(trace.ops, 4096, "/p"))
    memory = bytearray(4096)
    for op in log.operations:
        assert isinstance(op, Store) and op.size <= 8
        assert (op.address % 8) + op.size <= 8  # never across an 8-byte boundary
        memory[op.address - BASE : op.address - BASE + op.size] = op.data
    expected = bytearray(4096)
    for off, data in writes:
        expected[off : off + len(data)] = data
    assert memory == expected


def _eviction(v: pm.View) -> None:
    v.u64[8] = 7
    v.u64[0] = 1
    v.persist(64, 8)


def _eviction_fixed(v: pm.View) -> None:
    v.u64[8] = 7
    v.persist(64, 8)
    v.u64[0] = 1
    v.persist(0, 8)


def _recover_flag(v: pm.View) -> bool:
    return v.u64[0] == 0 or v.u64[8] == 7


def _marked_copy(v: pm.View) -> None:
    with marker("fill"):
        v.memcpy(64, b"x" * 100)  # temporal (< 256 bytes): stores, flush, fence
        v.u64[0] = 100
    v.persist(0, 8)
    v.deep_flush(0, 4096)


def _recover_copy(v: pm.View) -> bool:
    n = v.u64[0]
    return n == 0 or v.read(64, n) == b"x" * n


def _torn(v: pm.View) -> None:
    v.pack_into("<QQ", 4, 1, 2)  # 16 bytes at 4: three atoms
    v.persist(0, 24)
    v.u64[8] = 1
    v.persist(64, 8)


def _recover_torn(v: pm.View) -> bool:
    return v.u64[8] == 0 or v.unpack_from("<QQ", 4) == (1, 2)


def _scenarios() -> list[CrashCheck]:
    sys.path.insert(0, str(ROOT))
    try:
        from scenarios import append_log
    finally:
        sys.path.remove(str(ROOT))
    return [
        append_log.correct,
        append_log.one_fence,
        append_log.no_fence,
        CrashCheck("eviction", _eviction, _recover_flag, expect="inconsistent"),
        CrashCheck("eviction fixed", _eviction_fixed, _recover_flag),
        CrashCheck("marked copy", _marked_copy, _recover_copy),
        CrashCheck("torn", _torn, _recover_torn),
    ]


@pytest.mark.parametrize("c", _scenarios(), ids=lambda c: c.name)
def test_same_verdict_through_the_api_and_through_check_log_on_the_exported_log(
    c: CrashCheck,
) -> None:
    api = check(c, strategy="exhaustive", progress=None)
    replay = Replay.of(parse_log(export_log(c, NOFILE)))
    logged = check_log(replay, FunctionChecker(recovery_checker(c), c.name), engine="exhaustive")
    assert logged.verdict == api.verdict == c.expect
    assert (logged.crash_points, logged.images_possible, logged.images_checked) == (
        api.crash_points,
        api.images_possible,
        api.images_checked,
    )
    assert logged.inconsistent == api.inconsistent
    if api.minimal is not None:
        assert logged.minimal is not None and logged.minimal.token == str(api.minimal.crash)


def test_cli_export_then_check_log_agrees_with_pmemsim_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = ROOT / "scenarios" / "append_log.py"
    name = "append_log: record and tail under one fence"
    out = tmp_path / "one.log"
    pool = tmp_path / "pool.bin"
    argv = ["export-log", "--scenario", f"{scenario}::{name}", "-o", str(out)]
    assert main([*argv, "--pool", str(pool), "--write-pool"]) == 0
    assert pool.read_bytes() == bytes(4096)
    assert parse_log(out.read_text()).files[0].path == str(pool)
    js = tmp_path / "r.json"
    rec = f"{scenario}::{name}"
    assert (
        main(
            ["check-log", str(out), "--recovery", rec, "--engine", "exhaustive", "--json", str(js)]
        )
        == 1
    )
    c = next(c for c in _scenarios() if c.name == name)
    api = check(c, strategy="exhaustive", progress=None)
    got = json.loads(js.read_text())
    assert (got["images_checked"], got["inconsistent"]) == (api.images_checked, api.inconsistent)
    assert pool.read_bytes() == bytes(4096)
    # Several checks in the file: pick one.
    capsys.readouterr()
    assert main(["export-log", str(scenario), "-o", str(out)]) == 2
    assert "pick one with -k NAME" in capsys.readouterr().err
    assert main(["export-log", str(scenario), "-k", name, "-o", str(out), "--no-frames"]) == 0
    assert ";write_record" not in out.read_text()


def test_an_empty_log_has_one_crash_point_and_one_image() -> None:
    r = run(log_text(), lambda i: True)
    assert (r.crash_points, r.images_checked, r.verdict) == (1, 1, "consistent")


def test_marker_engines_from_a_json_file_and_a_checker_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "m.log"
    log.write_text(
        log_text("op.BEGIN", store(0, 1), store(64, 1), flush(0, 128), "FENCE", "op.END")
    )
    table = tmp_path / "engines.json"
    table.write_text(json.dumps({"op": "NoReorderNoCheck"}))
    out = tmp_path / "r.json"
    argv = ["check-log", str(log), "-x", str(table), "--json", str(out), "--", "true"]
    assert main(argv) == 0
    got = json.loads(out.read_text())
    assert got["images_checked"] == 1 and not got["exact"]  # only the end was checked
    table.write_text("[1, 2]")
    assert main(argv) == 2 and "MARKER: ENGINE" in capsys.readouterr().err
    slow = ["check-log", str(log), "--timeout", "0.2", "--", sys.executable, "-c"]
    assert main([*slow, "import time; time.sleep(30)"]) == 1
    assert "timed out after 0.2 s" in capsys.readouterr().out
