"""The layer's small vocabularies: granularity, mem-operation flags, coalescing, part states."""

from __future__ import annotations

import enum

__all__ = ["Coalescing", "Granularity", "MemFlag", "PartState", "SourceFlag"]


class Granularity(enum.IntEnum):
    """Store granularity: the smallest unit software must flush to make a store durable.

    Ordered from finest to coarsest, so ``required >= effective`` means a map is acceptable.
    """

    #: eADR: caches are in the power-fail domain; a store is durable once visible.
    BYTE = 0
    #: ADR: 64-byte lines must be flushed (clwb / clflushopt / clflush) and fenced.
    CACHE_LINE = 1
    #: No DAX: 4 KiB pages reach the media only through msync.
    PAGE = 2


class MemFlag(enum.IntFlag):
    """Flags of memcpy / memmove / memset (values of PMEMSET_F_MEM_* / PMEM2_F_MEM_*)."""

    NONE = 0
    #: Skip the final drain (fence); the caller drains later.
    NODRAIN = 1 << 0
    #: Use non-temporal stores.
    NONTEMPORAL = 1 << 1
    #: Use temporal (write-back cached) stores.
    TEMPORAL = 1 << 2
    #: Hint: write-combining (non-temporal) stores.
    WC = 1 << 3
    #: Hint: write-back (temporal) stores.
    WB = 1 << 4
    #: Do not flush (and therefore do not drain) at all.
    NOFLUSH = 1 << 5

    @classmethod
    def valid_mask(cls) -> int:
        return (1 << 6) - 1


class Coalescing(enum.IntEnum):
    """How a new part map is placed relative to the previous one."""

    #: Every part gets a part map of its own (the default).
    NONE = 0
    #: Try to grow the previous part map; fall back to NONE if the range is taken.
    OPPORTUNISTIC = 1
    #: Grow the previous part map or fail with CANNOT_COALESCE_PARTS.
    FULL = 2


class PartState(enum.IntFlag):
    """Shutdown data state of a part (PMEMSET_PART_STATE_*); bit flags."""

    INDETERMINATE = 1 << 0
    OK = 1 << 1
    OK_BUT_ALREADY_OPEN = 1 << 2
    OK_BUT_INTERRUPTED = 1 << 3
    CORRUPTED = 1 << 4

    @classmethod
    def valid_mask(cls) -> int:
        return (1 << 5) - 1


class SourceFlag(enum.IntFlag):
    """How :meth:`pmemsim.Source.from_file` opens or creates the file."""

    NONE = 0
    #: Create the file, truncating an existing one.
    CREATE_ALWAYS = 1 << 0
    #: Create the file only if it does not exist.
    CREATE_IF_NEEDED = 1 << 1
    #: Never grow the file to fit a part: a part beyond its end fails.
    DO_NOT_GROW = 1 << 2

    @classmethod
    def valid_mask(cls) -> int:
        return (1 << 3) - 1
