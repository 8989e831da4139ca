"""A pool that honours the shutdown data state: it refuses to open after an unsafe shutdown.

A fence only brings stores to the memory controller's queues (the ADR domain). If ADR itself
fails (an *unsafe shutdown*), data that sat in those queues may never reach the media, and
the device counts the event (its unsafe-shutdown count, USC). The shutdown data state (SDS)
record (device id, USC, number of users) lets the next open notice: if the pool was in use
when the USC moved, its content cannot be trusted and the map fails (state CORRUPTED). An
ordinary crash, with ADR working, leaves the pool in use with the USC unchanged
(OK_BUT_INTERRUPTED): the pool's own crash consistency handles that, so it is accepted.

The record must survive exactly the failure it detects, so it is saved with a *deep flush*
(through the controller's queues to the media), not merely persisted. It lives in a small
state file next to the data file, because the layer reports the final record (users back to
0) after the data file is unmapped. Two record slots, each with a checksum and a sequence
number, keep a torn save from destroying the previous record.

Layout of the state file (4 KiB): two slots of 640 bytes, each
    u64 sequence, u64 USC, u64 users, u32 device id length, u32 CRC-32, device id bytes

The pool's content here is a small journal (line 0: the number of entries; one checksummed
entry per line after it), appended with the usual order: entry persisted, then the count.
That order survives any power failure, not an unsafe shutdown: there the count's line may
keep its fenced store while the entry's line loses its own.

The checks crash the program's two files together (FileCrashCheck) with unsafe shutdowns
on top of power failures. Recovery accepts a refusal only after an unsafe shutdown;
otherwise the pool must open and its journal be whole. Bugs:
* ``no_deep_flush``: the record is saved with persist, not deep flush: the unsafe shutdown
  it exists to report can take the "in use" record back with the queues, the pool opens as
  a pool nobody was using, and its journal has lost an entry below the count.
* ``ignores_corrupted``: the pool accepts CORRUPTED (SDS treated as advisory): it opens
  after the unsafe shutdown and trusts a journal that lost an entry.
Both survive eADR: an unsafe shutdown is the persistence domain failing, whatever its size.

On a real platform (``pmemsim validate``) the pool behaves as a pool meant for any file:
* It requires PAGE granularity, the coarsest: the journal's ordering is all persist and deep
  flush, which msync serves on a file without DAX, and persistent memory still gives its
  finer granularity (the crash checks run on simulated CACHE_LINE and BYTE platforms, whose
  maps get exactly what they got when CACHE_LINE was required).
* Where the platform has no shutdown data state (libpmem2 answers NOSUPP for a file without
  DAX, so the layer refuses an SDS map with SDS_NOSUPP), there is nothing to check: no
  device counts unsafe shutdowns there, and a pool that refused to open would be a pool
  nobody could use on an ordinary file system. The pool then maps its data file without an
  SDS record (``Pool.state`` is None, ``Pool.sds`` False) and leaves the state file alone.
  PMDK 1.x pools (Debian's 1.12) do the same in effect: a count or id libpmem2 does not
  support counts as zero, so the check always passes on such a file (PMDK 2.1 refuses
  instead unless SDS was switched off when the pool was created). Only SDS_NOSUPP means
  that: every other failure, and every state the pool does not accept, still refuses it.
  The simulator's files always sit on a device, so its crash checks never take this path.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pmemsim import (
    Backend,
    Config,
    ErrorCode,
    Event,
    Granularity,
    NotSupportedError,
    Part,
    PartState,
    PartStateError,
    SdsRecord,
    SdsUpdateEvent,
    Set,
    Source,
    SourceFlag,
    View,
)
from pmemsim.explore import FileCrashCheck, current_crash

Verdict = Literal["consistent", "inconsistent"]

STATE_SIZE = 4096
DATA_SIZE = 4096
SLOT = 640
SLOT_HEADER = struct.Struct("<QQQII")
DEVICE_ID_MAX = SLOT - SLOT_HEADER.size
#: An ordinary crash is the pool's own business; only CORRUPTED and INDETERMINATE are not.
ACCEPTABLE = PartState.OK | PartState.OK_BUT_ALREADY_OPEN | PartState.OK_BUT_INTERRUPTED


class PoolRefused(Exception):
    def __init__(self, state: PartState | None) -> None:
        name = state.name if state is not None else "unknown"
        super().__init__(f"the pool's shutdown data state is {name}: its content is not safe")
        self.state = state


def _crc(seq: int, record: SdsRecord) -> int:
    head = struct.pack("<QQQ", seq, record.usc, record.refcount)
    return zlib.crc32(head + record.device_id)


class SdsStore:
    """The SDS record of one data file, kept in two alternating slots of a state file."""

    def __init__(self, state: View) -> None:
        self.state = state

    def _slot(self, i: int) -> tuple[int, SdsRecord] | None:
        seq, usc, users, id_len, crc = self.state.unpack_from(SLOT_HEADER.format, i * SLOT)
        if seq == 0 or id_len > DEVICE_ID_MAX:
            return None
        record = SdsRecord(self.state.read(i * SLOT + SLOT_HEADER.size, id_len), usc, users)
        return (seq, record) if crc == _crc(seq, record) else None

    def load(self) -> SdsRecord | None:
        """The newest whole record, or None for a pool never opened."""
        slots = [s for s in (self._slot(0), self._slot(1)) if s is not None]
        return max(slots, key=lambda s: s[0])[1] if slots else None

    def save(self, record: SdsRecord) -> None:
        """Write the record over the older slot and deep-flush it to the media."""
        slots = [s for s in (self._slot(0), self._slot(1)) if s is not None]
        seq = 1 + max((s[0] for s in slots), default=0)
        at = (seq % 2) * SLOT
        head = SLOT_HEADER.pack(
            seq, record.usc, record.refcount, len(record.device_id), _crc(seq, record)
        )
        self.state.write(at, head + record.device_id)
        # Not persist: the record must outlive the very ADR failure it is there to detect.
        self.state.deep_flush(at, SLOT)


class Pool:
    """An open pool: ``view`` is the data file's content. Raises PoolRefused if unsafe."""

    #: Where the SDS record is kept.
    Store: type[SdsStore] = SdsStore
    #: The shutdown data states in which the pool opens.
    acceptable = ACCEPTABLE

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        state_path: str | os.PathLike[str],
        *,
        backend: Backend | str | None = None,
    ) -> None:
        # The coarsest: persist and deep flush are all the pool needs (see the module's doc).
        page = Granularity.PAGE
        self._state_set = Set(Config(granularity=page, backend=backend))
        self._state_src = Source.from_file(state_path, SourceFlag.CREATE_IF_NEEDED)
        part = Part(self._state_src, 0, STATE_SIZE)
        self.store = self.Store(self._state_set.view(self._state_set.map(part)))
        self._data_src = Source.from_file(data_path, SourceFlag.CREATE_IF_NEEDED)
        self._data_src.set_sds(self.store.load())
        self._data_set = Set(
            Config(
                granularity=page,
                backend=backend,
                event_callback=self._on_event,
                acceptable_states=self.acceptable,
            )
        )
        #: Whether the platform keeps shutdown data state for the data file.
        self.sds = True
        try:
            desc = self._data_set.map(Part(self._data_src, 0, DATA_SIZE))
        except PartStateError:
            state = self._data_src.part_state
            self._close_all()
            raise PoolRefused(state) from None
        except NotSupportedError as exc:
            if exc.code != ErrorCode.SDS_NOSUPP:
                self._close_all()
                raise
            # No device counts unsafe shutdowns here: nothing to check (module doc). A source
            # keeps its SDS record for life, so the file is opened again without one.
            self._data_src.close()
            self._data_src = Source.from_file(data_path, SourceFlag.CREATE_IF_NEEDED)
            self.sds = False
            try:
                desc = self._data_set.map(Part(self._data_src, 0, DATA_SIZE))
            except Exception:
                self._close_all()
                raise
        self.view = self._data_set.view(desc)
        #: How the last run ended, as the layer judged it.
        self.state = self._data_src.part_state

    def _on_event(self, s: Set, event: Event, arg: object) -> None:
        if isinstance(event, SdsUpdateEvent) and event.source is self._data_src:
            self.store.save(event.sds)

    def _close_all(self) -> None:
        self._data_set.close()
        self._data_src.close()
        self._state_set.close()
        self._state_src.close()

    def close(self) -> None:
        """A clean shutdown: unmapping the data file saves the record with no users."""
        pmap = self._data_set.first_part_map()
        if pmap is not None:
            self._data_set.remove_part_map(pmap)
            del pmap
        self._close_all()


# -- the pool's content: a journal ---------------------------------------------------------

COUNT = 0
ENTRIES = 64
ENTRY = struct.Struct("<QQQ")
VALUES = (11, 22, 33)


class DamagedPool(Exception):
    """An entry below the count fails its checksum: the pool lost data it had made durable."""


def entry_checksum(index: int, value: int) -> int:
    # Never 0, so that an entry line lost back to zeros cannot pass.
    return zlib.crc32(struct.pack("<QQ", index, value)) | 1 << 32


def append(journal: View, value: int) -> None:
    """The entry durable before the count that publishes it: safe against power failures."""
    n = journal.u64[COUNT // 8]
    off = ENTRIES + n * 64
    journal.pack_into(ENTRY.format, off, n, value, entry_checksum(n, value))
    journal.persist(off, ENTRY.size)
    # Both bugs show here: an unsafe shutdown can keep this count and lose the entry's line.
    # pmemsim: crash-at no_deep_flush ignores_corrupted
    journal.u64[COUNT // 8] = n + 1
    # pmemsim: crash-at no_deep_flush ignores_corrupted
    journal.persist(COUNT, 8)


def entries(journal: View) -> list[int]:
    n = journal.u64[COUNT // 8]
    if n > len(VALUES):
        raise DamagedPool(f"count {n}")
    out = []
    for i in range(n):
        index, value, check = journal.unpack_from(ENTRY.format, ENTRIES + i * 64)
        if index != i or check != entry_checksum(i, value):
            raise DamagedPool(f"entry {i} of {n} is not whole")
        out.append(value)
    return out


# -- the variants ----------------------------------------------------------------------------


class PersistedStore(SdsStore):
    """Bug: the record is persisted, not deep-flushed: it survives power failures only."""

    def save(self, record: SdsRecord) -> None:
        slots = [s for s in (self._slot(0), self._slot(1)) if s is not None]
        seq = 1 + max((s[0] for s in slots), default=0)
        at = (seq % 2) * SLOT
        head = SLOT_HEADER.pack(
            seq, record.usc, record.refcount, len(record.device_id), _crc(seq, record)
        )
        self.state.write(at, head + record.device_id)
        self.state.persist(at, SLOT)


class NoDeepFlushPool(Pool):
    Store = PersistedStore


class IgnoresCorruptedPool(Pool):
    """Bug: SDS taken as advice: the pool opens whatever the state."""

    acceptable = ACCEPTABLE | PartState.CORRUPTED | PartState.INDETERMINATE


# -- the checks ------------------------------------------------------------------------------


def _paths(directory: Path) -> tuple[Path, Path]:
    return directory / "pool", directory / "pool.sds"


def sessions(kind: type[Pool]) -> Callable[[Backend, Path], None]:
    """Two runs of the program: two entries and a clean close, then one more entry."""

    def workload(backend: Backend, directory: Path) -> None:
        pool = kind(*_paths(directory), backend=backend)
        for v in VALUES[:2]:
            append(pool.view, v)
        pool.close()
        pool = kind(*_paths(directory), backend=backend)
        append(pool.view, VALUES[2])
        pool.close()

    return workload


def opening(kind: type[Pool]) -> Callable[[Backend, Path], bool]:
    """Recovery is the program opening its pool: refused only when ADR may have failed
    (an unsafe shutdown); otherwise open, with a whole journal."""

    def recover(backend: Backend, directory: Path) -> bool:
        crash = current_crash()
        unsafe = crash is not None and "unsafe_shutdown" in crash.faults
        try:
            pool = kind(*_paths(directory), backend=backend)
        except PoolRefused:
            if unsafe:
                return True  # the right answer: the content may have lost fenced data
            raise
        try:
            found = entries(pool.view)
            return found == list(VALUES[: len(found)])
        finally:
            pool.close()

    return recover


def both_granularities(
    variant: str, kind: type[Pool], cache_line: Verdict, byte: Verdict, description: str
) -> tuple[FileCrashCheck, FileCrashCheck]:
    def at(granularity: Granularity, expect: Verdict) -> FileCrashCheck:
        return FileCrashCheck(
            f"sds_pool.{variant}[{granularity.name.lower()}]",
            sessions(kind),
            opening(kind),
            granularity=granularity,
            expect=expect,
            description=description,
            faults=("unsafe_shutdown",),
        )

    return at(Granularity.CACHE_LINE, cache_line), at(Granularity.BYTE, byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    Pool,
    "consistent",
    "consistent",
    "SDS record deep-flushed; refused after an unsafe shutdown in use, opened otherwise",
)
no_deep_flush_cache_line, no_deep_flush_byte = both_granularities(
    "no_deep_flush",
    NoDeepFlushPool,
    "inconsistent",
    "inconsistent",
    "the SDS record persisted without deep flush: ADR failing takes it back too",
)
ignores_corrupted_cache_line, ignores_corrupted_byte = both_granularities(
    "ignores_corrupted",
    IgnoresCorruptedPool,
    "inconsistent",
    "inconsistent",
    "CORRUPTED accepted: the pool opens after an unsafe shutdown while in use",
)
