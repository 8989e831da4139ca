"""An append-only log with a persistent tail: the record must be durable before the tail
that publishes it.

Layout of the pool (4 KiB):
    line 0     tail: u64 number of published records
    line 1..   records, one per 64-byte line: u64 index, u64 value, u64 checksum

Recovery invariant: every record below the tail is intact (index and checksum match).
The correct version persists each record, then the tail. Buggy writers: the tail and record
flushed together with one fence (the tail's line may be evicted before the record's), and a
record flushed but not fenced before the tail is written (a flush without a fence guarantees
nothing). A buggy recovery, at the end: it trusts a record hit by a bad block.
"""

from __future__ import annotations

from collections.abc import Callable

from pmemsim import View
from pmemsim.explore import CrashCheck

TAIL = 0
RECORDS = 64
RECORD = 64
MAGIC = 0x9E3779B97F4A7C15
VALUES = (11, 22, 33)


def checksum(index: int, value: int) -> int:
    return (index * MAGIC ^ value) & 0xFFFF_FFFF_FFFF_FFFF


def write_record(log: View, index: int, value: int) -> int:
    """Write record ``index`` (not yet durable); returns its offset."""
    off = RECORDS + index * RECORD
    # pmemsim: lost-store one_fence no_fence
    log.pack_into("<QQQ", off, index, value, checksum(index, value))
    return off


def append(log: View, value: int) -> None:
    """Correct: the record is durable before the tail that publishes it."""
    index = log.u64[TAIL // 8]
    off = write_record(log, index, value)
    log.persist(off, 24)
    log.u64[TAIL // 8] = index + 1
    log.persist(TAIL, 8)  # pmemsim: crash-at bad_block_trusted


def append_one_fence(log: View, value: int) -> None:
    """Bug: record and tail flushed together, then one fence."""
    index = log.u64[TAIL // 8]
    off = write_record(log, index, value)
    log.u64[TAIL // 8] = index + 1
    log.flush(off, 24)
    log.flush(TAIL, 8)
    log.drain()


def append_no_fence(log: View, value: int) -> None:
    """Bug: the record is flushed but not fenced before the tail is written."""
    index = log.u64[TAIL // 8]
    off = write_record(log, index, value)
    log.flush(off, 24)
    log.u64[TAIL // 8] = index + 1
    log.persist(TAIL, 8)


def recover(log: View) -> bool:
    """Every published record must be intact."""
    tail = log.u64[TAIL // 8]
    if tail > len(VALUES):
        return False
    for i in range(tail):
        index, value, check = log.unpack_from("<QQQ", RECORDS + i * RECORD)
        if index != i or check != checksum(i, value):
            return False
    return True


def _workload(append_fn: Callable[[View, int], None]) -> Callable[[View], None]:
    def run(log: View) -> None:
        for v in VALUES:
            append_fn(log, v)

    return run


correct = CrashCheck(
    "append_log: correct",
    _workload(append),
    recover,
    description="persist the record, then persist the tail",
)
one_fence = CrashCheck(
    "append_log: record and tail under one fence",
    _workload(append_one_fence),
    recover,
    expect="inconsistent",
    description="the tail's line can be evicted (or flushed) before the record's",
)
no_fence = CrashCheck(
    "append_log: record flushed, not fenced",
    _workload(append_no_fence),
    recover,
    expect="inconsistent",
    description="a flush without a fence guarantees nothing",
)


# -- bad blocks: recovery must check what it reads ------------------------------------------
#
# A bad block in a record below the tail is not a crash-consistency bug of the writer: the
# media lost data the program had made durable. Once the block is cleared (the kernel gives
# the sector back zeroed) the record is simply wrong, and only its checksum can tell.
# Recovery must detect it and truncate the log there, so that what it returns is still a
# prefix of what was appended. The bug trusts every record below the tail.
# These checks append enough records for some to live in the second 512-byte sector, apart
# from the tail: a bad block there leaves the tail readable above records that are gone.

MANY = tuple(11 * i for i in range(1, 11))


def open_log(log: View) -> list[int]:
    """Correct recovery: the records below the tail up to the first whose checksum fails; the
    log is truncated (durably) before that one."""
    tail = log.u64[TAIL // 8]
    values = []
    for i in range(tail):
        index, value, check = log.unpack_from("<QQQ", RECORDS + i * RECORD)
        if index != i or check != checksum(i, value):
            log.u64[TAIL // 8] = i
            log.persist(TAIL, 8)
            break
        values.append(value)
    return values


def open_log_trusting(log: View) -> list[int]:
    """Bug: the records below the tail are taken as they are."""
    tail = log.u64[TAIL // 8]
    return [log.unpack_from("<QQQ", RECORDS + i * RECORD)[1] for i in range(tail)]


def _opened_as_appended(open_fn: Callable[[View], list[int]]) -> Callable[[View], bool]:
    def recover(log: View) -> bool:
        values = open_fn(log)
        return values == list(MANY[: len(values)]) and log.u64[TAIL // 8] == len(values)

    return recover


def _appending_many(log: View) -> None:
    for v in MANY:
        append(log, v)


bad_block_truncated = CrashCheck(
    "append_log: a record hit by a bad block, detected by checksum and truncated",
    _appending_many,
    _opened_as_appended(open_log),
    faults=("badblock",),
    description="recovery checks each record's checksum and truncates at the first bad one",
)
bad_block_trusted = CrashCheck(
    "append_log: recovery trusts a record hit by a bad block",
    _appending_many,
    _opened_as_appended(open_log_trusting),
    expect="inconsistent",
    faults=("badblock",),
    description="a cleared bad block reads as zeros below the tail and is returned as data",
)
