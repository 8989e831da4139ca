"""Reading the pmemcheck / pmreorder store log: records, their positions, and typed errors.

The log is one line of records separated by ``|`` (see docs/check-log.md)::

    START|REGISTER_FILE;/pool.bin;0x10000000;0x1000;0x0|STORE;0x10000000;0x1;0x8|
    FLUSH;0x10000000;0x40|FENCE|STOP

Records are numbered from 0 in the order they appear (``START`` is usually #0) and each one
remembers the character offset at which it starts, so that an error, and a report of a lost
store, can point into the file. Newlines also separate records, so that a log that pmemcheck
appended to several times still reads; empty records are skipped.

Only the operations between the last ``START`` and the last ``STOP`` count. Registrations
describe mappings rather than operations, so every ``REGISTER_FILE`` of the log counts,
wherever it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

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

_TOKEN = re.compile(r"[^|\r\n]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")


class LogFormatError(InvalidArgumentError):
    """A store log that does not follow the grammar; names the record and where it starts.

    ``record`` is the record's number (0 for the first), ``offset`` the character offset of
    its first character in the text, ``text`` the record itself (cut short if long).
    """

    def __init__(self, record: int, offset: int, text: str, problem: str) -> None:
        self.record = record
        self.offset = offset
        self.text = text if len(text) <= 80 else text[:77] + "..."
        self.problem = problem
        where = f"record #{record} at character {offset}"
        super().__init__(
            ErrorCode.EINVAL, f"malformed store log: {where} ({self.text!r}): {problem}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.record, self.offset, self.text, self.problem))


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


@dataclass(frozen=True, slots=True)
class Store:
    """``STORE;0xaddr;0xvalue;0xsize[;frame...]``: ``size`` bytes of ``value``,
    little-endian, stored at ``address``."""

    index: int
    pos: int
    address: int
    value: int
    size: int
    #: Stack frames pmemcheck logged with the store, innermost first (often none).
    frames: tuple[str, ...] = ()

    @property
    def data(self) -> bytes:
        return self.value.to_bytes(self.size, "little")


@dataclass(frozen=True, slots=True)
class Flush:
    """``FLUSH;0xaddr;0xsize``: the cache lines of the range are written back (a clwb or
    clflushopt: guaranteed only at the next fence)."""

    index: int
    pos: int
    address: int
    size: int


@dataclass(frozen=True, slots=True)
class Fence:
    """``FENCE``: earlier flushes take effect."""

    index: int
    pos: int


@dataclass(frozen=True, slots=True)
class DeepSync:
    """``DEEP_SYNC;0xaddr;0xsize``: the range is flushed through the memory controller."""

    index: int
    pos: int
    address: int
    size: int


@dataclass(frozen=True, slots=True)
class Marker:
    """``NAME.BEGIN`` or ``NAME.END``: a marked operation starts or ends (they nest)."""

    index: int
    pos: int
    name: str
    begin: bool


Operation = Store | Flush | Fence | DeepSync | Marker


@dataclass
class Log:
    """A parsed store log."""

    #: The operations between the last START and the last STOP, in order.
    operations: list[Operation]
    #: Every REGISTER_FILE of the log, in order.
    files: list[RegisterFile]
    #: How many records the text holds in all (START and STOP included).
    records: int
    #: Number and character offset of the START and STOP that bound the operations.
    start: tuple[int, int]
    stop: tuple[int, int]

    def count(self, kind: type) -> int:
        return sum(1 for op in self.operations if type(op) is kind)

    def record(self, index: int) -> Operation | None:
        """The operation numbered ``index`` (None if it is not one of the operations)."""
        ops = self.operations
        lo, hi = 0, len(ops)
        while lo < hi:
            mid = (lo + hi) // 2
            if ops[mid].index < index:
                lo = mid + 1
            else:
                hi = mid
        return ops[lo] if lo < len(ops) and ops[lo].index == index else None


def _tokens(text: str) -> Iterator[tuple[int, int, str]]:
    """``(number, offset, record)`` for every non-empty record, surrounding blanks removed."""
    n = 0
    for m in _TOKEN.finditer(text):
        raw = m.group()
        body = raw.strip()
        if not body:
            continue
        yield n, m.start() + (len(raw) - len(raw.lstrip())), body
        n += 1


def _hex(field: str, what: str, err: _Err) -> int:
    if _HEX.fullmatch(field) is None:
        raise err(f"{what} {field!r} is not a hexadecimal number written 0x...")
    return int(field, 16)


class _Err:
    """Builds the error for the record being parsed."""

    __slots__ = ("index", "pos", "text")

    def __init__(self, index: int, pos: int, text: str) -> None:
        self.index, self.pos, self.text = index, pos, text

    def __call__(self, problem: str) -> LogFormatError:
        return LogFormatError(self.index, self.pos, self.text, problem)


def _fields(fields: list[str], want: int, usage: str, err: _Err) -> None:
    if len(fields) != want:
        raise err(f"expected {usage}")


def _parse_record(index: int, pos: int, text: str) -> Operation | RegisterFile | str:
    """One record: an operation, a registration, or "START" / "STOP"."""
    if text in ("START", "STOP"):
        return text
    if text == "FENCE":
        return Fence(index, pos)
    err = _Err(index, pos, text)
    head, sep, _ = text.partition(";")
    if sep and head in ("START", "STOP", "FENCE"):
        raise err(f"{head} takes no fields")
    if not sep:
        name, dot, edge = text.rpartition(".")
        if dot and name and edge in ("BEGIN", "END"):
            return Marker(index, pos, name, edge == "BEGIN")
        raise err(
            "not a record of the store log (START, STOP, REGISTER_FILE, STORE, FLUSH, "
            "FENCE, DEEP_SYNC, NAME.BEGIN or NAME.END)"
        )
    fields = text.split(";")
    if head == "STORE":
        if len(fields) < 4:
            raise err("expected STORE;0xADDRESS;0xVALUE;0xSIZE[;FRAME...]")
        addr = _hex(fields[1], "address", err)
        value = _hex(fields[2], "value", err)
        size = _hex(fields[3], "size", err)
        if not 1 <= size <= MAX_STORE:
            raise err(f"a STORE carries 1 to {MAX_STORE} bytes, not {size}")
        if value >> (8 * size):
            raise err(f"value 0x{value:x} does not fit in {size} byte(s)")
        return Store(index, pos, addr, value, size, tuple(fields[4:]))
    if head == "FLUSH":
        _fields(fields, 3, "FLUSH;0xADDRESS;0xSIZE", err)
        return Flush(index, pos, _hex(fields[1], "address", err), _hex(fields[2], "size", err))
    if head == "DEEP_SYNC":
        _fields(fields, 3, "DEEP_SYNC;0xADDRESS;0xSIZE", err)
        return DeepSync(index, pos, _hex(fields[1], "address", err), _hex(fields[2], "size", err))
    if head == "REGISTER_FILE":
        if len(fields) < 5:
            raise err("expected REGISTER_FILE;PATH;0xBASE;0xSIZE;0xOFFSET")
        # Read the numbers from the right, so that a path holding ';' still reads.
        path = ";".join(fields[1:-3])
        if not path:
            raise err("the registered file has an empty path")
        base = _hex(fields[-3], "base address", err)
        size = _hex(fields[-2], "size", err)
        offset = _hex(fields[-1], "file offset", err)
        if size == 0:
            raise err("a registered file maps 0 bytes")
        return RegisterFile(index, pos, path, base, size, offset)
    raise err(f"unknown record type {head!r}")


def parse_log(text: str) -> Log:
    """Parse a store log; raises :class:`LogFormatError` on the first malformed record.

    Every record is checked, inside the START/STOP range or not; markers between the last
    START and the last STOP must nest, and every marker begun there must end there.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(ErrorCode.EINVAL, "a store log is text (str)")
    parsed: list[tuple[int, int, str, Operation | RegisterFile | str]] = []
    for index, pos, body in _tokens(text):
        parsed.append((index, pos, body, _parse_record(index, pos, body)))
    starts = [i for i, p in enumerate(parsed) if p[3] == "START"]
    stops = [i for i, p in enumerate(parsed) if p[3] == "STOP"]
    if not starts:
        where = parsed[0] if parsed else (0, 0, "", "")
        raise LogFormatError(where[0], where[1], where[2], "the log has no START record")
    first, last = starts[-1], stops[-1] if stops else -1
    if last < first:
        index, pos, body, _ = parsed[first]
        raise LogFormatError(index, pos, body, "no STOP record follows the last START")
    ops: list[Operation] = []
    open_markers: list[Marker] = []
    for index, pos, body, rec in parsed[first + 1 : last]:
        if isinstance(rec, str | RegisterFile):
            # Registrations are read separately; a STOP before the last one does not end
            # the range (everything from the last START to the last STOP counts).
            continue
        if isinstance(rec, Marker):
            if rec.begin:
                open_markers.append(rec)
            elif not open_markers or open_markers[-1].name != rec.name:
                inner = f"{open_markers[-1].name!r} is open" if open_markers else "none is open"
                raise LogFormatError(
                    index, pos, body, f"marker {rec.name!r} ends but {inner} (markers nest)"
                )
            else:
                open_markers.pop()
        ops.append(rec)
    if open_markers:
        m = open_markers[-1]
        index, pos, body, _ = parsed[last]
        raise LogFormatError(
            index, pos, body, f"marker {m.name!r} begun at record #{m.index} never ends"
        )
    files = [p[3] for p in parsed if isinstance(p[3], RegisterFile)]
    return Log(
        ops,
        files,
        len(parsed),
        (parsed[first][0], parsed[first][1]),
        (parsed[last][0], parsed[last][1]),
    )


def read_log(path: str) -> Log:
    """Parse the store log in the file at ``path``."""
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise LogFormatError(0, exc.start, "", "the log is not UTF-8 text") from None
    return parse_log(text)
