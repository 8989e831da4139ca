"""An insert at the front of a full B+-tree leaf that spans eight lines (FAST_FAIR's shape):
every key shifts one slot right, from the last slot down, across every line boundary.

Layout (4 KiB): a word at +0 set once the leaf's keys are committed; the leaf's slots at
+0x40, SLOTS u64 keys in ascending order ended by 0 (empty), eight to a line. Every
intermediate state of a right-to-left shift is readable: it has one duplicated key next to
itself, and binary search does not mind duplicates. Recovery looks up a few committed keys
by binary search (an empty slot sorts last) and fails if one is missing.

* ``bug``: the whole shift, then one persist of the leaf: lines persist independently, so a
  lower line's shift can persist while the line above it, which holds the only new copy of
  the key the lower line overwrote, does not: that key is lost.
* ``fix``: FAST_FAIR's rule: before the shift writes into a lower line, the line it
  finished is persisted.

At the bug's fence eight lines hold eight stores each: 9^8, 43 million images.
"""

from __future__ import annotations

from pmemsim import View
from pmemsim.explore import CrashCheck

LEAF = 0x40
SLOTS = 64
KEYS = tuple(range(100, 100 + 10 * (SLOTS - 1), 10))  # 63 keys: the leaf is full
NEW = 5
LOOKUPS = (KEYS[0], KEYS[7], KEYS[8], KEYS[31], KEYS[-1])


def _slot(i: int) -> int:
    return LEAF // 8 + i


def _fill(v: View) -> None:
    for i, k in enumerate(KEYS):
        v.u64[_slot(i)] = k
    v.persist(LEAF, SLOTS * 8)
    v.u64[0] = 1  # the leaf's keys are committed
    v.persist(0, 8)


def _shift(v: View, persist_lines: bool) -> None:
    n = len(KEYS)
    for i in range(n, 0, -1):  # slot i takes slot i - 1's key, from the end down
        v.u64[_slot(i)] = v.u64[_slot(i - 1)]
        if persist_lines and i % 8 == 0:
            v.persist(LEAF + i * 8, 64)  # the line this shift finished, before the next
    v.u64[_slot(0)] = NEW
    v.persist(LEAF, SLOTS * 8)


def insert_shifting_in_one_epoch(v: View) -> None:
    _fill(v)
    _shift(v, persist_lines=False)


def insert_persisting_each_line(v: View) -> None:
    _fill(v)
    _shift(v, persist_lines=True)


class KeyLost(Exception):
    pass


def _key(v: View, i: int) -> int:
    k = v.u64[_slot(i)]
    return k if k else 1 << 64  # an empty slot sorts after every key


def recover(v: View) -> bool:
    if v.u64[0] == 0:
        return True  # the leaf was never committed
    for key in LOOKUPS:
        lo, hi = 0, SLOTS
        while lo < hi:  # the first slot holding a key >= key
            mid = (lo + hi) // 2
            if _key(v, mid) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == SLOTS or _key(v, lo) != key:
            raise KeyLost(f"key {key} is not in the leaf")
    return True


bug = CrashCheck("node_shift.bug", insert_shifting_in_one_epoch, recover, expect="inconsistent")
fix = CrashCheck("node_shift.fix", insert_persisting_each_line, recover)
