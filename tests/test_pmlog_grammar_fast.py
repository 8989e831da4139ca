"""The reader's quick passes (texts without places, runs of common records matched at once)
against the careful reading they replaced, kept here as the reference: every record read
with its place and checked one by one. Same log, same errors, field for field."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from pmemsim.pmlog import grammar
from pmemsim.pmlog.grammar import (
    _CHUNK,
    _PREFIX,
    _REPORT,
    DeepSync,
    Fence,
    Flush,
    LogFormatError,
    Marker,
    RegisterFile,
    Store,
    _Seg,
    parse_log,
    read_log,
)

#: More examples, drawn at random (PMEMSIM_GRAMMAR_EXAMPLES=5000), for a longer search.
EXAMPLES = int(os.environ.get("PMEMSIM_GRAMMAR_EXAMPLES", "500"))
DERANDOMIZE = "PMEMSIM_GRAMMAR_EXAMPLES" not in os.environ

# -- the careful reader, as it was ---------------------------------------------------------


def reference_segments(pieces: grammar.Pieces) -> Iterator[_Seg]:
    """The lines of the text in segments, valgrind's prefix removed, its other messages
    left out (as grammar._segments was)."""
    pos = 0
    line = 1
    line_start = 0
    first = True
    prefixed = skip = False
    for piece in pieces():
        start = 0
        if first:
            prefixed = skip = False
            if piece[:1] in ("=", "-", "*", ">"):
                m = _PREFIX.match(piece)
                if m is not None:
                    skip = m.group(1) != "==" or _REPORT.match(piece, m.end()) is not None
                    prefixed = not skip
                    start = m.end()
        last = piece.endswith("\n")
        if not skip:
            body = piece[start : len(piece) - 1] if last else piece[start:]
            yield _Seg(body, pos + start, line, line_start, first, last, prefixed)
        pos += len(piece)
        first = last
        if last:
            line += 1
            line_start = pos


def reference_stream(segs: Iterator[_Seg]) -> Iterator[_Seg]:
    """pmemcheck's own text, a program's lines taken out; a segment per 512-character chunk of
    a log line (as grammar._valgrind_stream was: tests/test_pmlog_stream_fast.py compares
    the stream with it)."""
    valgrind = False
    in_log = False
    held: list[_Seg] = []
    count = 0
    crossed = False
    ended = False
    for s in segs:
        if s.first:
            if s.prefixed:
                valgrind = True
            if ended:
                ended = False
                if not s.prefixed and crossed and any(h.text for h in held):
                    held.clear()
                    in_log, count, crossed = True, 0, False
                    s = s._replace(first=False)
                else:
                    yield from held
                    held.clear()
                    in_log = False
            if s.prefixed:
                in_log, crossed = True, False
                count = s.pos - s.line_start
        if not valgrind:
            yield s
            continue
        if not in_log:
            continue
        text = s.text
        cut = 0
        while count + len(text) - cut >= _CHUNK:
            nxt = cut + _CHUNK - count
            piece = s._replace(text=text[cut:nxt], pos=s.pos + cut, first=s.first and not cut)
            yield from held
            held.clear()
            yield piece._replace(last=False)
            cut, count, crossed = nxt, 0, True
        count += len(text) - cut
        tail = s._replace(text=text[cut:], pos=s.pos + cut, first=s.first and not cut)
        if s.last:
            held.append(tail)
            ended = True
        else:
            held.append(tail)
    yield from held


def careful_tokens(pieces: grammar.Pieces) -> Iterator[grammar.Tok]:
    """Every record with its place, computed for each record as it is split off from the
    stream as it was."""
    n = 0
    carry = ""
    c_pos = c_line = c_start = 0
    c_prefixed = False
    for s in reference_stream(reference_segments(pieces)):
        body = s.text.replace("\r", "|")
        parts = body.split("|")
        off = s.pos
        end = len(parts) - 1
        for i, raw in enumerate(parts):
            pos, line, start, prefixed = off, s.line, s.line_start, s.prefixed
            off += len(raw) + 1
            if i == 0 and carry:
                raw = carry + raw
                pos, line, start, prefixed = c_pos, c_line, c_start, c_prefixed
                carry = ""
            if i == end and not s.last:
                if raw.strip():
                    carry, c_pos, c_line, c_start, c_prefixed = raw, pos, line, start, prefixed
                break
            text = raw.strip()
            if text:
                p = pos + len(raw) - len(raw.lstrip())
                yield (n, p, line, p - start + 1, text, prefixed)
                n += 1
    text = carry.strip()
    if text:
        p = c_pos + len(carry) - len(carry.lstrip())
        yield (n, p, c_line, p - c_start + 1, text, c_prefixed)


def careful_read(pieces: grammar.Pieces) -> dict[str, object]:
    """What the log reads to, every record parsed carefully with its place (or raises)."""
    toks = list(careful_tokens(pieces))
    starts = [t for t in toks if t[4] == "START"]
    if not starts:
        t0 = toks[0] if toks else (0, 0, 1, 1, "", False)
        raise LogFormatError(0, t0[1], t0[4], "the log has no START record", t0[2], t0[3])
    stops = [t for t in toks if t[4] == "STOP" and t[0] > starts[0][0]]
    first, start = starts[0][0], starts[-1]
    if not stops or stops[-1][0] < start[0]:
        raise LogFormatError(
            start[0] - first,
            start[1],
            start[4],
            "no STOP record follows the last START (was pmemcheck or the program stopped "
            "before the end?)",
            start[2],
            start[3],
        )
    stop = stops[-1]
    # Each earlier START runs to the next START or the first STOP after it.
    ranges = []
    for i, begin in enumerate(starts[:-1]):
        ends = [t[0] for t in stops if t[0] > begin[0]] + [starts[i + 1][0]]
        ranges.append((begin[0], min(ends), False))
    ranges.append((start[0], stop[0], True))
    files: list[RegisterFile] = []
    counts = {"STORE": 0, "FLUSH": 0, "FENCE": 0, "DEEP_SYNC": 0, "MARKER": 0}
    kinds = {Store: "STORE", Flush: "FLUSH", Fence: "FENCE", DeepSync: "DEEP_SYNC"}
    opened: list[Marker] = []
    names: set[str] = set()
    for tok in toks:
        inside = [last for lo, hi, last in ranges if lo < tok[0] < hi]
        if not inside:
            continue
        last = inside[0]
        try:
            rec = grammar._parse_record(tok[0] - first, tok)
        except LogFormatError as exc:
            if start[5]:
                raise LogFormatError(
                    exc.record,
                    exc.offset,
                    tok[4],
                    f"{exc.problem} (if the program wrote to the stream pmemcheck logged to, "
                    "record with --log-file instead)",
                    exc.line,
                    exc.column,
                ) from None
            raise
        if isinstance(rec, RegisterFile):
            files.append(rec)
        elif last and not isinstance(rec, str):
            counts[kinds.get(type(rec), "MARKER")] += 1
            if isinstance(rec, Marker):
                if rec.begin:
                    opened.append(rec)
                    names.add(rec.name)
                elif not opened or opened[-1].name != rec.name:
                    inner = f"{opened[-1].name!r} is open" if opened else "none is open"
                    problem = f"marker {rec.name!r} ends but {inner} (markers nest)"
                    raise LogFormatError(rec.index, tok[1], tok[4], problem, tok[2], tok[3])
                else:
                    opened.pop()
    if opened:
        problem = f"marker {opened[-1].name!r} begun at record #{opened[-1].index} never ends"
        raise LogFormatError(stop[0] - first, stop[1], stop[4], problem, stop[2], stop[3])
    ops = [grammar._parse_record(t[0] - first, t) for t in toks if start[0] < t[0] < stop[0]]
    return {
        "files": files,
        "records": stop[0] - first + 1,
        "start": (start[0] - first, start[1]),
        "stop": (stop[0] - first, stop[1]),
        "counts": counts,
        "markers": frozenset(names),
        "operations": [op for op in ops if not isinstance(op, str | RegisterFile)],
        "texts": [t[4] for t in toks if start[0] < t[0] < stop[0]],
    }


def quick_read(log: grammar.Log) -> dict[str, object]:
    return {
        "files": log.files,
        "records": log.records,
        "start": log.start,
        "stop": log.stop,
        "counts": log.counts,
        "markers": log.markers,
        "operations": list(log.iter_operations()),
        "texts": [t for chunk in log.iter_texts() for t in chunk],
    }


def error_fields(exc: LogFormatError) -> tuple[object, ...]:
    return (exc.record, exc.offset, exc.line, exc.column, exc.text, exc.problem, str(exc))


def outcome(read: Callable[[], object]) -> tuple[str, object]:
    """What reading gives: the log as a dict, or the error's fields. (A :class:`Log` is
    turned into its dict outside the ``try``: reading its operations again must not be
    where a malformed record is found.)"""
    try:
        got = read()
    except LogFormatError as exc:
        return ("error", error_fields(exc))
    return ("log", quick_read(got) if isinstance(got, grammar.Log) else got)


def kind_of(got: tuple[str, object]) -> str:
    """What kind of outcome (for --hypothesis-show-statistics)."""
    if got[0] == "log":
        return "a log"
    problem = str(got[1][5])  # type: ignore[index]
    return problem.split(":")[0].split(" (")[0][:40]


# -- random logs -----------------------------------------------------------------------------

_REG = "REGISTER_FILE;/p;0x1000;0x1000;0x0"
_COMMON = [
    "FENCE",
    "STORE;0x1000;0x1;0x8",
    "STORE;0x1008;0xffffffffffffffff;0x8;0x109639: main (kv.c:114)",
    "STORE;0x1010;0x1ff;0x2;0x10927C: put (inl.c:7)0x10927C: outer (inl.c:8);fn",
    "STORE;0x1010;0xab;0x1",
    "FLUSH;0x1000;0x40",
    "FLUSH;0x1000;0x1000",
]
#: Valid records the quick pass leaves to the careful one.
_RARE = [
    _REG,
    "REGISTER_FILE;/q;0x8000;0x100;0x0",
    "DEEP_SYNC;0x1000;0x40",
    "FLUSH;0x00000000000000001000;0x40",
    "STORE;0X1000;0x1;0x8",
    "STORE;0x1000;0x1;0x8;f\u00e9",
]
#: Records out of place, or malformed.
_ODD = [
    "START",
    "STOP",
    "a.BEGIN",
    "a.END",
    "STORE;0x1000;0x100;0x1",
    "STORE;0x1000;0x1;0x9",
    "STORE;0x1000;0x1",
    "FLUSH;0x1000",
    "FENCE;0x1",
    "LOAD;0x1000;0x8",
    "hello world",
    "STORE;0x1000;0x\udcff;0x8",
    "REGISTER_FILE;/p;0x1000;0x0;0x0",
    "==",
]
#: Mostly common records, some rare ones, some pairs of markers around common ones.
_ITEMS = st.one_of(
    *[st.sampled_from(_COMMON)] * 10,
    st.sampled_from(_RARE),
    st.lists(st.sampled_from(_COMMON), max_size=6).map(lambda ws: ["b.BEGIN", *ws, "b.END"]),
)
_BLANKS = st.sampled_from(["", "", "", " ", "\t", "  "])
_SEPS = st.sampled_from(["|", "|", "|", "|", "\n", "\r", "\r\n", "||", " | ", "|\n"])
_FOREIGN = st.sampled_from(
    [
        "--7-- a message",
        "**7** START",
        "==7==",
        "",
        "==7== Process terminating with default action of signal 11 (SIGSEGV)",
        "program output",
    ]
)


@st.composite
def logs(draw: st.DrawFn) -> str:
    """A log of records from a small set, mostly well-formed, separated as logs are (with
    empty records, blanks, CR and CR LF endings), sometimes with valgrind's prefixes on its
    lines and foreign lines in between."""
    words: list[str] = []
    for _ in range(draw(st.integers(1, 3))):  # one run or more, each ...
        run: list[str] = []
        for item in draw(st.lists(_ITEMS, max_size=40)):
            run += [item] if isinstance(item, str) else item
        # ... mostly one that reads: a START and a registration first, a STOP last.
        if draw(st.integers(0, 4)) < 4:
            run = ["START", _REG, *run, "STOP"]
        words += run
    # Now and then a record out of place or malformed, anywhere.
    for at, word in draw(
        st.lists(st.tuples(st.integers(0, 300), st.sampled_from(_ODD)), max_size=2)
    ):
        words.insert(at % (len(words) + 1), word)
    if draw(st.booleans()):
        words = ["FENCE", "STOP", "junk", *words, "summary"]
    out = []
    for word in words:
        out.append(draw(_BLANKS) + word + draw(_BLANKS) + draw(_SEPS))
    text = "".join(out)
    if draw(st.booleans()):
        # valgrind's prefix on every line; now and then a line of another kind of message.
        lines = []
        for line in text.split("\n"):
            lines.append("==7== " + line.lstrip(" "))  # (an indented line is a report)
            if draw(st.integers(0, 5)) == 5:
                lines.append(draw(_FOREIGN))
        text = "\n".join(lines)
    if draw(st.booleans()):
        text += "\n"
    return text


@given(text=logs(), piece=st.sampled_from([1, 2, 3, 7, 13, 29, 64, 1 << 20]))
@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None)
@example(text="START|" + "STORE;0x1000;0x1;0x8|" * 40 + "a.END|STOP", piece=5)
@example(text=" \t  ", piece=1)
@example(text="==7== START|" + _REG + "|FENCE\r\n==7== |hello|STOP\n", piece=3)
def test_the_quick_reading_reads_what_the_careful_one_does(text: str, piece: int) -> None:
    """Texts of random logs, read in pieces of any size (a record cut anywhere)."""
    with mock.patch.object(grammar, "_PIECE", piece):
        want = outcome(lambda: careful_read(grammar._text_pieces(text)))
        got = outcome(lambda: parse_log(text))
    event(kind_of(got))
    assert got == want


@given(text=logs(), piece=st.sampled_from([2, 5, 512, 1 << 20]))
@settings(max_examples=EXAMPLES // 8, derandomize=DERANDOMIZE, deadline=None)
def test_a_log_file_reads_as_its_text(
    tmp_path_factory: pytest.TempPathFactory, text: str, piece: int
) -> None:
    """The same from a file (undecodable bytes kept as surrogates), and as the text."""
    path = tmp_path_factory.mktemp("log") / "t.log"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with mock.patch.object(grammar, "_PIECE", piece):
        want = outcome(lambda: careful_read(grammar._file_pieces(str(path))))
        got = outcome(lambda: read_log(str(path)))
    event(kind_of(got))
    assert got == want


# -- valgrind's long lines ---------------------------------------------------------------------


@given(
    records=st.lists(st.sampled_from(_COMMON), min_size=1, max_size=150),
    at=st.integers(0, 150),
    odd=st.sampled_from(["STORE;0x1000;0x1;0x9", "x.END", "hello", "DEEP_SYNC;0x1000;0x40", _REG]),
    foreign=st.sampled_from(["", "program output\n"]),
)
@settings(max_examples=EXAMPLES // 3, derandomize=DERANDOMIZE, deadline=None)
def test_a_record_anywhere_in_valgrinds_chunked_line_is_placed_as_carefully(
    records: list[str], at: int, odd: str, foreign: str
) -> None:
    """One long prefixed line, as pmemcheck -q writes it, with a record that is not a common
    one (malformed or not) anywhere in it, so in any of valgrind's 512-character chunks (and
    where a program's output was mixed in after a chunk)."""
    body = [*records[:at], odd, *records[at:]]
    line = "==7== START|" + _REG + "|" + "|".join(body) + "|STOP\n"
    if foreign:
        line = line[:512] + foreign + line[512:]
    want = outcome(lambda: careful_read(grammar._text_pieces(line)))
    got = outcome(lambda: parse_log(line))
    event(kind_of(got))
    assert got == want


# -- what the quick reading keeps ------------------------------------------------------------


@pytest.mark.parametrize("knob", ["_PIECE", "_KEPT"])
def test_a_log_split_once_for_both_passes_is_a_short_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, knob: str
) -> None:
    """The first pass keeps what it split for the second only up to a piece's worth of text
    and _KEPT records: past either, a longer log costs no more memory to read."""
    import tracemalloc

    monkeypatch.setattr(grammar, knob, {"_PIECE": 4096, "_KEPT": 500}[knob])

    def peak(lines: int) -> int:
        log = tmp_path / f"{lines}.log"
        body = "".join(
            f"|STORE;0x{0x1000 + 8 * (i % 500):x};0x{i:x};0x8|FENCE{'' if i % 20 else chr(10)}"
            for i in range(20 * lines)
        )
        log.write_text(f"START|{_REG}{body}|STOP\n")
        tracemalloc.start()
        try:
            parsed = read_log(str(log))
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert parsed.counts["STORE"] == 20 * lines
        return top

    small, large = peak(100), peak(400)  # 4,000 and 16,000 stores, on lines of 20
    assert large - small < 50_000, (small, large)
