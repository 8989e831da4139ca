"""Undo-logged transactions: snapshot what you are about to change, change it, then commit.

A tiny bank moves money between accounts. Each transfer is a transaction: before an account
is modified its old balance is copied into an undo log; if the program crashes mid-transfer,
recovery rolls the logged balances back, so every transfer happens entirely or not at all.

Layout of the pool (4 KiB):
    line 0     u64 magic (the pool is formatted), u64 count of valid undo entries
    line 1     undo entries: (u64 offset, i64 old balance) x 4
    line 2..5  one i64 balance at the start of each line

The two orderings that make undo logging work:
* an undo entry is durable *before* the data it protects is modified (otherwise the data can
  reach the media while the log that could undo it does not);
* the data is durable *before* the log is cleared (clearing the log is the commit: after it,
  recovery no longer rolls back, so half-written data would stay half-written).

Bugs:
* ``snapshot_deferred``: the entries and count are written but only flushed at commit ("one
  fence for the whole transaction"): lines persist in any order before that fence.
* ``commit_before_data``: the log is cleared and persisted, then the balances are persisted.
Both are ordering mistakes between *different lines*, so under eADR (BYTE), where a store is
durable once visible and program order is persistence order, neither can go wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pmemsim import View
from pmemsim.explore import CrashCheck, per_granularity

Verdict = Literal["consistent", "inconsistent"]

MAGIC = 0x554E444F4C4F4721  # "UNDOLOG!"
MAGIC_AT = 0
COUNT_AT = 8
ENTRIES_AT = 64
ENTRY = 16
MAX_ENTRIES = 4
ACCOUNTS = 4
INITIAL = 100
TRANSFERS = ((0, 1, 30), (2, 3, 5), (1, 2, 60))


def account_at(i: int) -> int:
    return 128 + 64 * i


# -- the undo log ----------------------------------------------------------------------------


class UndoLog:
    """A one-transaction undo log: snapshot, then modify, then commit."""

    def __init__(self, pool: View) -> None:
        self.pool = pool

    @property
    def count(self) -> int:
        return self.pool.u64[COUNT_AT // 8]

    def snapshot(self, off: int) -> None:
        """Save the i64 at ``off`` so that a crash before commit restores it."""
        pool = self.pool
        i = self.count
        entry = ENTRIES_AT + i * ENTRY
        pool.pack_into("<Qq", entry, off, pool.i64[off // 8])
        pool.persist(entry, ENTRY)
        # The count makes the entry valid, so it must not reach the media before the entry:
        # a separate persist, not one flush of both lines under a single fence.
        pool.u64[COUNT_AT // 8] = i + 1
        pool.persist(COUNT_AT, 8)

    def commit(self, modified: tuple[int, ...]) -> None:
        pool = self.pool
        for off in modified:
            pool.flush(off, 8)
        pool.drain()
        pool.u64[COUNT_AT // 8] = 0
        pool.persist(COUNT_AT, 8)

    def rollback(self) -> bool:
        """Restore every snapshot (newest first) and clear the log; False if it is corrupt."""
        pool = self.pool
        count = self.count
        if count > MAX_ENTRIES:
            return False
        valid = {account_at(i) for i in range(ACCOUNTS)}
        for i in reversed(range(count)):
            off, old = pool.unpack_from("<Qq", ENTRIES_AT + i * ENTRY)
            if off not in valid:
                return False
            pool.i64[off // 8] = old
            pool.persist(off, 8)
        pool.u64[COUNT_AT // 8] = 0
        pool.persist(COUNT_AT, 8)
        return True


class SnapshotDeferred(UndoLog):
    """Bug: the snapshot is left for the commit to flush, after the data was modified."""

    def snapshot(self, off: int) -> None:
        pool = self.pool
        i = self.count
        entry = ENTRIES_AT + i * ENTRY
        # pmemsim: lost-store snapshot_deferred
        pool.pack_into("<Qq", entry, off, pool.i64[off // 8])
        pool.u64[COUNT_AT // 8] = i + 1  # pmemsim: lost-store snapshot_deferred

    def commit(self, modified: tuple[int, ...]) -> None:
        pool = self.pool
        pool.flush(0, 128)  # the log, "in the same fence as the data"
        super().commit(modified)


class CommitBeforeData(UndoLog):
    """Bug: the log is cleared (the commit point) before the new balances are durable."""

    def commit(self, modified: tuple[int, ...]) -> None:
        pool = self.pool
        pool.u64[COUNT_AT // 8] = 0
        pool.persist(COUNT_AT, 8)
        for off in modified:
            pool.flush(off, 8)
        pool.drain()


# -- the bank ----------------------------------------------------------------------------------


class Bank:
    def __init__(self, pool: View, log: UndoLog) -> None:
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

    def transfer(self, src: int, dst: int, amount: int) -> None:
        pool, a, b = self.pool, account_at(src), account_at(dst)
        self.log.snapshot(a)
        self.log.snapshot(b)
        pool.i64[a // 8] = pool.i64[a // 8] - amount  # pmemsim: lost-store commit_before_data
        pool.i64[b // 8] = pool.i64[b // 8] + amount  # pmemsim: lost-store commit_before_data
        self.log.commit((a, b))


def expected_states() -> list[list[int]]:
    """The balances after 0, 1, ... complete transfers: the only states recovery may leave."""
    state = [INITIAL] * ACCOUNTS
    states = [list(state)]
    for src, dst, amount in TRANSFERS:
        state[src] -= amount
        state[dst] += amount
        states.append(list(state))
    return states


def recover(pool: View) -> bool:
    """Roll back an unfinished transfer; the balances must then be a whole number of transfers."""
    if pool.u64[MAGIC_AT // 8] != MAGIC:
        return True  # crashed while formatting: there is no bank yet
    bank = Bank(pool, UndoLog(pool))
    if not bank.log.rollback():
        return False
    return bank.balances() in expected_states()


# -- the checks ------------------------------------------------------------------------------


def transfers(log_type: type[UndoLog]) -> Callable[[View], None]:
    def workload(pool: View) -> None:
        bank = Bank(pool, log_type(pool))
        bank.format()
        for src, dst, amount in TRANSFERS:
            bank.transfer(src, dst, amount)

    return workload


def both_granularities(
    variant: str, log_type: type[UndoLog], cache_line: Verdict, byte: Verdict, description: str
) -> tuple[CrashCheck, CrashCheck]:
    check = CrashCheck(f"undo_log.{variant}", transfers(log_type), recover, description=description)
    return per_granularity(check, cache_line=cache_line, byte=byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    UndoLog,
    "consistent",
    "consistent",
    "entry durable, then count; data durable, then the log cleared",
)
snapshot_deferred_cache_line, snapshot_deferred_byte = both_granularities(
    "snapshot_deferred",
    SnapshotDeferred,
    "inconsistent",
    "consistent",
    "the undo entry is flushed with the data: it may reach the media after it",
)
commit_before_data_cache_line, commit_before_data_byte = both_granularities(
    "commit_before_data",
    CommitBeforeData,
    "inconsistent",
    "consistent",
    "the log is cleared before the new balances are durable",
)
