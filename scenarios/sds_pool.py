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

This module is the data structure only. Its crash checks (correct: refused after an unsafe
shutdown; bug: the record saved with persist instead of deep flush, so the "in use" count
can be lost with the queues and a damaged pool opens as OK) need the simulator's
unsafe-shutdown crash mode, which is being added.
"""

from __future__ import annotations

import os
import struct
import zlib

from pmemsim import (
    Backend,
    Config,
    Event,
    Granularity,
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

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        state_path: str | os.PathLike[str],
        *,
        backend: Backend | str | None = None,
    ) -> None:
        cl = Granularity.CACHE_LINE
        self._state_set = Set(Config(granularity=cl, backend=backend))
        self._state_src = Source.from_file(state_path, SourceFlag.CREATE_IF_NEEDED)
        part = Part(self._state_src, 0, STATE_SIZE)
        self.store = SdsStore(self._state_set.view(self._state_set.map(part)))
        self._data_src = Source.from_file(data_path, SourceFlag.CREATE_IF_NEEDED)
        self._data_src.set_sds(self.store.load())
        self._data_set = Set(
            Config(
                granularity=cl,
                backend=backend,
                event_callback=self._on_event,
                acceptable_states=ACCEPTABLE,
            )
        )
        try:
            desc = self._data_set.map(Part(self._data_src, 0, DATA_SIZE))
        except PartStateError:
            state = self._data_src.part_state
            self._close_all()
            raise PoolRefused(state) from None
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
