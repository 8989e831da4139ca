"""valgrind's stream read quickly (a log line cut at its last 512-character boundary only, so
a prefixed log goes on in segments as long as the pieces it is read in) against the stream as
it was, kept here as the reference: a segment for every 512-character piece of a log line.
Same records, same places, same errors, field for field, over random logs written as
valgrind writes them (a program's output at chunk boundaries and between lines, valgrind's
other messages, a fatal signal's report, CR line ends), read in pieces of any size."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from test_pmlog_grammar_fast import (
    _COMMON,
    _ODD,
    _RARE,
    _REG,
    careful_tokens,
    kind_of,
    outcome,
    reference_segments,
    reference_stream,
)

from pmemsim.pmlog import grammar, parse_log, read_log
from pmemsim.pmlog.grammar import _CHUNK

#: More examples, drawn at random (PMEMSIM_STREAM_EXAMPLES=5000), for a longer search.
EXAMPLES = int(os.environ.get("PMEMSIM_STREAM_EXAMPLES", "150"))
DERANDOMIZE = "PMEMSIM_STREAM_EXAMPLES" not in os.environ


@contextmanager
def as_it_was() -> Iterator[None]:
    """The reader with the stream as it was (the rest of it as it is)."""
    with (
        mock.patch.object(grammar, "_segments", reference_segments),
        mock.patch.object(grammar, "_valgrind_stream", reference_stream),
    ):
        yield


# -- logs as valgrind writes them ------------------------------------------------------------


def valgrind_output(
    messages: list[str], prefix: str, at_chunks: dict[int, str], at_lines: dict[int, str]
) -> str:
    """What valgrind writes for these messages: ``prefix`` at every line start, handed over in
    512-character chunks (and at the end of a message that ends a line). What a program writes
    lands between two hand-overs: ``at_chunks[k]`` after the k-th chunk handed over in the
    middle of a line, ``at_lines[k]`` after the k-th line."""
    out: list[str] = []
    buf: list[str] = []
    used = 0
    at_left = True
    chunks = lines = 0
    for msg in messages:
        for c in msg:
            if at_left:
                buf.append(prefix)
                used += len(prefix)
            buf.append(c)
            used += 1
            at_left = c == "\n"
            if used >= _CHUNK:
                out.append("".join(buf))
                buf.clear()
                used = 0
                if not at_left:
                    out.append(at_chunks.get(chunks, ""))
                    chunks += 1
        if at_left and (used or buf):
            out.append("".join(buf))
            buf.clear()
            used = 0
        if at_left:
            out.append(at_lines.get(lines, ""))
            lines += 1
    out.append("".join(buf))
    return "".join(out)


_PREFIXES = st.sampled_from(["==7== ", "==4242== ", "==00:00:00:01.234 7== ", ">==7== "])
#: What a program (or valgrind's other messages) may write into the stream.
_FOREIGN = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
        lambda t: t + "\n"
    ),
    st.sampled_from(
        [
            "program output\n",
            "\n",
            "--7-- a message\n",
            "**7** START|FENCE\n",
            "==7== hello|FENCE\n",
            "==7== Process terminating with default action of signal 6 (SIGABRT)\n",
            "==7==    at 0x1: main (t.c:3)\n",
            "no newline",
            "FENCE|",
            "\r\n",
            "done\r\n",
        ]
    ),
)
#: Mostly common records, some rare ones, some pairs of markers around common ones.
_ITEMS = st.one_of(
    *[st.sampled_from(_COMMON)] * 12,
    st.sampled_from(_RARE),
    st.lists(st.sampled_from(_COMMON), max_size=6).map(lambda ws: ["b.BEGIN", *ws, "b.END"]),
)
_BLANKS = st.sampled_from(["", "", " ", "\t", " " * 40])
_SIGNAL = [
    "\n",
    "\n",
    "Process terminating with default action of signal 11 (SIGSEGV)\n",
    " Access not within mapped region at address 0x0\n",
    "   at 0x109557: main (t.c:17)\n",
]


@st.composite
def valgrind_logs(draw: st.DrawFn) -> str:
    """A log as valgrind writes it: a banner or not, one or two runs of records on long lines
    (now and then broken where valgrind flushed a message, a fatal signal's report before
    STOP), a summary or not; a program's output at chunk boundaries and between lines; now and
    then a record out of place or malformed, and CR line ends."""
    messages: list[str] = []
    if draw(st.booleans()):
        messages += ["pmemcheck-1.0, a simple persistent store checker\n", "\n"]
    for _ in range(draw(st.integers(1, 2))):
        words = ["START", _REG]
        many = draw(st.integers(0, 300))  # (lines of up to 20 chunks or so)
        for item in draw(st.lists(_ITEMS, min_size=many, max_size=many)):
            words += [item] if isinstance(item, str) else item
        words.append("STOP")
        if draw(st.integers(0, 3)) == 0:
            at = draw(st.integers(0, len(words)))
            words.insert(at, draw(st.sampled_from(_ODD)))
        breaks = draw(st.sets(st.integers(0, 300), max_size=2))
        blanks = draw(st.integers(0, 3)) == 0
        messages.append(words[0])
        for i, word in enumerate(words[1:]):
            sep = "|"
            if i in breaks:
                messages.append("\n")
                sep = draw(st.sampled_from(["|", ""]))  # (a newline separates records too)
            if word == "STOP" and draw(st.integers(0, 3)) == 0:
                messages += _SIGNAL
            if blanks:  # (around records, where a chunk boundary may fall among them)
                word = draw(_BLANKS) + word + draw(_BLANKS)
            messages.append(sep + word)
        messages.append("\n")
        if draw(st.booleans()):
            messages += ["Number of stores not made persistent: 0\n", "ERROR SUMMARY: 0 errors\n"]
    at_chunks = draw(st.dictionaries(st.integers(0, 20), _FOREIGN, max_size=4))
    at_lines = draw(st.dictionaries(st.integers(0, 12), _FOREIGN, max_size=2))
    text = valgrind_output(messages, draw(_PREFIXES), at_chunks, at_lines)
    ends = draw(st.sampled_from(["\n", "\n", "\n", "\r\n", "some"]))
    if ends == "\r\n":
        text = text.replace("\n", "\r\n")
    elif ends == "some":
        lines = text.split("\n")
        text = "\n".join(ln + "\r" if draw(st.booleans()) else ln for ln in lines)
    return text


# -- the comparisons ---------------------------------------------------------------------------

#: What the reader's pieces may be: lines in pieces of at most _PIECE characters.
_SIZES = st.sampled_from([1, 2, 7, 40, 100, 511, 512, 513, 4096, 1 << 20])


def chopped(text: str, sizes: list[int]) -> grammar.Pieces:
    """The text in pieces of these sizes in turn (a piece never spans lines), except that a
    line's first piece holds its first 40 characters at least: a prefix is read whole (as it
    always is with the reader's own pieces, at most _PIECE = 1 MiB of a line)."""

    def pieces() -> Iterator[str]:
        k = 0
        for line in text.splitlines(keepends=True) if "\n" in text else [text]:
            at = 0
            while at < len(line):
                size = sizes[k % len(sizes)]
                k += 1
                end = at + (max(size, 40) if at == 0 else size)
                yield line[at:end]
                at = end

    return pieces


#: A program's line at the second chunk boundary of a long line (read in 100-character pieces,
#: the boundary falls inside one).
_AT_SECOND = valgrind_output(
    ["START", "|" + _REG, *["|FENCE"] * 300, "|STOP\n"], "==7== ", {1: "program output\n"}, {}
)
#: A line that ends on its second chunk boundary (nothing after it can be the program's),
#: then a line of the program's.
_ON_SECOND = "==7== START|" + _REG + "|FENCE" * 163 + "\nprogram line\n==7== |STOP\n"
assert _ON_SECOND.index("\n") == 2 * _CHUNK
#: The rest of a record line after a program's line of one character, its own line ended
#: before the next record (no '|' between them).
_ONE_CHARACTER = valgrind_output(
    ["START", "|" + _REG, *["|FENCE"] * 100, "\n", "STOP\n"], "==7== ", {0: "x\n"}, {}
)
#: A program's line after a log line that passed no chunk boundary.
_SHORT_LINE = "==7== START|" + _REG + "|FENCE\nprogram\n==7== |STOP\n"
#: Blanks across several chunk boundaries with a program's line at each (a record's blanks on
#: both sides of a program's line), before a malformed record and before a good one.
_BLANK_CHUNKS = [
    valgrind_output(
        ["START", "|" + _REG, "|" + " " * 3000 + word, *["|FENCE"] * 200, "|STOP\n"],
        "==7== ",
        {k: f"program {k}\n" for k in range(12)},
        {},
    )
    for word in ("hello", "FENCE")
]
#: A long record (its frames) after blanks that a program's line cuts in two: the record
#: begins after the program's line, its blanks on both sides of it.
_LONG = "==7== START|" + _REG + "|" + " " * 1100 + "STORE;0x1000;0x1;0x8;" + "f" * 700 + "|STOP\n"
_BLANKS_AROUND = _LONG[: 2 * _CHUNK] + "program\n" + _LONG[2 * _CHUNK :]


def read_both(pieces: grammar.Pieces, read: Callable[[], object]) -> None:
    """Every record (numbered, placed, text, prefixed or not) and what the log reads to, or its
    error: the same with the stream as it was and as it is."""
    with as_it_was():
        want = (list(careful_tokens(pieces)), outcome(read))
    got = ([t for chunk in grammar._chunks(pieces) for t in chunk.tokens()], outcome(read))
    event(kind_of(got[1]))
    assert got[0] == want[0]
    assert got[1] == want[1]


@given(
    text=valgrind_logs(),
    sizes=st.lists(st.integers(1, 1100), min_size=1, max_size=5),
    most=st.sampled_from([1 << 20, 1 << 20, 600, 1500]),
)
@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None)
@example(text="==7== START|" + _REG + "|FENCE" * 200 + "|STOP\n", sizes=[1 << 20], most=1 << 20)
@example(
    text="==7== START|" + "FENCE|" * 84 + "FEN" + "hi\nCE|STOP\n", sizes=[1 << 20], most=1 << 20
)
@example(
    text="==7== START|" + "FENCE|" * 84 + "FENC" + "\nhi\n==7== |STOP\n", sizes=[3], most=1 << 20
)
@example(text=_AT_SECOND, sizes=[100], most=1 << 20)
@example(text=_ON_SECOND, sizes=[1 << 20], most=1 << 20)
@example(text=_ON_SECOND, sizes=[1000, 24, 1], most=1 << 20)
@example(text=_ONE_CHARACTER, sizes=[1 << 20], most=1 << 20)
@example(text=_SHORT_LINE, sizes=[1 << 20], most=1 << 20)
@example(text=_BLANK_CHUNKS[0], sizes=[1 << 20], most=1 << 20)
@example(text=_BLANK_CHUNKS[1], sizes=[1 << 20], most=1 << 20)
@example(text=_BLANK_CHUNKS[0], sizes=[1 << 20], most=600)
@example(text=_BLANK_CHUNKS[1], sizes=[1 << 20], most=600)
@example(text=_BLANKS_AROUND, sizes=[1 << 20], most=1500)
def test_the_stream_reads_as_it_did(text: str, sizes: list[int], most: int) -> None:
    """Logs in pieces of random sizes (a chunk boundary anywhere in a piece, or on its end),
    the stream handing on at most about ``most`` characters at a time."""
    pieces = chopped(text, sizes)
    with mock.patch.object(grammar, "_PIECE", most):
        read_both(pieces, lambda: grammar._read(pieces, "<text>"))


@given(text=valgrind_logs(), piece=_SIZES)
@settings(max_examples=EXAMPLES // 3, derandomize=DERANDOMIZE, deadline=None)
def test_parse_log_reads_as_it_did(text: str, piece: int) -> None:
    """The text as parse_log reads it, in pieces of 1 character to 1 MiB. (Below the prefix's
    length, no line reads as prefixed: the first piece of a line must hold it.)"""
    with mock.patch.object(grammar, "_PIECE", piece):
        read_both(grammar._text_pieces(text), lambda: parse_log(text))


@given(
    text=valgrind_logs(),
    piece=_SIZES,
    bad=st.sampled_from(["", "\udcff", "\udce9x"]),
    at=st.integers(0, 10_000),
)
@settings(max_examples=EXAMPLES // 5, derandomize=DERANDOMIZE, deadline=None)
def test_a_log_file_streams_as_it_did(
    tmp_path_factory: pytest.TempPathFactory, text: str, piece: int, bad: str, at: int
) -> None:
    """The same from a file, with an undecodable byte anywhere now and then."""
    at %= len(text) + 1
    text = text[:at] + bad + text[at:]
    path = tmp_path_factory.mktemp("log") / "v.log"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with mock.patch.object(grammar, "_PIECE", piece):
        read_both(grammar._file_pieces(str(path)), lambda: read_log(str(path)))


def test_a_long_prefixed_line_goes_on_in_few_segments() -> None:
    """What makes a prefixed log cost what a plain one does: a line of 200 chunks is handed
    on in one segment and its tail after the last boundary (before: one per chunk)."""
    line = "==7== START|" + _REG + "|STORE;0x1000;0x1;0x8" * 5_000 + "|STOP\n"
    assert len(line) > 200 * _CHUNK
    segs = list(grammar._valgrind_stream(grammar._segments(grammar._text_pieces(line))))
    assert len(segs) == 2
    assert "".join(s.text for s in segs) == line[6:-1]
    assert [s.last for s in segs] == [False, True]
    assert len(segs[1].text) == (len(line) - 1) % _CHUNK


def test_what_a_program_wrote_at_a_boundary_of_a_long_line_is_dropped(tmp_path: Path) -> None:
    """A line the program wrote after a chunk in the middle of a long record line, the line
    read in one piece: the text after the line's last boundary is the program's."""
    records = "|STORE;0x1000;0x1;0x8" * 400
    line = "==7== START|" + _REG + records + "|FENCE|STOP\n"
    cut = 10 * _CHUNK
    mixed = line[:cut] + "program output\n" + line[cut:]
    path = tmp_path / "mixed.log"
    path.write_text(mixed)
    got = read_log(str(path))
    assert got.counts == parse_log(line).counts
    assert [t for c in got.iter_texts() for t in c] == [
        t for c in parse_log(line).iter_texts() for t in c
    ]


def test_a_record_line_goes_on_across_a_programs_lines_in_few_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program's line after every chunk of a long record line: the record line's text on
    both sides of each is handed on as one segment (with where each part is), up to about a
    piece's length at a time, so that a long log never gathers whole."""
    records = ["START", "|" + _REG, *["|STORE;0x1000;0x1;0x8"] * 5_000, "|STOP\n"]
    text = valgrind_output(records, "==7== ", {k: f"program {k}\n" for k in range(300)}, {})
    assert text.count("\n") > 200

    def segments() -> list[grammar._Seg]:
        return list(grammar._valgrind_stream(grammar._segments(grammar._text_pieces(text))))

    segs = segments()
    assert len(segs) == 2 and len(segs[0].joins) > 200
    monkeypatch.setattr(grammar, "_PIECE", 4096)
    segs = segments()
    assert len(segs) > 20
    assert max(len(s.text) for s in segs) < 4096 + _CHUNK
