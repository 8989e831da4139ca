"""Redo-logged transactions: write the new values to a log, make it durable, then apply.

The same tiny bank as the undo-log scenario, with the opposite discipline: a transfer writes
the *new* balances to a redo log, commits the log, and only then updates the accounts in
place. A crash after the commit is repaired by replaying the log (replay is idempotent);
a crash before it leaves the accounts untouched.

Layout of the pool (4 KiB):
    line 0     u64 magic, then the log header: u64 count, u64 checksum
    line 1     redo entries: (u64 offset, i64 new balance) x 4
    line 2..5  one i64 balance at the start of each line

The commit is a single fence over the entries *and* the header. That is only safe because
the header carries a checksum of the entries: the header's line may reach the media while
an entry's line does not (or keeps only some of its stores), and recovery must then see a
checksum that does not match and discard the log rather than replay a torn entry.

Bugs:
* ``apply_early``: the log is flushed but the accounts are updated before the fence that
  would make it durable, so an account line can persist without the log that completes it.
* ``no_checksum``: the header is only a count and recovery trusts it: the count's line
  persists, an entry's line does not, and recovery replays stale or half-written entries.
Both are ordering mistakes between different lines: under eADR (BYTE) the log is written in
program order before the header and the accounts, and neither can go wrong.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Literal

from pmemsim import View
from pmemsim.explore import CrashCheck, per_granularity

Verdict = Literal["consistent", "inconsistent"]

MAGIC = 0x5245444F4C4F4721  # "REDOLOG!"
MAGIC_AT = 0
HEADER_AT = 8
ENTRIES_AT = 64
ENTRY = 16
MAX_ENTRIES = 4
ACCOUNTS = 4
INITIAL = 100
# Each transfer touches other accounts than the one before, so that a stale entry left by
# the previous transaction is never the right answer by accident.
TRANSFERS = ((0, 1, 30), (2, 3, 5), (1, 2, 60))


def account_at(i: int) -> int:
    return 128 + 64 * i


def checksum(entries: list[tuple[int, int]]) -> int:
    """Covers the count too, so a header torn between count and checksum never matches."""
    data = struct.pack("<Q", len(entries)) + b"".join(struct.pack("<Qq", *e) for e in entries)
    return zlib.crc32(data)


# -- the redo log ------------------------------------------------------------------------------


class RedoLog:
    def __init__(self, pool: View) -> None:
        self.pool = pool

    def write(self, entries: list[tuple[int, int]]) -> None:
        """Write the entries and the header that commits them (nothing durable yet)."""
        pool = self.pool
        for i, (off, value) in enumerate(entries):
            # pmemsim: lost-store no_checksum apply_early
            pool.pack_into("<Qq", ENTRIES_AT + i * ENTRY, off, value)
        # pmemsim: lost-store apply_early
        pool.pack_into("<QQ", HEADER_AT, len(entries), self.header_check(entries))

    def header_check(self, entries: list[tuple[int, int]]) -> int:
        return checksum(entries)

    def commit(self, entries: list[tuple[int, int]]) -> None:
        """Make the log durable: from here on the transaction will happen."""
        self.write(entries)
        # One fence for entries and header: the checksum tells a torn log from a whole one.
        self.pool.flush(ENTRIES_AT, len(entries) * ENTRY)
        self.pool.flush(HEADER_AT, 16)
        self.pool.drain()

    def entries(self) -> list[tuple[int, int]] | None:
        """The committed entries, or None if the log holds no whole transaction."""
        count, check = self.pool.unpack_from("<QQ", HEADER_AT)
        if count == 0 or count > MAX_ENTRIES:
            return None
        entries = [self.pool.unpack_from("<Qq", ENTRIES_AT + i * ENTRY) for i in range(count)]
        return entries if self.trusts(entries, check) else None

    def trusts(self, entries: list[tuple[int, int]], check: int) -> bool:
        return check == checksum(entries)

    def clear(self) -> None:
        self.pool.pack_into("<QQ", HEADER_AT, 0, 0)
        self.pool.persist(HEADER_AT, 16)


class ApplyEarly(RedoLog):
    """Bug: the log is flushed, but the caller applies before any fence made it durable."""

    def commit(self, entries: list[tuple[int, int]]) -> None:
        self.write(entries)
        self.pool.flush(ENTRIES_AT, len(entries) * ENTRY)
        self.pool.flush(HEADER_AT, 16)  # the drain after applying "covers it"


class NoChecksum(RedoLog):
    """Bug: a bare count commits the log, and recovery believes it."""

    def header_check(self, entries: list[tuple[int, int]]) -> int:
        return 0

    def trusts(self, entries: list[tuple[int, int]], check: int) -> bool:
        return True


# -- the bank ----------------------------------------------------------------------------------


class Bank:
    def __init__(self, pool: View, log: RedoLog) -> None:
        self.pool = pool
        self.log = log

    def format(self) -> None:
        pool = self.pool
        for i in range(ACCOUNTS):
            pool.i64[account_at(i) // 8] = INITIAL
            pool.flush(account_at(i), 8)
        pool.drain()
        pool.u64[MAGIC_AT // 8] = MAGIC
        pool.persist(MAGIC_AT, 8)

    def balances(self) -> list[int]:
        return [self.pool.i64[account_at(i) // 8] for i in range(ACCOUNTS)]

    def apply(self, entries: list[tuple[int, int]]) -> None:
        pool = self.pool
        for off, value in entries:
            pool.i64[off // 8] = value
            pool.flush(off, 8)
        pool.drain()
        # Only once the accounts are durable may the log go: until then it can redo them.
        self.log.clear()

    def transfer(self, src: int, dst: int, amount: int) -> None:
        pool, a, b = self.pool, account_at(src), account_at(dst)
        entries = [(a, pool.i64[a // 8] - amount), (b, pool.i64[b // 8] + amount)]
        self.log.commit(entries)
        self.apply(entries)

    def recover(self) -> bool:
        """Replay a committed log; False if it names something that is not an account."""
        entries = self.log.entries()
        if entries is not None:
            if any(off not in {account_at(i) for i in range(ACCOUNTS)} for off, _ in entries):
                return False
            self.apply(entries)
        else:
            self.log.clear()
        return True


def expected_states() -> list[list[int]]:
    state = [INITIAL] * ACCOUNTS
    states = [list(state)]
    for src, dst, amount in TRANSFERS:
        state[src] -= amount
        state[dst] += amount
        states.append(list(state))
    return states


def recovery(log_type: type[RedoLog]) -> Callable[[View], bool]:
    def recover(pool: View) -> bool:
        """Replay a committed transfer; the balances must be a whole number of transfers."""
        if pool.u64[MAGIC_AT // 8] != MAGIC:
            return True  # crashed while formatting: there is no bank yet
        bank = Bank(pool, log_type(pool))
        return bank.recover() and bank.balances() in expected_states()

    return recover


# -- the checks ------------------------------------------------------------------------------


def transfers(log_type: type[RedoLog]) -> Callable[[View], None]:
    def workload(pool: View) -> None:
        bank = Bank(pool, log_type(pool))
        bank.format()
        for src, dst, amount in TRANSFERS:
            bank.transfer(src, dst, amount)

    return workload


def both_granularities(
    variant: str, log_type: type[RedoLog], cache_line: Verdict, byte: Verdict, description: str
) -> tuple[CrashCheck, CrashCheck]:
    check = CrashCheck(
        f"redo_log.{variant}", transfers(log_type), recovery(log_type), description=description
    )
    return per_granularity(check, cache_line=cache_line, byte=byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    RedoLog,
    "consistent",
    "consistent",
    "entries and checksummed header under one fence, then apply, then clear",
)
apply_early_cache_line, apply_early_byte = both_granularities(
    "apply_early",
    ApplyEarly,
    "inconsistent",
    "consistent",
    "accounts updated before the fence that makes the log durable",
)
no_checksum_cache_line, no_checksum_byte = both_granularities(
    "no_checksum",
    NoChecksum,
    "inconsistent",
    "consistent",
    "a bare count commits the log: a torn entry is replayed",
)
