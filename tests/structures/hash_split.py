"""A segment split of an extendible hash table (CCEH's shape): the keys of one segment whose
next hash bit is set move to a new segment, the directory is pointed at it, and the moved
keys are cleared from the old segment.

Layout (8 KiB): the directory at +0: global depth (0 until the table is committed), then
one segment offset per entry (4 entries, 2 bits of hash); segments of SEGMENT lines, A at
+0x400 and B at +0xc00. A segment's bucket is one line of four (key, value) pairs, chosen
by the key's low bits; a key lives in the first free pair of its bucket. Hash = the key.

Before the split, KEYS are in segment A (directory entries 0 and 1 both point at it) and
durable. Recovery looks every key up (directory entry by the top bits, bucket by the low
bits) and stops at the first one it cannot find.

* ``bug``: copy, redirect and clear in one epoch, one fence at the end: the directory or
  the clearing may persist before the copies.
* ``fix``: persist the new segment, then the directory entry, then the clearing (CCEH's
  order: the copy is durable before anything points at it or drops the original).

At the bug's fence the new segment's lines hold up to eight stores each, the old one's the
clearing stores: millions of images.
"""

from __future__ import annotations

from pmemsim import View
from pmemsim.explore import CrashCheck

SEGMENT = 8  # lines per segment: 8 buckets of 4 pairs
A, B = 0x400, 0xC00
BITS = 2  # directory entries: 4
KEYS = tuple(range(1, 257, 5))[:32]  # four to a bucket: segment A is full


def _dir_entry(key: int) -> int:
    return (key >> 6) & ((1 << BITS) - 1)


def _bucket(segment: int, key: int) -> int:
    return segment + (key % SEGMENT) * 64


def _insert(v: View, segment: int, key: int) -> int:
    at = _bucket(segment, key)
    for pair in range(4):
        if v.u64[at // 8 + 2 * pair] == 0:
            v.u64[at // 8 + 2 * pair + 1] = key * 100
            v.u64[at // 8 + 2 * pair] = key
            return at + 16 * pair
    raise OverflowError(f"bucket of key {key} is full")


def _setup(v: View) -> None:
    for e in range(4):
        v.u64[1 + e] = A  # every directory entry points at segment A
    for k in KEYS:
        _insert(v, A, k)
    v.persist(0, 0x2000)
    v.u64[0] = 1  # the global depth: the table exists, its keys are committed
    v.persist(0, 8)


def _moves(key: int) -> bool:
    return _dir_entry(key) == 1  # the keys directory entry 1 will find in B


def _copy(v: View) -> None:
    for k in KEYS:
        if _moves(k):
            _insert(v, B, k)


def _redirect(v: View) -> None:
    v.u64[1 + 1] = B


def _clear(v: View) -> None:
    for k in KEYS:
        if _moves(k):
            at = _bucket(A, k)
            for pair in range(4):
                if v.u64[at // 8 + 2 * pair] == k:
                    v.u64[at // 8 + 2 * pair] = 0
                    v.u64[at // 8 + 2 * pair + 1] = 0


def split_in_one_epoch(v: View) -> None:
    _setup(v)
    _copy(v)
    _redirect(v)
    _clear(v)
    v.persist(0, 0x2000)


def split_in_order(v: View) -> None:
    _setup(v)
    _copy(v)
    v.persist(B, SEGMENT * 64)
    _redirect(v)
    v.persist(16, 8)
    _clear(v)
    v.persist(A, SEGMENT * 64)


class KeyLost(Exception):
    pass


def recover(v: View) -> bool:
    if v.u64[0] == 0:
        return True  # the table was never committed
    for k in KEYS:
        segment = v.u64[1 + _dir_entry(k)]
        at = _bucket(segment, k)
        if not any(v.u64[at // 8 + 2 * p] == k for p in range(4)):
            raise KeyLost(f"key {k} is not in its bucket at +0x{at:x}")
    return True


bug = CrashCheck("hash_split.bug", split_in_one_epoch, recover, size=0x2000, expect="inconsistent")
fix = CrashCheck("hash_split.fix", split_in_order, recover, size=0x2000)
