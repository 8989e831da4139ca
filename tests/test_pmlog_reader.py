"""Reading pmemcheck's logs exactly as valgrind writes them (tests/data/pmlog has real ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pmemsim.cli import main
from pmemsim.pmlog import (
    DeepSync,
    Fence,
    Flush,
    FunctionChecker,
    LogFormatError,
    Marker,
    Replay,
    Store,
    check_log,
    parse_log,
    read_log,
)

DATA = Path(__file__).resolve().parent / "data" / "pmlog"
BASE = 0x483C000


def ops_of(log: Any) -> list[tuple[object, ...]]:
    """Operations as comparable tuples (type and every field)."""
    out = []
    for op in log.iter_operations():
        fields = tuple(getattr(op, f) for f in op.__slots__)
        out.append((type(op).__name__, *fields))
    return out


def u64(img: memoryview, off: int) -> int:
    return int.from_bytes(img[off : off + 8], "little")


def append_ok(img: memoryview) -> bool:
    """append.c's invariant: a count of 1 means the record (42, line 1) is there."""
    return u64(img, 8) == 0 or u64(img, 0x40) == 42


# -- the real logs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["append-bug-stderr", "append-bug-q", "append-bug-aligned", "append-fixed-logfile"]
)
def test_every_output_mode_reads_to_the_same_operations(name: str) -> None:
    log = read_log(str(DATA / f"{name}.log"))
    (reg,) = log.files
    assert (reg.path, reg.base, reg.size, reg.offset) == (
        "/tmp/pmemsim-pmlog-test/pool",
        BASE,
        4096,
        0,
    )
    stores = [op for op in log.operations if isinstance(op, Store)]
    assert [(s.address - BASE, s.value, s.size) for s in stores] == [(0x40, 42, 8), (8, 1, 8)]
    markers = [(m.name, m.begin) for m in log.operations if isinstance(m, Marker)]
    assert markers == [("append", True), ("append", False)]
    # Valgrind logs every CPUID as a fence: dozens before the file is even registered.
    assert log.counts["FENCE"] > 60
    assert log.start[0] == 0 and log.records == log.stop[0] + 1


def essentials(log: Any) -> list[tuple[object, ...]]:
    """What a record says, without where it is or its frames."""
    out: list[tuple[object, ...]] = []
    for op in log.iter_operations():
        if isinstance(op, Store):
            out.append(("STORE", op.index, op.address, op.value, op.size))
        elif isinstance(op, Flush | DeepSync):
            out.append((type(op).__name__, op.index, op.address, op.size))
        elif isinstance(op, Marker):
            out.append(("MARKER", op.index, op.name, op.begin))
        else:
            out.append(("FENCE", op.index))
    return out


def test_banner_prefix_break_before_stop_and_summary_are_not_records() -> None:
    text = (DATA / "append-bug-stderr.log").read_text()
    assert "\n==" in text and text.splitlines()[-3].endswith("== |STOP")  # broken before STOP
    # Without -q (banner, summary, frames) and with it: the same records, same numbers.
    log = read_log(str(DATA / "append-bug-stderr.log"))
    assert essentials(log) == essentials(read_log(str(DATA / "append-bug-q.log")))


def test_stack_frames_at_any_depth_inlined_and_in_libraries() -> None:
    s = [
        op
        for op in read_log(str(DATA / "append-bug-stderr.log")).operations
        if isinstance(op, Store)
    ]
    assert [len(x.frames) for x in s] == [1, 1]
    assert s[0].frames[0].endswith(": append_record (append.c:21)")
    deep = [
        op
        for op in read_log(str(DATA / "append-fixed-logfile.log")).operations
        if isinstance(op, Store)
    ]
    assert [f.split(": ", 1)[1] for f in deep[0].frames] == [
        "append_record (append.c:21)",
        "main (append.c:42)",
    ]
    inl = [op for op in read_log(str(DATA / "inline.log")).operations if isinstance(op, Store)]
    # "0x..: put (inline.c:8)0x..: outer (inline.c:9);0x..: main (...)": three frames.
    assert [f.split(": ", 1)[1].split(" (")[0] for f in inl[-1].frames] == ["put", "outer", "main"]
    lib = [
        op for op in read_log(str(DATA / "libpmem2-page.log")).operations if isinstance(op, Store)
    ]
    assert "??? (in /usr/lib/" in lib[0].frames[0] and "libpmem2.so" in lib[0].frames[0]
    assert lib[0].frames[-1].endswith("main (libpmem2_page.c:22)")


def test_nested_library_markers_and_deep_sync() -> None:
    log = read_log(str(DATA / "libpmem2-page.log"))
    names = [(m.name, m.begin) for m in log.operations if isinstance(m, Marker)]
    assert names == [
        ("pmem2_memmove", True),
        ("libpmem2", True),
        ("libpmem2", False),
        ("pmem2_memmove", False),
    ]
    two = read_log(str(DATA / "twofiles-bug.log"))
    (deep,) = [op for op in two.operations if isinstance(op, DeepSync)]
    assert (deep.address, deep.size) == (BASE + 0x1000, 0x40)
    assert [f.path.rsplit("/", 1)[1] for f in two.files] == ["data", "flag"]


def test_program_output_mixed_into_the_log_is_taken_out() -> None:
    mixed = read_log(str(DATA / "noisy-mixed.log"))
    clean = read_log(str(DATA / "noisy-logfile.log"))
    assert "stored 10" in (DATA / "noisy-mixed.log").read_text()
    assert essentials(mixed) == essentials(clean)
    stores = [op for op in mixed.operations if isinstance(op, Store)]
    assert [s.address - BASE for s in stores] == [8 * i for i in range(40)]


@pytest.mark.parametrize("name", ["append-bug-stderr", "append-bug-q", "append-bug-aligned"])
def test_real_bug_is_found_and_named_by_source_line(name: str) -> None:
    r = check_log(Replay.of(read_log(str(DATA / f"{name}.log"))), FunctionChecker(append_ok, "ok"))
    assert r.verdict == "inconsistent" and r.exact
    m = r.minimal
    assert m is not None and [(s.address - BASE, s.value) for s in m.lost] == [(0x40, 42)]
    assert m.point.markers == ("append",)


def test_real_fixed_log_is_consistent_planned_and_lazily() -> None:
    replay = Replay.of(read_log(str(DATA / "append-fixed-logfile.log")))
    planned = check_log(replay, FunctionChecker(append_ok, "ok"), engine="exhaustive")
    assert planned.verdict == "consistent" and planned.exact and planned.images_checked == 3
    lazy = check_log(replay, FunctionChecker(append_ok, "ok"))  # the default in-process
    assert lazy.engine == "lazy" and lazy.verdict == "consistent" and lazy.exact
    # Two checker runs: the count 0 (the record is not read) and 1 (it is); the read paths
    # of every point cover its images.
    assert lazy.images_checked == 2 and lazy.read_paths >= 3


# -- flushes: an instruction flushes one line --------------------------------------------------


def _one_file(*ops: str) -> str:
    return "|".join(
        ["START", "REGISTER_FILE;/nonexistent-pmemsim-test/p;0x10000000;0x1000;0x0", *ops, "STOP"]
    )


def _flushed_lines(*ops: str) -> set[int]:
    """Lines whose store is durable at the end (a fence follows the flushes)."""
    stores = [f"STORE;0x{0x10000000 + 64 * i:x};0x1;0x8" for i in range(4)]
    trace = Replay.of(parse_log(_one_file(*stores, *ops, "FENCE"))).record()
    end = trace.points[-1]
    assert end.kind == "end"
    return set(range(4)) - {u.offset // 64 for u in end.state.units}


def test_a_one_line_flush_at_an_unaligned_address_flushes_the_line_holding_it() -> None:
    assert _flushed_lines("FLUSH;0x10000008;0x40") == {0}  # not line 1, which it reaches into
    assert _flushed_lines("FLUSH;0x10000078;0x40") == {1}
    assert _flushed_lines("FLUSH;0x10000040;0x40") == {1}


def test_a_range_flush_flushes_every_line_it_covers() -> None:
    assert _flushed_lines("FLUSH;0x10000000;0x10") == {0}  # msync's page-aligned range
    assert _flushed_lines("FLUSH;0x10000008;0x80") == {0, 1, 2}
    assert _flushed_lines("FLUSH;0x10000038;0x10") == {0, 1}
    assert _flushed_lines("FLUSH;0x10000000;0x100") == {0, 1, 2, 3}


# -- errors: record, line and column --------------------------------------------------------


def test_a_malformed_record_names_its_number_line_and_column(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    log.write_text("==7== banner\n==7== START|FENCE|STORE;0x10;0x1\n==7== |STOP\n")
    with pytest.raises(LogFormatError) as info:
        read_log(str(log))
    err = info.value
    assert (err.record, err.line, err.column) == (2, 2, 19)
    assert "line 2, column 19" in str(err) and "expected STORE" in str(err)
    assert "--log-file" in str(err)  # a valgrind log: maybe the program's output


def test_counts_are_the_last_runs_and_an_earlier_runs_records_are_checked_too() -> None:
    last = (
        "START|STORE;0x10;0x1;0x8|STORE;0x18;0x2;0x8|FLUSH;0x0;0x40|FENCE|DEEP_SYNC;0x0;0x40"
        "|m.BEGIN|m.END|STOP"
    )
    log = parse_log("START|STORE;0x10;0x1;0x8|FLUSH;0x0;0x40|FENCE|FENCE|STOP|" + last)
    assert log.counts == {"STORE": 2, "FLUSH": 1, "FENCE": 1, "DEEP_SYNC": 1, "MARKER": 2}
    for bad in ("STORE;0x10;0x1;0x9", "FLUSH;0x10", "FENCE;0x1"):
        with pytest.raises(LogFormatError) as info:
            parse_log(f"START|FENCE|{bad}|STOP|" + last)
        assert info.value.record == 2


@pytest.mark.parametrize(("blanks", "column"), [("", 7), ("  ", 9), ("\t ", 9)])
def test_a_record_with_or_without_blanks_before_it_is_named_at_its_first_letter(
    blanks: str, column: int
) -> None:
    with pytest.raises(LogFormatError) as info:
        parse_log(f"START|{blanks}STORE;0x10;0x1 |STOP")
    assert (info.value.record, info.value.line, info.value.column) == (1, 1, column)


def test_bytes_that_are_not_utf8_are_named_inside_the_log_and_ignored_outside(
    tmp_path: Path,
) -> None:
    log = tmp_path / "bin.log"
    ok = "REGISTER_FILE;/nonexistent-pmemsim-test/p;0x1000;0x1000;0x0"
    log.write_bytes(b"\xff\xfe program output\nSTART|" + ok.encode() + b"|STOP\n\xc3 summary\n")
    assert read_log(str(log)).files[0].size == 0x1000
    log.write_bytes(b"START|FENCE|\n STO\xffRE;0x1|STOP\n")
    with pytest.raises(LogFormatError) as info:
        read_log(str(log))
    err = info.value
    assert (err.record, err.line, err.column) == (2, 2, 5)
    assert "byte 0xff at line 2, column 5 is not UTF-8" in str(err)
    assert "\\xff" in str(err)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ("REGISTER_FILE;/p;0x1000;0x8000000000000000;0x0", "size 0x8000000000000000 is too large"),
        ("REGISTER_FILE;/p;0x1000;0x1000;0x8000000000000000", "file offset"),
        ("REGISTER_FILE;/p;0xfffffffffffff000;0x2000;0x0", "past the end of the address space"),
        ("FLUSH;0x1000;0x8000000000000000", "too large"),
        ("FLUSH;0x10000000000000000;0x40", "too large"),
        ("DEEP_SYNC;0xffffffffffffffc0;0x80", "past the end"),
        ("STORE;0xfffffffffffffffc;0x1;0x8", "past the end"),
        ("STORE;0x_10;0x1;0x8", "not a hexadecimal number"),
        ("STORE;0x10;+0x1;0x8", "not a hexadecimal number"),
        ("FLUSH;0x 10;0x40", "not a hexadecimal number"),
    ],
)
def test_numbers_out_of_range_name_the_record(record: str, problem: str) -> None:
    with pytest.raises(LogFormatError, match="record #1") as info:
        parse_log(f"START|{record}|STOP")
    assert problem in str(info.value)


def test_a_log_cut_short_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "cut.log"
    text = (DATA / "append-bug-q.log").read_text()
    log.write_text(
        text[: text.index("|STOP")] + "\n==1== The number of overwritten stores exceeded"
    )
    assert main(["check-log", str(log), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "no STOP record follows the last START" in err and "stopped before the end" in err


def test_text_between_runs_is_ignored_and_operations_come_from_the_last() -> None:
    first = "==1== START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x1000;0x1000;0x0|STOP\n"
    summary = "==1== Stores not made persistent properly:\n==1== [0] \tAddress: 0x1000\n"
    second = "==2== banner: not | a | record\n==2== START|STORE;0x1000;0x1;0x8|FENCE\n==2== |STOP\n"
    log = parse_log(first + summary + second)
    assert [type(op) for op in log.operations] == [Store, Fence]
    assert log.operations[0].index == 9 and len(log.files) == 1  # counted from the first START


# -- valgrind's chunked output, emulated -------------------------------------------------------

_PID = "==4242== "


def _valgrind_output(messages: list[str], foreign: dict[int, str]) -> str:
    """What valgrind writes for these messages: a prefix at every line start, handed over in
    512-character chunks (and at the end of a message that ends a line); ``foreign[k]`` is
    what a program writes right after the k-th chunk handed over in the middle of a message
    (the only moments at which it can land inside the record line)."""
    out: list[str] = []
    buf: list[str] = []
    used = 0
    at_left = True
    chunk = 0
    for msg in messages:
        for c in msg:
            if at_left:
                buf.append(_PID)
                used += len(_PID)
            buf.append(c)
            used += 1
            at_left = c == "\n"
            if used >= 512:
                out.append("".join(buf))
                buf.clear()
                used = 0
                out.append(foreign.get(chunk, ""))
                chunk += 1
        if at_left and used:
            out.append("".join(buf))
            buf.clear()
            used = 0
    out.append("".join(buf))
    return "".join(out)


RECORDS = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 4088), st.integers(0, (1 << 64) - 1), st.booleans()).map(
            lambda t: (
                f"|STORE;0x{0x10000000 + t[0] // 8 * 8:x};0x{t[1]:x};0x8"
                + (f";0x{t[0]:X}: fn_{t[0]} (file.c:{t[0]})" if t[2] else "")
            )
        ),
        st.integers(0, 63).map(lambda i: f"|FLUSH;0x{0x10000000 + 64 * i:x};0x40"),
        st.just("|FENCE"),
    ),
    min_size=1,
    max_size=80,
)
FOREIGN = st.dictionaries(
    st.integers(0, 30),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=200).map(
        lambda t: t + "\n"
    ),
    max_size=6,
)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(records=RECORDS, foreign=FOREIGN, quiet=st.booleans())
def test_program_output_at_any_chunk_boundary_is_taken_out(
    records: list[str], foreign: dict[int, str], quiet: bool
) -> None:
    banner = [] if quiet else ["pmemcheck-1.0, a simple persistent store checker\n", "\n"]
    reg = "|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x10000000;0x1000;0x0"
    messages = [*banner, "START", reg, *records]
    messages += (
        ["|STOP\n"] if quiet else ["\n", "|STOP\n", "Number of stores not made persistent: 0\n"]
    )
    clean = parse_log(_valgrind_output(messages, {}))
    mixed = parse_log(_valgrind_output(messages, foreign))
    assert essentials(mixed) == essentials(clean)
    assert len(clean.operations) == len(records)
    assert essentials(clean) == essentials(parse_log("START" + reg + "".join(records) + "|STOP"))


# -- streaming -------------------------------------------------------------------------------


def test_a_long_log_is_streamed_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from pmemsim.pmlog import grammar

    monkeypatch.setattr(grammar, "_PIECE", 4096)  # pieces much smaller than the logs

    def peak(stores: int) -> int:
        log = tmp_path / f"{stores}.log"
        body = "".join(
            f"|STORE;0x{0x10000000 + 8 * (i % 512):x};0x{i:x};0x8" for i in range(stores)
        )
        reg = "REGISTER_FILE;/nonexistent-pmemsim-test/p;0x10000000;0x1000;0x0"
        log.write_text(f"==1== START|{reg}{body}|FLUSH;0x10000000;0x1000|FENCE|STOP\n")
        tracemalloc.start()
        try:
            parsed = read_log(str(log))
            n = sum(1 for _ in parsed.iter_operations())
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert n == stores + 2 and parsed.counts["STORE"] == stores
        assert isinstance(parsed.record(stores + 2), Flush)
        return top

    # One piece of the text at a time (a record object lives for one step): four times the
    # log, the same memory (the 0.5 MB of text, or the records as objects, would show).
    small, large = peak(4_000), peak(16_000)
    assert large - small < 50_000, (small, large)


# -- lint -------------------------------------------------------------------------------------


def test_lint_names_the_record_and_the_c_line_of_a_store_never_flushed() -> None:
    r = check_log(
        Replay.of(read_log(str(DATA / "append-bug-stderr.log"))), FunctionChecker(append_ok, "ok")
    )
    (f,) = r.findings
    assert (f.kind, f.severity, f.record, f.records, f.offset, f.length) == (
        "store never flushed",
        "error",
        65,
        1,
        0x40,
        8,
    )
    assert f.source == "append.c:21 in append_record"
    assert "error: store never flushed: STORE #65 at append.c:21 in append_record" in r.report()
    assert r.as_dict()["lint"][0]["record"] == 65
    fixed = check_log(
        Replay.of(read_log(str(DATA / "append-fixed-logfile.log"))),
        FunctionChecker(append_ok, "ok"),
    )
    assert fixed.findings == []  # valgrind's fences after each clflush are not the program's


def test_lint_of_flushes_never_fenced_and_of_clean_lines() -> None:
    text = _one_file(
        "STORE;0x10000000;0x1;0x8;0x1: put (kv.c:10)",
        "FLUSH;0x10000000;0x40",
        "FENCE",
        "FLUSH;0x10000040;0x40",  # nothing stored there
        "FENCE",
        "STORE;0x10000080;0x2;0x8;0x2: put (kv.c:11)",
        "FLUSH;0x10000080;0x40",  # and no fence after it
    )
    r = check_log(Replay.of(parse_log(text)), FunctionChecker(lambda i: True, "t"))
    got = {(f.kind, f.record, f.source) for f in r.findings}
    assert got == {
        ("flush of clean lines", 5, None),
        ("store flushed but never fenced", 7, "kv.c:11 in put"),
    }
    quiet = check_log(Replay.of(parse_log(text)), FunctionChecker(lambda i: True, "t"), lint=False)
    assert quiet.findings == []


_HEXES = st.text("0123456789abcdefABCDEFxX_ -+g", min_size=0, max_size=20)
_DIGITS = st.one_of(
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=18),
    st.sampled_from(["1", "8", "08", "9", "0", "ff", "1ff", "ffffffffffffffff", "1" * 16]),
)


@st.composite
def _records(draw: st.DrawFn) -> str:
    """Common records and near misses: any field may be odd."""
    kind = draw(st.sampled_from(["STORE", "FLUSH", "FENCE", "FENCE ", "STORE ", "Flush"]))
    if kind.startswith("FENCE"):
        return kind
    n = 3 if kind == "STORE" else 2
    fields = [
        draw(st.sampled_from(["0x", "0x", "0x", "0X", "", "0x0"]))
        + draw(st.one_of(_DIGITS, _DIGITS, _HEXES))
        for _ in range(n)
    ]
    tail = draw(st.sampled_from(["", ";main (a.c:3)", ";f\u00e9", ";", ";;x"]))
    return ";".join([kind, *fields]) + (tail if kind == "STORE" else "")


@given(_records())
@settings(max_examples=600, deadline=None)
@example("STORE;0xfffffffffffffffc;0x1;0x8")  # (at the edges of what the regex takes)
@example("STORE;0x10;0x1ffff;0x2")
@example("FLUSH;0xffffffffffffffc0;0x40")
@example("FLUSH;0x10;0xffffffffffffffff")
def test_the_checking_pass_takes_a_common_record_only_where_the_parser_does(text: str) -> None:
    """The pass that checks a log matches runs of the common records with one regex: whatever
    it takes must be what the record parser reads as that record's kind (which the pass
    counts by the record's first word)."""
    from pmemsim.pmlog import grammar

    run = grammar._RUN(f"FENCE|{text}|FENCE|")
    assert run is not None and run.end() in (6, len(text) + 13)
    if run.end() == 6:
        return
    kind = text.partition(";")[0]
    parsed = grammar._parse_record(0, (0, 0, 1, 1, text, False), True)
    assert parsed is {"STORE": Store, "FLUSH": Flush, "FENCE": Fence}[kind]
