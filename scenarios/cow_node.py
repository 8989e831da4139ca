"""Copy-on-write: build the new version of a node elsewhere, then swing one 8-byte pointer.

A settings node is never modified where readers (or recovery) can see it. An update copies
it into the free one of two node slots, changes the copy, makes the copy durable, and then
publishes it by storing its offset in the root: an aligned 8-byte store, the only kind the
hardware promises to persist whole. Whatever the crash, the root names a complete node.

Layout of the pool (4 KiB):
    line 0          root: u64 offset of the current node (0: nothing published yet)
                    (the ``torn_root`` variant keeps a u64 version next to it)
    +0x100, +0x180  two node slots of 128 bytes (two lines each): u64 version, then
                    ITEMS u64 settings; a node of version v holds v * 1000 + i in item i

Bugs:
* ``publish_unfenced``: the node is flushed but not fenced before the root is written: the
  root's line can persist first (a flush without a fence guarantees nothing).
* ``torn_root``: the root is a 16-byte (offset, version) pair written as one store, believed
  atomic; only 8 bytes are, so after a crash the offset can be new and the version old.
  Under eADR (BYTE) a single store is either visible or not and the pair cannot tear.
* ``in_place``: the node is updated where it is, item by item; a crash in the middle leaves
  a node that is half old, half new. This one eADR does not fix.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Literal

from pmemsim import View
from pmemsim.explore import CrashCheck, per_granularity

Verdict = Literal["consistent", "inconsistent"]

ROOT = 0
SLOTS = (0x100, 0x180)
ITEMS = 9
NODE = struct.Struct(f"<Q{ITEMS}Q")
UPDATES = 3


class Corrupt(Exception):
    """The root or the node it names cannot be what any update published."""


def settings_for(version: int) -> list[int]:
    return [version * 1000 + i for i in range(ITEMS)]


# -- the copy-on-write node ----------------------------------------------------------------


class Settings:
    def __init__(self, pool: View) -> None:
        self.pool = pool

    def current(self) -> int:
        """The offset of the published node (0 if none); raises Corrupt if the root is."""
        node = self.pool.u64[ROOT // 8]
        if node not in (0, *SLOTS):
            raise Corrupt(f"root names 0x{node:x}, not a node slot")
        return node

    def read(self, node: int) -> tuple[int, list[int]]:
        version, *items = self.pool.unpack_from(NODE.format, node)
        return version, items

    def publish(self, node: int, version: int) -> None:
        # An aligned 8-byte store: after a crash the root is wholly old or wholly new.
        self.pool.u64[ROOT // 8] = node
        self.pool.persist(ROOT, 8)

    def write_node(self, node: int, version: int, items: list[int]) -> None:
        self.pool.pack_into(NODE.format, node, version, *items)
        self.pool.persist(node, NODE.size)

    def update(self, change: Callable[[int, list[int]], list[int]]) -> None:
        """Publish ``change(version, items)`` as the next version, copy-on-write."""
        old = self.current()
        version, items = self.read(old) if old else (0, [0] * ITEMS)
        new = SLOTS[1] if old == SLOTS[0] else SLOTS[0]
        self.write_node(new, version + 1, change(version + 1, items))
        self.publish(new, version + 1)


class PublishUnfenced(Settings):
    """Bug: the node is flushed, and the root written before any fence."""

    def write_node(self, node: int, version: int, items: list[int]) -> None:
        pool = self.pool
        # pmemsim: lost-store publish_unfenced
        pool.pack_into(NODE.format, node, version, *items)
        pool.flush(node, NODE.size)  # the publish's drain "will cover it"


class TornRoot(Settings):
    """Bug: a 16-byte (offset, version) root written as one store and trusted as atomic."""

    def current(self) -> int:
        node, version = self.pool.unpack_from("<QQ", ROOT)
        if node == 0:
            return 0
        if node not in SLOTS or self.read(node)[0] != version:
            raise Corrupt(f"root says version {version} at 0x{node:x}, the node disagrees")
        return int(node)

    def publish(self, node: int, version: int) -> None:
        self.pool.pack_into("<QQ", ROOT, node, version)  # pmemsim: lost-store torn_root
        self.pool.persist(ROOT, 16)


class InPlace(Settings):
    """Bug: no copy: the published node is changed where it is, one item at a time."""

    def update(self, change: Callable[[int, list[int]], list[int]]) -> None:
        pool, node = self.pool, self.current()
        version, items = self.read(node) if node else (0, [0] * ITEMS)
        node = node or SLOTS[0]
        new = change(version + 1, items)
        pool.u64[node // 8] = version + 1  # pmemsim: crash-at in_place
        for i, value in enumerate(new):
            pool.u64[node // 8 + 1 + i] = value  # pmemsim: lost-store in_place
        pool.persist(node, NODE.size)
        self.publish(node, version + 1)


def recover(pool: View) -> bool:
    """The root names nothing, or a whole node of some version."""
    settings = Settings(pool)
    node = settings.current()
    if node == 0:
        return True
    version, items = settings.read(node)
    return 1 <= version <= UPDATES and items == settings_for(version)


def recover_versioned(pool: View) -> bool:
    settings = TornRoot(pool)
    node = settings.current()
    if node == 0:
        return True
    version, items = settings.read(node)
    return 1 <= version <= UPDATES and items == settings_for(version)


# -- the checks ------------------------------------------------------------------------------


def updates(kind: type[Settings]) -> Callable[[View], None]:
    def workload(pool: View) -> None:
        settings = kind(pool)
        for _ in range(UPDATES):
            settings.update(lambda version, items: settings_for(version))

    return workload


def both_granularities(
    variant: str,
    kind: type[Settings],
    recover: Callable[[View], bool],
    cache_line: Verdict,
    byte: Verdict,
    description: str,
) -> tuple[CrashCheck, CrashCheck]:
    check = CrashCheck(f"cow_node.{variant}", updates(kind), recover, description=description)
    return per_granularity(check, cache_line=cache_line, byte=byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    Settings,
    recover,
    "consistent",
    "consistent",
    "node durable in the free slot, then an 8-byte root store, persisted",
)
publish_unfenced_cache_line, publish_unfenced_byte = both_granularities(
    "publish_unfenced",
    PublishUnfenced,
    recover,
    "inconsistent",
    "consistent",
    "node flushed, root written before the fence",
)
torn_root_cache_line, torn_root_byte = both_granularities(
    "torn_root",
    TornRoot,
    recover_versioned,
    "inconsistent",
    "consistent",
    "a 16-byte (offset, version) root tears at 8 bytes",
)
in_place_cache_line, in_place_byte = both_granularities(
    "in_place",
    InPlace,
    recover,
    "inconsistent",
    "inconsistent",
    "the live node is overwritten item by item",
)
