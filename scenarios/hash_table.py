"""A hash table whose slots are made valid by a token kept in another cache line.

Open addressing with linear probing over 16 slots. A slot's key and value live in the slot
lines; whether the slot holds anything is said by a one-byte token in line 0 (empty, live,
or deleted: a tombstone keeps probe chains unbroken). Keeping every token in one line lets
a lookup skip empty slots without touching their lines, and makes validating a slot a single
one-byte store: the slot's content must be durable *before* its token says "live".

Layout of the pool (4 KiB):
    line 0     tokens: u8 x 16 (0 empty, 1 live, 2 deleted)
    line 1..4  slots: (u64 key, u64 value) x 16, four per line

Bugs:
* ``token_stored_early``: the insert writes the slot and the token, then persists the slot
  and then the token. Every flush comes in the right order, so a tool that only lets
  flushed stores persist sees nothing wrong; but the token's line is dirty from the moment
  it is written and the cache may evict it before the slot's flush completes. Only the
  eviction model exposes it, and under eADR (BYTE) it cannot happen.
* ``scrub_before_unlink``: a delete wipes the slot (so the old key cannot be found by
  scanning the media), persists that, and only then retires the token: a crash in between
  leaves a live token on an empty slot. This is an ordering bug, so eADR does not fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pmemsim import View
from pmemsim.explore import CrashCheck, per_granularity

Verdict = Literal["consistent", "inconsistent"]

SLOTS = 16
EMPTY, LIVE, DELETED = 0, 1, 2
SLOTS_AT = 64
SLOT = 16
# Keys 3, 19 and 35 share a home slot, so probing, tombstones and their reuse all happen.
OPS: tuple[tuple[str, int, int], ...] = (
    ("insert", 3, 30),
    ("insert", 19, 190),
    ("insert", 5, 50),
    ("delete", 3, 0),
    ("insert", 5, 55),  # an update in place
    ("insert", 35, 350),
    ("delete", 19, 0),
)


def slot_at(i: int) -> int:
    return SLOTS_AT + i * SLOT


class Full(Exception):
    pass


# -- the hash table ------------------------------------------------------------------------


class HashTable:
    def __init__(self, pool: View) -> None:
        self.pool = pool

    def token(self, i: int) -> int:
        return self.pool.u8[i]

    def key(self, i: int) -> int:
        return self.pool.u64[slot_at(i) // 8]

    def probe(self, key: int) -> tuple[int | None, int | None]:
        """(slot holding ``key`` or None, first reusable slot on its chain or None)."""
        free = None
        for n in range(SLOTS):
            i = (key + n) % SLOTS
            token = self.token(i)
            if token == EMPTY:
                return None, free if free is not None else i
            if token == DELETED:
                free = i if free is None else free
            elif self.key(i) == key:
                return i, free
        return None, free

    def get(self, key: int) -> int | None:
        i, _ = self.probe(key)
        return None if i is None else self.pool.u64[slot_at(i) // 8 + 1]

    def insert(self, key: int, value: int) -> None:
        found, free = self.probe(key)
        if found is not None:
            # An aligned 8-byte store replaces the value whole: no token change needed.
            self.pool.u64[slot_at(found) // 8 + 1] = value
            self.pool.persist(slot_at(found) + 8, 8)
            return
        if free is None:
            raise Full(key)
        self.fill(free, key, value)

    def fill(self, i: int, key: int, value: int) -> None:
        pool = self.pool
        pool.pack_into("<QQ", slot_at(i), key, value)
        pool.persist(slot_at(i), SLOT)
        pool.u8[i] = LIVE
        pool.persist(i, 1)

    def delete(self, key: int) -> bool:
        i, _ = self.probe(key)
        if i is None:
            return False
        self.unlink(i)
        return True

    def unlink(self, i: int) -> None:
        # One store retires the slot; its old content stays behind, unreachable.
        self.pool.u8[i] = DELETED
        self.pool.persist(i, 1)

    def items(self) -> dict[int, int]:
        out = {}
        for i in range(SLOTS):
            if self.token(i) == LIVE:
                key, value = self.pool.unpack_from("<QQ", slot_at(i))
                out[key] = value
        return out


class TokenStoredEarly(HashTable):
    """Bug: slot and token written first, then flushed one after the other."""

    def fill(self, i: int, key: int, value: int) -> None:
        pool = self.pool
        pool.pack_into("<QQ", slot_at(i), key, value)  # pmemsim: lost-store token_stored_early
        pool.u8[i] = LIVE
        pool.persist(slot_at(i), SLOT)
        pool.persist(i, 1)


class ScrubBeforeUnlink(HashTable):
    """Bug: the slot is wiped and persisted before its token is retired."""

    def unlink(self, i: int) -> None:
        pool = self.pool
        pool.pack_into("<QQ", slot_at(i), 0, 0)  # pmemsim: crash-at scrub_before_unlink
        pool.persist(slot_at(i), SLOT)  # pmemsim: crash-at scrub_before_unlink
        pool.u8[i] = DELETED
        pool.persist(i, 1)


# -- recovery --------------------------------------------------------------------------------


def expected_contents() -> list[dict[int, int]]:
    table: dict[int, int] = {}
    states = [dict(table)]
    for op, key, value in OPS:
        if op == "insert":
            table[key] = value
        else:
            del table[key]
        states.append(dict(table))
    return states


def recover(pool: View) -> bool:
    """The live slots hold exactly the table after some prefix of OPS, each one findable."""
    table = HashTable(pool)
    if any(table.token(i) not in (EMPTY, LIVE, DELETED) for i in range(SLOTS)):
        return False
    items = table.items()
    if items not in expected_contents():
        return False
    return all(table.get(key) == value for key, value in items.items())


# -- the checks ------------------------------------------------------------------------------


def operations(kind: type[HashTable]) -> Callable[[View], None]:
    def workload(pool: View) -> None:
        table = kind(pool)
        for op, key, value in OPS:
            if op == "insert":
                table.insert(key, value)
            else:
                table.delete(key)

    return workload


def both_granularities(
    variant: str, kind: type[HashTable], cache_line: Verdict, byte: Verdict, description: str
) -> tuple[CrashCheck, CrashCheck]:
    check = CrashCheck(f"hash_table.{variant}", operations(kind), recover, description=description)
    return per_granularity(check, cache_line=cache_line, byte=byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    HashTable,
    "consistent",
    "consistent",
    "slot persisted, then its token; a delete is one token store",
)
token_stored_early_cache_line, token_stored_early_byte = both_granularities(
    "token_stored_early",
    TokenStoredEarly,
    "inconsistent",
    "consistent",
    "token written before the slot's flush: its line can be evicted first",
)
scrub_before_unlink_cache_line, scrub_before_unlink_byte = both_granularities(
    "scrub_before_unlink",
    ScrubBeforeUnlink,
    "inconsistent",
    "inconsistent",
    "a deleted slot is wiped before its token is retired",
)
