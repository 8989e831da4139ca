"""Reading the pmemcheck / pmreorder store log: records, their positions, and typed errors.

The records are ``|``-separated (see docs/check-log.md)::

    START|REGISTER_FILE;/pool.bin;0x10000000;0x1000;0x0|STORE;0x10000000;0x1;0x8|
    FLUSH;0x10000000;0x40|FENCE|STOP

The log is read exactly as pmemcheck writes it. pmemcheck prints through valgrind's message
printer, which starts every line with ``==PID== `` (``-q`` or not), so a log may open with a
banner, break its record line where valgrind flushed a message (``...|FENCE`` then
``==PID== |STOP``) and end with a summary. So:

* a ``==PID== `` prefix (with ``--time-stamp=yes`` too) is removed from every line; lines of
  valgrind's other messages (``--PID--``, ``**PID**``, and the report of a signal that
  ended the program, ``==PID== Process terminating ...`` and its indented lines) are
  skipped;
* newlines, like ``|``, separate records; blanks around a record and empty records are skipped;
* records count from the first ``START`` (#0). The operations are those between the last
  ``START`` and the last ``STOP`` (a stray ``STOP`` in between does not end them); every
  ``REGISTER_FILE`` of any START..STOP counts. Text before the first ``START``, after the last
  ``STOP`` and between a ``STOP`` and the next ``START`` (a banner, a summary, another run's
  messages) is ignored, unread;
* a record inside a START..STOP that does not follow the grammar is a :class:`LogFormatError`
  naming its number, line, column and text; so is a byte that is not UTF-8 there.

A log is read in pieces, never whole, and its operations are streamed
(:meth:`Log.iter_operations`), so a 100 MB log costs the memory of one piece. A first pass finds
where each START and STOP is, a second validates every record and collects the registrations
(:func:`read_log` and :func:`parse_log` do both before returning); each replay streams again.
Both passes take the records' texts only, the common records a run at a time in one regex
match: where a record is (its character, line and column) is worked out only for the few that
need it (START, STOP, a registration, a record named in an error).
"""

from __future__ import annotations

import io
import os
import re
import stat
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import itemgetter
from typing import Literal, overload

from .._dataclass import dataclass, field
from .._records import NamedTuple
from ..errors import ErrorCode, InvalidArgumentError

__all__ = [
    "DeepSync",
    "Fence",
    "Flush",
    "Log",
    "LogFormatError",
    "Marker",
    "Operation",
    "RegisterFile",
    "Store",
    "parse_log",
    "read_log",
]

#: Widest store one STORE record carries (pmemcheck splits wider stores into 8-byte parts).
MAX_STORE = 8
#: Sizes and file offsets must stay below this; addresses below 2**64.
_LIMIT = 1 << 63
_ADDRESS_LIMIT = 1 << 64

#: How much of a line is read at once (a ``-q`` log is one line, however long).
_PIECE = 1 << 20
#: A log of at most a piece's worth of text and this many records (a few MB as objects) is
#: split once for both reading passes.
_KEPT = 1 << 16
#: Text of at most this many characters (a regular file of at most this many bytes) is kept
#: split into its operations' texts, for the replay (:meth:`Log.iter_texts`), which then need
#: not read and split it again.
_KEEP_TEXTS = 1 << 16

#: Valgrind's line prefix: ``==PID== `` for the tool's messages (pmemcheck's log among them),
#: ``--PID--`` and ``**PID**`` for others; a time stamp when ``--time-stamp=yes``; one ``>``
#: per level of valgrind running valgrind.
_PREFIX = re.compile(r">*(==|--|\*\*)(?:\d\d:\d\d:\d\d:\d\d\.\d+ )?\d+\1(?: |(?=[\r\n])|$)")
#: Undecodable bytes, as ``errors="surrogateescape"`` keeps them.
_BAD_BYTE = re.compile("[\udc80-\udcff]")
#: Runs of the common records, well formed, each followed by its ``|``: a subset of what
#: _parse_record's quick path takes (a value of at most 2 * size hex digits fits its size;
#: addresses and sizes of at most 15 digits stay far from the limits), matched in one call
#: for many records by the pass that checks a log. (Sizes from 8 down: the common size first.)
_H = "[0-9a-fA-F]"
_RUN = re.compile(
    "(?:(?:FENCE"
    f"|STORE;0x(?={_H})0*{_H}{{0,15}};0x(?={_H})0*(?:"
    + "|".join(f"{_H}{{0,{2 * k}}};0x0*{k}" for k in range(MAX_STORE, 0, -1))
    + ")(?:;[\x00-\x7b\x7d-\x7f]*)?"
    f"|FLUSH;0x(?={_H})0*{_H}{{0,15}};0x(?={_H})0*{_H}{{0,15}})\\|)*+"
).match
#: Where one stack frame of a STORE ends and the next begins: valgrind separates frames with
#: ';' but writes the inlined frames of one address back to back
#: (``0x10927C: put (inl.c:7)0x10927C: outer (inl.c:8)``).
_INLINED = re.compile(r"(?<=\))(?=0x[0-9A-Fa-f]+: )")


class LogFormatError(InvalidArgumentError):
    """A store log that does not follow the grammar; names the record and where it starts.

    ``record`` is the record's number (0 for the first START), ``offset`` the character offset
    of its first character in the text, ``line`` and ``column`` the same place counted from 1,
    ``text`` the record itself (cut short if long).
    """

    def __init__(
        self, record: int, offset: int, text: str, problem: str, line: int = 0, column: int = 0
    ) -> None:
        self.record = record
        self.offset = offset
        self.line = line
        self.column = column
        self.text = text if len(text) <= 80 else text[:77] + "..."
        self.problem = problem
        where = f"record #{record} at character {offset}"
        if line:
            where += f" (line {line}, column {column})"
        shown = _BAD_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", self.text)
        super().__init__(ErrorCode.EINVAL, f"malformed store log: {where} ({shown!r}): {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.record, self.offset, self.text, self.problem, self.line, self.column),
        )


@dataclass(frozen=True, slots=True)
class RegisterFile:
    """``REGISTER_FILE;path;0xbase;0xsize;0xoffset``: ``size`` bytes of the file at
    ``path``, starting at file offset ``offset``, are mapped at address ``base``."""

    index: int
    pos: int
    path: str
    base: int
    size: int
    offset: int


@dataclass(slots=True)
class Store:
    """``STORE;0xaddr;0xvalue;0xsize[;frame...]``: ``size`` bytes of ``value``,
    little-endian, stored at ``address``."""

    index: int
    pos: int
    address: int
    value: int
    size: int
    #: Stack frames pmemcheck logged with the store, innermost first (often none), e.g.
    #: ``0x109557: main (t.c:17)`` or ``0x484E91B: ??? (in /usr/lib/libpmem2.so.1)``.
    frames: tuple[str, ...] = ()

    @property
    def data(self) -> bytes:
        return self.value.to_bytes(self.size, "little")


@dataclass(slots=True)
class Flush:
    """``FLUSH;0xaddr;0xsize``: cache lines written back (guaranteed at the next fence).
    Which lines: see :meth:`pmemsim.pmlog.replay.Replay` (an instruction flushes one line)."""

    index: int
    pos: int
    address: int
    size: int


@dataclass(slots=True)
class Fence:
    """``FENCE``: earlier flushes take effect."""

    index: int
    pos: int


@dataclass(slots=True)
class DeepSync:
    """``DEEP_SYNC;0xaddr;0xsize``: the range is flushed through the memory controller."""

    index: int
    pos: int
    address: int
    size: int


@dataclass(slots=True)
class Marker:
    """``NAME.BEGIN`` or ``NAME.END``: a marked operation starts or ends (they nest)."""

    index: int
    pos: int
    name: str
    begin: bool


Operation = Store | Flush | Fence | DeepSync | Marker


# -- the text, in pieces -------------------------------------------------------------------


class _Token(NamedTuple):
    #: Number among every record of the text (also those before the first START).
    n: int
    pos: int
    line: int
    column: int
    text: str
    #: Whether its line started with valgrind's ``==PID==``.
    prefixed: bool = False


Pieces = Callable[[], Iterator[str]]


def _text_pieces(text: str) -> Pieces:
    def pieces() -> Iterator[str]:
        stream = io.StringIO(text, newline="\n")
        while piece := stream.readline(_PIECE):
            yield piece

    return pieces


#: The first bytes of a compressed file, its format and the command that undoes it.
_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip -k"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k"),
    (b"BZh", "bzip2", "bunzip2 -k"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
)


def _not_compressed(path: str) -> None:
    """A compressed log is refused by name: its bytes would be reported as a record with no
    START, which does not say what to do."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return  # said when the log is read
    for magic, kind, undo in _COMPRESSED:
        if head.startswith(magic):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"the log {path} is {kind}-compressed: check the log itself ({undo} {path})",
            )


def _file_pieces(path: str) -> Pieces:
    return _file(path)[0]


def _file(path: str) -> tuple[Pieces, bool]:
    """The file's pieces, and whether it is a regular file short enough (``_KEEP_TEXTS``
    bytes, so as many characters at most) for its operations' texts to be kept."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"cannot read the log {path}: {exc.strerror}"
        ) from None
    stamp = (st.st_size, st.st_mtime_ns)
    if stat.S_ISREG(st.st_mode):  # (reading a pipe's first bytes would lose them)
        _not_compressed(path)

    def pieces() -> Iterator[str]:
        try:
            # Undecodable bytes are kept (as surrogates) and refused only inside the log:
            # a program's own output around it may be in any encoding.
            with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
                now = os.fstat(f.fileno())
                if (now.st_size, now.st_mtime_ns) != stamp:
                    raise InvalidArgumentError(
                        ErrorCode.EINVAL, f"the log {path} changed while it was being read"
                    )
                while piece := f.readline(_PIECE):
                    yield piece
        except OSError as exc:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"cannot read the log {path}: {exc.strerror}"
            ) from None

    # (A pipe's size says nothing: it is read again, as ever.)
    return pieces, stat.S_ISREG(st.st_mode) and st.st_size <= _KEEP_TEXTS


class _Seg(NamedTuple):
    """A piece of one line of the text, valgrind's prefix and the newline removed."""

    text: str
    #: Character offset of ``text`` in the whole text.
    pos: int
    line: int
    #: Character offset where the line starts (for columns).
    line_start: int
    #: Whether the line starts / ends with this piece.
    first: bool
    last: bool
    #: Whether the line started with valgrind's ``==PID==``.
    prefixed: bool
    #: For text joined from places that do not follow on (a record line on both sides of
    #: a program's line): ``(offset in text, pos, line, line_start, prefixed)`` of each part,
    #: the first at offset 0; empty when the text is all at ``pos``.
    joins: tuple[_Place, ...] = ()


#: Where a part of a joined segment is: ``(offset in its text, pos, line, line_start,
#: prefixed)``.
_Place = tuple[int, int, int, int, bool]
_first = itemgetter(0)


def _placed(seg: _Seg, offset: int) -> tuple[int, int, int, bool]:
    """Where the character at ``offset`` of a joined segment's text is: its position, line,
    line's start and whether that line was prefixed."""
    at, pos, line, start, prefixed = seg.joins[bisect_right(seg.joins, offset, key=_first) - 1]
    return pos + offset - at, line, start, prefixed


def _segments(pieces: Pieces) -> Iterator[_Seg]:
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
                    # Another kind of valgrind message (--PID--, **PID**) is not the log;
                    # nor is the report of the signal that ended the program, which valgrind
                    # writes into the log before its STOP (its later lines are indented).
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


#: Valgrind's own message inside a log: a fatal signal's report (``Process terminating with
#: default action of signal 11 (SIGSEGV)``, then indented lines: the address, the stack).
_REPORT = re.compile(r" |Process terminating with default action of signal ")

#: valgrind writes its messages through a buffer that it hands to the output whenever 512
#: characters have piled up (or when a message ends a line).
_CHUNK = 512


def _valgrind_stream(segs: Iterator[_Seg]) -> Iterator[_Seg]:
    """pmemcheck's own text, with what the program wrote into the same stream taken out.

    A program writing to the stream pmemcheck logs to (``2>&1`` captures) lands between two
    of valgrind's 512-character chunks, so in the middle of a record, and the record line
    goes on after the program's newline without a prefix. Once a line with valgrind's prefix
    has been seen (before that, and in a log without prefixes, every line is kept), a line
    without the prefix is therefore either the rest of the previous log line, when that line
    passed a chunk boundary and has text after the last one (the program's: dropped), or
    another line of the program's (dropped).

    Only the text after a log line's last chunk boundary can turn out to be the program's,
    so a segment is cut at its last boundary alone, whatever the number it passes, and the
    log's text before it is handed on in segments of about a piece's length (``_PIECE``),
    as a log without prefixes is: a record line on both sides of a program's lines goes on
    as one segment whose ``joins`` say where each part of it is.
    """
    valgrind = False
    in_log = False  # the current line is pmemcheck's (prefixed, or its continuation)
    held: list[_Seg] = []  # the current log line after its last chunk boundary
    count = 0  # characters of the current log line since the last boundary
    crossed = False  # the current log line passed a chunk boundary
    ended = False  # the last log line ended; its tail waits for the next line's start
    # The log's text before the last boundary, not yet handed on: one segment, across the
    # program's lines taken out (joins say where each part is), up to a piece's length.
    sure: list[str] = []
    joins: list[_Place] = []
    size = 0  # of the text in sure
    after = -1  # the position just after it
    for s in segs:
        if s.first:
            if s.prefixed:
                valgrind = True
            if ended:
                ended = False
                # (Past a boundary, count is the length of the text after the last one.)
                if not s.prefixed and crossed and count:
                    # Cut at the boundary: resume the record line on this one.
                    held.clear()
                    in_log, count, crossed = True, 0, False
                else:
                    if sure:
                        yield _joined(sure, joins)
                        sure, joins, size = [], [], 0
                    yield from held
                    held.clear()
                    in_log = False
            if s.prefixed:
                in_log, crossed = True, False
                count = s.pos - s.line_start  # the prefix fills the chunk too
        if not valgrind:
            yield s
            continue
        if not in_log:
            continue
        length = len(s.text)
        if count + length >= _CHUNK:
            # (A boundary at the very end leaves an empty tail: the line did pass it.)
            cut = length - (count + length) % _CHUNK
            text, pos = s.text, s.pos
            # What the line held since its last boundary and this segment up to its last:
            # the log's, and one stretch of the text.
            begin = held[0].pos if held else pos
            if begin != after or not sure:
                joins.append((size, begin, s.line, s.line_start, s.prefixed))
            if held:
                sure += [h.text for h in held]
                held.clear()
            sure.append(text[:cut])
            after = pos + cut
            size += after - begin
            if size >= _PIECE:
                yield _joined(sure, joins)
                sure, joins, size = [], [], 0
            s = _Seg(text[cut:], pos + cut, s.line, s.line_start, False, s.last, s.prefixed)
            count, crossed = length - cut, True
        else:
            count += length
        # Held back (with the line's end) until the next line shows whether it was the
        # program's text.
        held.append(s)
        if s.last:
            ended = True
    if sure:
        yield _joined(sure, joins)
    yield from held


def _joined(texts: list[str], joins: list[_Place]) -> _Seg:
    """The log's text of one or more lines, as one segment that does not end a line."""
    _, pos, line, start, prefixed = joins[0]
    many = tuple(joins) if len(joins) > 1 else ()
    return _Seg("".join(texts), pos, line, start, False, False, prefixed, many)


#: A record as read: ``(number, position, line, column, text, prefixed)`` (see
#: :class:`_Token`; a plain tuple, made only for the few records whose place is needed).
Tok = tuple[int, int, int, int, str, bool]
#: A record cut by the end of a segment: its text so far, its position, line, line's start
#: and whether that line was prefixed.
_Carry = tuple[str, int, int, int, bool]


class _Chunk:
    """The records that end in one segment of the text.

    ``texts`` are their texts (blanks around them removed, empty ones left out) and ``n`` the
    number of the first: what the passes over a log use. Where a record is (for an error
    message, a START, a STOP, a registration) is worked out from the segment only when asked
    (:meth:`token`), as most records never need it.
    """

    __slots__ = ("texts", "n", "_seg", "_parts", "_end", "_held")

    def __init__(
        self,
        texts: list[str],
        n: int,
        seg: _Seg | None,
        parts: list[str],
        end: int,
        held: _Carry | None,
    ) -> None:
        self.texts, self.n = texts, n
        #: The segment (None for a record left over at the end of the text, ``held``).
        self._seg = seg
        #: The segment's records as split, before blanks and empty ones were removed, and
        #: where the last of them ends.
        self._parts, self._end = parts, end
        #: The start of the first record, cut off by the end of the segment before.
        self._held = held

    def width(self) -> int:
        """How many characters its records take in the text (about)."""
        held = self._held
        seg = 0 if self._seg is None else self._end - self._seg.pos
        return seg + (0 if held is None else len(held[0]))

    def token(self, j: int) -> Tok:
        """The ``j``-th record of the chunk, with its place in the text."""
        held, seg, parts = self._held, self._seg, self._parts
        if seg is None:
            assert held is not None
            raw, pos, line, start, prefixed = held
        else:
            i = j
            if len(parts) != len(self.texts):
                # Some records were empty (the first at e): find the j-th non-empty one.
                stripped = list(map(str.strip, parts))
                if held is not None:
                    stripped[0] = held[0]  # (not blank)
                if j >= (e := stripped.index("")):
                    i = k = e
                    while not stripped[i] or k < j:
                        k += bool(stripped[i])
                        i += 1
            if i == 0 and held is not None:
                raw = held[0] + parts[0]
                pos, line, start, prefixed = held[1:]
            else:
                raw = parts[i]
                # (Each part is followed by its '|', or a CR turned into one: counted from
                # the nearer end.)
                if i < len(parts) // 2:
                    pos = seg.pos + sum(map(len, parts[:i])) + i
                else:
                    pos = self._end - sum(map(len, parts[i:])) - (len(parts) - 1 - i)
                line, start, prefixed = seg.line, seg.line_start, seg.prefixed
                if seg.joins:
                    at = pos + len(raw) - len(raw.lstrip()) - seg.pos
                    p, line, start, prefixed = _placed(seg, at)
                    return (self.n + j, p, line, p - start + 1, self.texts[j], prefixed)
        p = pos + len(raw) - len(raw.lstrip())
        return (self.n + j, p, line, p - start + 1, self.texts[j], prefixed)

    def tokens(self, lo: int = 0) -> Iterator[Tok]:
        """The chunk's records from the ``lo``-th on, with their places."""
        held, seg = self._held, self._seg
        if seg is None:
            if lo == 0:
                yield self.token(0)
            return
        n = self.n
        off = seg.pos
        k = 0
        for i, raw in enumerate(self._parts):
            pos, line, start, prefixed = off, seg.line, seg.line_start, seg.prefixed
            off += len(raw) + 1
            if i == 0 and held is not None:
                raw = held[0] + raw
                pos, line, start, prefixed = held[1:]
            text = raw.strip()
            if not text:
                continue
            if k >= lo:
                # (strip() gives back the very string when it has no blanks to remove.)
                p = pos if text is raw else pos + len(raw) - len(raw.lstrip())
                if seg.joins and (i or held is None):
                    p, line, start, prefixed = _placed(seg, p - seg.pos)
                yield (n + k, p, line, p - start + 1, text, prefixed)
            k += 1


def _chunks(pieces: Pieces) -> Iterator[_Chunk]:
    """Every non-empty record of the text, blanks around it removed, prefixes skipped, in
    chunks (one per segment of the text that ends a record)."""
    n = 0
    carry: _Carry | None = None
    for s in _valgrind_stream(_segments(pieces)):
        body = s.text
        if "\r" in body:
            body = body.replace("\r", "|")  # same length: positions hold
        parts = body.split("|")
        end = s.pos + len(body)
        held, carry = carry, None
        if not s.last:
            tail = parts.pop()
            end -= len(tail) + 1
            if parts or held is None:
                c: _Carry = (tail, end + 1, s.line, s.line_start, s.prefixed)
                if s.joins and tail.strip():
                    # Placed at its first character: blanks before it may be elsewhere.
                    at = end + 1 + len(tail) - len(tail.lstrip()) - s.pos
                    c = (tail.lstrip(), *_placed(s, at))
            else:
                c = (held[0] + tail, *held[1:])
            if c[0].strip():
                carry = c
            if not parts:
                continue
        if held is None:
            texts = list(filter(None, map(str.strip, parts)))
        else:  # (not blank, so neither is the record it starts)
            texts = [(held[0] + parts[0]).strip()]
            texts += filter(None, map(str.strip, islice(parts, 1, None)))
        if texts:
            yield _Chunk(texts, n, s, parts, end, held)
            n += len(texts)
    if carry is not None:
        yield _Chunk([carry[0].strip()], n, None, [], 0, carry)


def _texts(chunks: Iterable[_Chunk], lo: int, hi: int) -> Iterator[list[str]]:
    """The records numbered ``lo < n < hi``, as lists of their texts (a list per chunk)."""
    for chunk in chunks:
        n = chunk.n
        end = n + len(chunk.texts)
        if end <= lo + 1:
            continue
        yield chunk.texts[max(0, lo + 1 - n) : hi - n]
        if end >= hi:
            return


# -- records ---------------------------------------------------------------------------------


def _hex(field: str, what: str, err: _Err, limit: int = _ADDRESS_LIMIT) -> int:
    digits = field[2:]
    # isalnum: int() would also take "_", "+", "-" and blanks.
    if field[:2] in ("0x", "0X") and digits.isalnum() and digits.isascii():
        try:
            value = int(digits, 16)
        except ValueError:
            pass
        else:
            if value >= limit:
                raise err(f"{what} {field} is too large (at most 0x{limit - 1:x})")
            return value
    raise err(f"{what} {field!r} is not a hexadecimal number written 0x...")


class _Err:
    """Builds the error for the record being parsed."""

    __slots__ = ("tok", "number")

    def __init__(self, number: int, tok: Tok) -> None:
        self.number, self.tok = number, tok

    def __call__(self, problem: str) -> LogFormatError:
        t = _Token._make(self.tok)
        return LogFormatError(self.number, t.pos, t.text, problem, t.line, t.column)


def _fields(fields: list[str], want: int, usage: str, err: _Err) -> None:
    if len(fields) != want:
        raise err(f"expected {usage}")


def _range(address: int, size: int, what: str, err: _Err) -> None:
    if address + size > _ADDRESS_LIMIT:
        raise err(f"the {what} 0x{address:x} + 0x{size:x} goes past the end of the address space")


_frame_cache: dict[str, tuple[str, ...]] = {}


def _frames(text: str) -> tuple[str, ...]:
    """A STORE's stack frames (innermost first); the same tuple for the same text, so that a
    long log's repeated frames cost memory once."""
    hit = _frame_cache.get(text)
    if hit is not None:
        return hit
    out: list[str] = []
    for part in text.split(";"):
        out.extend(f.strip() for f in _INLINED.split(part))
    frames = tuple(f for f in out if f)
    if len(_frame_cache) < 100_000:
        _frame_cache[text] = frames
    return frames


Parsed = Operation | RegisterFile | str


@overload
def _parse_record(number: int, tok: Tok) -> Parsed: ...
@overload
def _parse_record(number: int, tok: Tok, kind_only: Literal[True]) -> Parsed | type: ...


def _parse_record(number: int, tok: Tok, kind_only: bool = False) -> Parsed | type:
    """One record: an operation, a registration, or "START" / "STOP". ``kind_only``: a
    well-formed STORE, FLUSH or FENCE is checked as ever but given as its class (Store,
    Flush, Fence) rather than read into one (for a pass that only counts them)."""
    text = tok[4]
    if text == "FENCE":
        return Fence if kind_only else Fence(number, tok[1])
    if text.isascii():
        # The common records, read without a check that could fail: anything unusual is
        # read (and named, if wrong) by the careful path below.
        if text.startswith("STORE;0x"):
            f = text.split(";", 4)
            if len(f) >= 4:
                a, v, z = f[1], f[2], f[3]
                if v[:2] == z[:2] == "0x" and a.isalnum() and v.isalnum() and z.isalnum():
                    try:
                        addr, value, size = int(a, 16), int(v, 16), int(z, 16)
                    except ValueError:
                        pass
                    else:
                        fits = 0 < size <= MAX_STORE and not value >> (8 * size)
                        if fits and addr + size <= _ADDRESS_LIMIT:
                            if kind_only:
                                return Store
                            frames = _frames(f[4]) if len(f) == 5 else ()
                            return Store(number, tok[1], addr, value, size, frames)
        elif text.startswith("FLUSH;0x"):
            f = text.split(";")
            if len(f) == 3 and f[2][:2] == "0x" and f[1].isalnum() and f[2].isalnum():
                try:
                    addr, size = int(f[1], 16), int(f[2], 16)
                except ValueError:
                    pass
                else:
                    if size < _LIMIT and addr + size <= _ADDRESS_LIMIT:
                        return Flush if kind_only else Flush(number, tok[1], addr, size)
    return _parse_carefully(number, tok)


def _parse_carefully(number: int, tok: Tok) -> Parsed:
    t = _Token._make(tok)
    text = t.text
    if text in ("START", "STOP"):
        return text
    bad = None if text.isascii() else _BAD_BYTE.search(text)
    if bad is not None:
        byte = ord(bad.group()) - 0xDC00
        column = t.column + bad.start()
        raise LogFormatError(
            number,
            t.pos + bad.start(),
            text,
            f"byte 0x{byte:02x} at line {t.line}, column {column} is not UTF-8 text",
            t.line,
            column,
        )
    err = _Err(number, tok)
    head, sep, rest = text.partition(";")
    if head == "STORE":
        fields = rest.split(";", 3)
        if len(fields) < 3:
            raise err("expected STORE;0xADDRESS;0xVALUE;0xSIZE[;FRAME...]")
        addr = _hex(fields[0], "address", err)
        value = _hex(fields[1], "value", err)
        size = _hex(fields[2], "size", err)
        if not 1 <= size <= MAX_STORE:
            raise err(f"a STORE carries 1 to {MAX_STORE} bytes, not {size}")
        if value >> (8 * size):
            raise err(f"value 0x{value:x} does not fit in {size} byte(s)")
        _range(addr, size, "store", err)
        frames = _frames(fields[3]) if len(fields) == 4 else ()
        return Store(number, t.pos, addr, value, size, frames)
    if head == "FLUSH":
        fields = rest.split(";")
        _fields(fields, 2, "FLUSH;0xADDRESS;0xSIZE", err)
        addr = _hex(fields[0], "address", err)
        size = _hex(fields[1], "size", err, _LIMIT)
        _range(addr, size, "flushed range", err)
        return Flush(number, t.pos, addr, size)
    if head == "DEEP_SYNC":
        fields = rest.split(";")
        _fields(fields, 2, "DEEP_SYNC;0xADDRESS;0xSIZE", err)
        addr = _hex(fields[0], "address", err)
        size = _hex(fields[1], "size", err, _LIMIT)
        _range(addr, size, "synced range", err)
        return DeepSync(number, t.pos, addr, size)
    if head == "REGISTER_FILE":
        fields = rest.split(";")
        if len(fields) < 4:
            raise err("expected REGISTER_FILE;PATH;0xBASE;0xSIZE;0xOFFSET")
        # Read the numbers from the right, so that a path holding ';' still reads.
        path = ";".join(fields[:-3])
        if not path:
            raise err("the registered file has an empty path")
        base = _hex(fields[-3], "base address", err)
        size = _hex(fields[-2], "size", err, _LIMIT)
        offset = _hex(fields[-1], "file offset", err, _LIMIT)
        if size == 0:
            raise err("a registered file maps 0 bytes")
        _range(base, size, "registered range", err)
        if offset + size > _LIMIT:
            raise err(f"file offset 0x{offset:x} + size 0x{size:x} is too large")
        return RegisterFile(number, t.pos, path, base, size, offset)
    if sep and head in ("START", "STOP", "FENCE"):
        raise err(f"{head} takes no fields")
    if not sep:
        name, dot, edge = text.rpartition(".")
        if dot and name and edge in ("BEGIN", "END"):
            return Marker(number, t.pos, name, edge == "BEGIN")
        raise err(
            "not a record of the store log (START, STOP, REGISTER_FILE, STORE, FLUSH, "
            "FENCE, DEEP_SYNC, NAME.BEGIN or NAME.END)"
        )
    raise err(f"unknown record type {head!r}")


# -- the log ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where the parts of the log are, as record numbers (see :func:`_chunks`)."""

    #: The first START: record numbers count from it.
    first: int
    #: The operations' START and STOP, as tokens.
    start: _Token
    stop: _Token
    #: Earlier START..STOP ranges (exclusive ends): read for registrations and checked.
    earlier: tuple[tuple[int, int], ...]


def _indexes(texts: list[str], word: str) -> list[int]:
    """Where ``word`` is in ``texts``."""
    found: list[int] = []
    j = -1
    try:
        while True:
            j = texts.index(word, j + 1)
            found.append(j)
    except ValueError:
        return found


def _find_layout(pieces: Pieces) -> tuple[_Layout, list[_Chunk] | None]:
    """Where the parts of the log are; and its chunks, if the log is short (see _KEPT): the
    next pass takes them rather than read and split the text again."""
    starts: list[int] = []
    stops: list[int] = []
    start: Tok | None = None
    stop: Tok | None = None
    first_token: Tok | None = None  # (named if the log has no START: not read if it is one)
    kept: list[_Chunk] | None = []
    width = 0
    for chunk in _chunks(pieces):
        texts = chunk.texts
        if chunk.n == 0 and texts[0] != "START":
            first_token = chunk.token(0)
        if kept is not None:
            width += chunk.width()
            if width <= _PIECE and chunk.n + len(texts) <= _KEPT:
                kept.append(chunk)
            else:
                kept = None
        if "START" in texts:
            found = _indexes(texts, "START")
            starts += [chunk.n + j for j in found]
            start = chunk.token(found[-1])
        if starts and "STOP" in texts:
            found = _indexes(texts, "STOP")
            stops += [chunk.n + j for j in found if chunk.n + j > starts[0]]
            if stops and stops[-1] >= chunk.n:
                stop = chunk.token(stops[-1] - chunk.n)
    if start is None:
        t0 = _Token._make(first_token or (0, 0, 1, 1, "", False))
        raise LogFormatError(0, t0.pos, t0.text, "the log has no START record", t0.line, t0.column)
    last = _Token._make(start)
    if stop is None or stop[0] < last.n:
        raise LogFormatError(
            last.n - starts[0],
            last.pos,
            last.text,
            "no STOP record follows the last START (was pmemcheck or the program stopped "
            "before the end?)",
            last.line,
            last.column,
        )
    earlier: list[tuple[int, int]] = []
    j = 0
    for i, begin in enumerate(starts[:-1]):
        while j < len(stops) and stops[j] < begin:
            j += 1
        nxt = starts[i + 1]
        earlier.append((begin, min(nxt, stops[j]) if j < len(stops) else nxt))
    return _Layout(starts[0], last, _Token._make(stop), tuple(earlier)), kept


@dataclass
class Log:
    """A store log: where its operations are, its registrations and counts.

    The operations are read from the text again on every :meth:`iter_operations` (a long
    log is never held whole); :attr:`operations` is them as a list, for small logs.
    """

    #: Every REGISTER_FILE of every START..STOP, in order.
    files: list[RegisterFile]
    #: Records from the first START to the last STOP, both included.
    records: int
    #: Number and character offset of the START and STOP that bound the operations.
    start: tuple[int, int]
    stop: tuple[int, int]
    #: Operations by record type ("STORE", "FLUSH", "FENCE", "DEEP_SYNC", "MARKER").
    counts: dict[str, int]
    #: Where the text comes from (a file's path, or "<text>").
    name: str
    #: Reads the text again, piece by piece, and where its parts are.
    pieces: Pieces = field(repr=False)
    layout: _Layout = field(repr=False)
    _ops: list[Operation] | None = field(default=None, repr=False)
    #: The names of the markers between the last START and the last STOP.
    markers: frozenset[str] = field(default=frozenset(), repr=False)
    #: What :meth:`iter_texts` gives, kept (a short text's), or None: split again.
    _texts: list[list[str]] | None = field(default=None, repr=False)

    def iter_operations(self) -> Iterator[Operation]:
        """The operations between the last START and the last STOP, in order."""
        if self._ops is not None:
            yield from self._ops
            return
        lay = self.layout
        lo, hi, first = lay.start.n, lay.stop.n, lay.first
        for chunk in _chunks(self.pieces):
            n = chunk.n
            end = n + len(chunk.texts)
            if end <= lo + 1:
                continue
            for tok in chunk.tokens(max(0, lo + 1 - n)):
                if tok[0] >= hi:
                    return
                rec = _parse_record(tok[0] - first, tok)
                if not isinstance(rec, str | RegisterFile):
                    yield rec
            if end >= hi:
                return

    def iter_texts(self) -> Iterator[list[str]]:
        """The text of every operation's record, in order, in lists (one per piece of the
        log read): for a replay that parses them itself (:mod:`pmemsim.pmlog.fastreplay`).
        The log was checked when it was read; a file that changed since is an error (a long
        one: a short one's texts are kept as read)."""
        if self._ops is not None:
            raise ValueError("a log built from operations has no text")
        if self._texts is not None:
            return iter(self._texts)
        lay = self.layout
        return _texts(_chunks(self.pieces), lay.start.n, lay.stop.n)

    @property
    def operations(self) -> list[Operation]:
        """Every operation, as a list (read once and kept: for small logs)."""
        if self._ops is None:
            self._ops = list(self.iter_operations())
        return self._ops

    def __len__(self) -> int:
        return sum(self.counts.values())

    def count(self, kind: type) -> int:
        name = {Store: "STORE", Flush: "FLUSH", Fence: "FENCE", DeepSync: "DEEP_SYNC"}
        return self.counts.get(name.get(kind, "MARKER"), 0)

    def record(self, index: int) -> Operation | None:
        """The operation numbered ``index`` (None if it is not one of the operations)."""
        return self.records_at({index}).get(index)

    def records_at(self, indexes: Iterable[int]) -> dict[int, Operation]:
        """The operations with these numbers (one pass over the text at most)."""
        wanted = set(indexes)
        if not wanted:
            return {}
        out: dict[int, Operation] = {}
        if self._ops is not None:
            ops = self._ops
            for i in wanted:
                lo, hi = 0, len(ops)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if ops[mid].index < i:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < len(ops) and ops[lo].index == i:
                    out[i] = ops[lo]
            return out
        top = max(wanted)
        for op in self.iter_operations():
            if op.index in wanted:
                out[op.index] = op
            if op.index >= top:
                break
        return out


class _Reading:
    """What the checking pass of :func:`_read` gathers, record by record."""

    def __init__(self, lay: _Layout) -> None:
        self.lay = lay
        self.files: list[RegisterFile] = []
        self.counts = {"STORE": 0, "FLUSH": 0, "FENCE": 0, "DEEP_SYNC": 0, "MARKER": 0}
        self.open_markers: list[Marker] = []
        self.names: set[str] = set()

    def check(self, chunk: _Chunk, lo: int, hi: int, last: bool) -> None:
        """Checks the chunk's records ``lo`` to ``hi`` (excluded), of the operations' START..STOP
        if ``last``: the common ones a run at a time, in one regex match, then one by one
        each that is not (a registration, a marker, a malformed record)."""
        texts = chunk.texts[lo:hi]
        run = "|" + "|".join(texts) + "|"
        at, j = 1, lo  # where the next run starts, in run and as the chunk's record
        counts = self.counts
        while True:
            m = _RUN(run, at)  # (it always matches, if only no record)
            end = at if m is None else m.end()
            if end > at:
                # (Every record left, when the run reaches the end.)
                records = hi - j if end == len(run) else run.count("|", at, end)
                if last:
                    # (No frame holds a '|': "|STORE;" can only start a record.)
                    stores = run.count("|STORE;", at - 1, end)
                    flushes = run.count("|FLUSH;", at - 1, end)
                    counts["STORE"] += stores
                    counts["FLUSH"] += flushes
                    counts["FENCE"] += records - stores - flushes
                j += records
            if end == len(run):
                return
            self.one(chunk, j, last)
            at = end + len(chunk.texts[j]) + 1
            j += 1
            if at == len(run):
                return

    def one(self, chunk: _Chunk, j: int, last: bool) -> None:
        """The chunk's ``j``-th record, not a common one (or a malformed one)."""
        text = chunk.texts[j]
        number = chunk.n + j - self.lay.first
        # (A registration is kept with its place: read with it.)
        placed = text.startswith("REGISTER_FILE;")
        tok = chunk.token(j) if placed else (0, 0, 0, 0, text, False)
        try:
            rec = _parse_record(number, tok, True)
        except LogFormatError:
            # Named where it is: read again with its place.
            tok = chunk.token(j)
            try:
                _parse_record(number, tok, True)
            except LogFormatError as exc:
                if self.lay.start.prefixed:
                    raise LogFormatError(
                        exc.record,
                        exc.offset,
                        text,
                        f"{exc.problem} (if the program wrote to the stream pmemcheck logged "
                        "to, record with --log-file instead)",
                        exc.line,
                        exc.column,
                    ) from None
                raise
            raise AssertionError(f"{text!r} is malformed only without its place") from None
        if rec is Store or rec is Flush or rec is Fence:  # the common records, checked
            if last:
                self.counts[_KINDS[rec]] += 1
            return
        if isinstance(rec, RegisterFile):
            assert placed  # (only such a record is one)
            self.files.append(rec)
            return
        if not last or isinstance(rec, str):
            return  # an earlier run's operations, or a stray START / STOP
        self.counts[_KINDS.get(type(rec), "MARKER")] += 1
        if isinstance(rec, Marker):
            opened = self.open_markers
            if rec.begin:
                opened.append(rec)
                self.names.add(rec.name)
            elif not opened or opened[-1].name != rec.name:
                inner = f"{opened[-1].name!r} is open" if opened else "none is open"
                raise _Err(number, chunk.token(j))(
                    f"marker {rec.name!r} ends but {inner} (markers nest)"
                )
            else:
                opened.pop()


_KINDS: dict[type, str] = {Store: "STORE", Flush: "FLUSH", Fence: "FENCE", DeepSync: "DEEP_SYNC"}


def _read(pieces: Pieces, name: str, keep: bool = False) -> Log:
    """The log in ``pieces``; ``keep``: keep its operations' texts (its text is short, and
    the same whenever it is read again)."""
    lay, kept = _find_layout(pieces)
    first = lay.first
    reading = _Reading(lay)
    ranges = [*lay.earlier, (lay.start.n, lay.stop.n)]
    r = 0
    lo, hi = ranges[0]
    for chunk in _chunks(pieces) if kept is None else kept:
        n = chunk.n
        end = n + len(chunk.texts)
        while True:
            a, b = max(n, lo + 1), min(end, hi)
            if a < b:
                reading.check(chunk, a - n, b - n, r + 1 == len(ranges))
            if hi > end or r + 1 == len(ranges):
                break
            r += 1
            lo, hi = ranges[r]
        if end >= lay.stop.n:
            break
    stop = lay.stop
    if reading.open_markers:
        m = reading.open_markers[-1]
        raise _Err(stop.n - first, tuple(stop))(  # type: ignore[arg-type]
            f"marker {m.name!r} begun at record #{m.index} never ends"
        )
    start = lay.start
    texts = None
    if keep and kept is not None:
        texts = list(_texts(kept, start.n, stop.n))
    return Log(
        reading.files,
        stop.n - first + 1,
        (start.n - first, start.pos),
        (stop.n - first, stop.pos),
        reading.counts,
        name,
        pieces,
        lay,
        markers=frozenset(reading.names),
        _texts=texts,
    )


def parse_log(text: str) -> Log:
    """Parse a store log; raises :class:`LogFormatError` on the first malformed record.

    Every record inside a START..STOP is checked; markers between the last START and the
    last STOP must nest, and every marker begun there must end there.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(ErrorCode.EINVAL, "a store log is text (str)")
    return _read(_text_pieces(text), "<text>", len(text) <= _KEEP_TEXTS)


def read_log(path: str) -> Log:
    """The store log in the file at ``path``, checked as :func:`parse_log` checks text; its
    operations are read from the file again whenever they are needed, except a short file's
    texts, kept as :func:`parse_log` keeps a short text's."""
    pieces, short = _file(path)
    return _read(pieces, path, short)
