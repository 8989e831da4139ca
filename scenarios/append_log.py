"""An append-only log with a persistent tail: the record must be durable before the tail
that publishes it.

Layout of the pool (4 KiB):
    line 0     tail: u64 number of published records
    line 1..   records, one per 64-byte line: u64 index, u64 value, u64 checksum

Recovery invariant: every record below the tail is intact (index and checksum match).
The correct version persists each record, then persists the tail. The two buggy versions
are the classic ones: the tail and record flushed together with one fence (the tail's line
may be evicted before the record's), and a record flushed but not fenced before the tail is
written (a flush without a fence guarantees nothing).
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
    log.persist(TAIL, 8)


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
