"""A B-tree leaf that stays readable during an insert, FAST_FAIR style: no log at all.

The leaf is a sorted array of (key, value) entries ended by an entry whose value is 0. An
insert shifts the larger entries one slot right, from the end, and then writes the new
entry into the gap. Every store is an aligned 8-byte store, and the order of stores keeps
every intermediate state readable: a reader skips an entry whose value equals the next
entry's value (the duplicate an unfinished shift leaves behind). So a crash needs no
recovery: whatever persisted is either the old leaf or the new one, plus maybe a duplicate.

Stores to one cache line reach the media in program order, so shifting within a line needs
no flush. Lines, though, persist independently: before the shift starts writing into a
lower line (overwriting the only copy of an entry there), the line it just finished, which
holds that entry's new copy, must be durable. Moving down, a line is finished when the
shift has written the entry that *opens* it.

Layout of the pool (4 KiB): entry j at 16 * j: u64 key, u64 value (value 0 ends the leaf);
four entries per line, room for CAPACITY entries and the terminator.

Bugs:
* ``flush_condition``: the flush is issued when the written entry *ends* a line (natural
  when thinking of filling lines upward), so the line is flushed too early and not after the
  entry that opens it: the shift crosses into the lower line with the upper one unflushed.
* ``no_fence``: the right lines are flushed, but never fenced (clwb without sfence).
* ``value_first``: each move copies the value before the key. Between the two stores the
  reader sees a new value with a stale key: a state every crash can expose, eADR or not.
The first two need the cache-line model; the third is found at BYTE granularity too, by the
crash point after each store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pmemsim import View
from pmemsim.explore import CrashCheck, per_granularity

Verdict = Literal["consistent", "inconsistent"]

LINE = 64
ENTRY = 16
CAPACITY = 11
# Descending keys: every insert shifts the whole leaf, across every line boundary.
ORDER = (90, 80, 70, 60, 50, 40, 30, 20, 10)


def entry_at(j: int) -> int:
    return j * ENTRY


def value_for(key: int) -> int:
    return key * 10 + 1


class LeafFull(Exception):
    pass


# -- the leaf ----------------------------------------------------------------------------------


class Leaf:
    def __init__(self, pool: View) -> None:
        self.pool = pool

    def entry(self, j: int) -> tuple[int, int]:
        key, value = self.pool.unpack_from("<QQ", entry_at(j))
        return key, value

    def entries(self) -> list[tuple[int, int]]:
        """What a reader sees: entries up to the terminator, duplicates skipped."""
        out = []
        for j in range(CAPACITY):
            key, value = self.entry(j)
            if value == 0:
                break
            if value == self.entry(j + 1)[1]:
                continue  # left by a shift that had not yet overwritten this slot
            out.append((key, value))
        return out

    def size(self) -> int:
        return next(j for j in range(CAPACITY + 1) if self.entry(j)[1] == 0)

    def move(self, src: int, dst: int) -> None:
        """Copy entry ``src`` over entry ``dst``, key first.

        While the key is new and the value old, ``dst`` still duplicates the entry after
        it (or is still the terminator), so readers skip it; once the value is copied too,
        ``src`` becomes the duplicate.
        """
        key, value = self.entry(src)
        # pmemsim: lost-store flush_condition no_fence
        self.pool.u64[entry_at(dst) // 8] = key
        # pmemsim: lost-store flush_condition no_fence
        self.pool.u64[entry_at(dst) // 8 + 1] = value

    def finishes_line(self, dst: int) -> bool:
        # Moving down, the entry that opens a line is the last one written into it.
        return entry_at(dst) % LINE == 0

    def line_done(self, dst: int) -> None:
        self.pool.persist(entry_at(dst), ENTRY)

    def insert(self, key: int) -> None:
        n = self.size()
        if n == CAPACITY:
            raise LeafFull(key)
        j = n - 1
        while j >= 0 and self.entry(j)[0] > key:
            self.move(j, j + 1)
            if self.finishes_line(j + 1):
                self.line_done(j + 1)
            j -= 1
        self.pool.u64[entry_at(j + 1) // 8] = key
        self.pool.u64[entry_at(j + 1) // 8 + 1] = value_for(key)
        self.pool.persist(entry_at(j + 1), ENTRY)


class FlushCondition(Leaf):
    """Bug: flushes after the entry that closes a line instead of the one that opens it."""

    def finishes_line(self, dst: int) -> bool:
        return (entry_at(dst) + ENTRY) % LINE == 0


class NoFence(Leaf):
    """Bug: the finished line is flushed but never fenced before the shift moves down."""

    def line_done(self, dst: int) -> None:
        self.pool.flush(entry_at(dst), ENTRY)


class ValueFirst(Leaf):
    """Bug: each move copies the value before the key."""

    def move(self, src: int, dst: int) -> None:
        key, value = self.entry(src)
        self.pool.u64[entry_at(dst) // 8 + 1] = value  # pmemsim: crash-at value_first
        self.pool.u64[entry_at(dst) // 8] = key  # pmemsim: lost-store value_first


def recover(pool: View) -> bool:
    """A reader sees sorted, whole entries: the keys of some prefix of ORDER."""
    entries = Leaf(pool).entries()
    keys = [key for key, _ in entries]
    if keys != sorted(set(keys)) or any(v != value_for(k) for k, v in entries):
        return False
    return any(set(keys) == set(ORDER[:m]) for m in range(len(ORDER) + 1))


# -- the checks ------------------------------------------------------------------------------


def inserts(kind: type[Leaf]) -> Callable[[View], None]:
    def workload(pool: View) -> None:
        leaf = kind(pool)
        for key in ORDER:
            leaf.insert(key)

    return workload


def both_granularities(
    variant: str, kind: type[Leaf], cache_line: Verdict, byte: Verdict, description: str
) -> tuple[CrashCheck, CrashCheck]:
    check = CrashCheck(f"btree_leaf.{variant}", inserts(kind), recover, description=description)
    return per_granularity(check, cache_line=cache_line, byte=byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    Leaf,
    "consistent",
    "consistent",
    "shift right key-first; persist each line when the shift leaves it",
)
flush_condition_cache_line, flush_condition_byte = both_granularities(
    "flush_condition",
    FlushCondition,
    "inconsistent",
    "consistent",
    "the flush condition skips the entry that opens a line",
)
no_fence_cache_line, no_fence_byte = both_granularities(
    "no_fence",
    NoFence,
    "inconsistent",
    "consistent",
    "the finished line is flushed but not fenced",
)
value_first_cache_line, value_first_byte = both_granularities(
    "value_first",
    ValueFirst,
    "inconsistent",
    "inconsistent",
    "each move copies the value before the key",
)
