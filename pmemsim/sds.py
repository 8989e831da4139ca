"""Shutdown data state: is a part safe to use after the last run ended?

The application keeps an :class:`~pmemsim.SdsRecord` (device id, unsafe-shutdown count,
users) somewhere durable and gives it back to the source at the next run
(``Source.set_sds(record)``). At every map the layer reads the device's id and unsafe-shutdown
count (USC) again and computes the part's state:

1. users recorded and the source in use in this process: OK_BUT_ALREADY_OPEN; users recorded
   otherwise: OK_BUT_INTERRUPTED (the last user never unmapped: a crash); else OK.
2. same device: USC changed while users were recorded: CORRUPTED; USC changed with no users:
   the stored count is refreshed silently.
3. another device: users recorded: INDETERMINATE; no users: the record is re-initialised.

The state is reported (``Source.part_state`` and the SDS_UPDATE payload), then the map fails
with UNDESIRABLE_PART_STATE unless the config accepts it. Each successful map adds a user and
each unmap removes one, both firing SDS_UPDATE with the new record.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from .backend import Pmem2Failure
from .enums import PartState
from .errors import ErrorCode, error_for
from .events import SdsRecord

if TYPE_CHECKING:
    from .backend import BackendSource
    from .source import Source

__all__ = [
    "DEVICE_ID_MAX",
    "acquire_use",
    "check_sds",
    "compute_state",
    "fresh_record",
    "release_use",
]

#: Longest device id a record holds (PMEMSET_SDS_DEVICE_ID_LEN).
DEVICE_ID_MAX = 512


def fresh_record() -> SdsRecord:
    """A record for a pool that has never been opened."""
    return SdsRecord(b"", 0, 0)


def compute_state(
    stored: SdsRecord, device_id: bytes, usc: int, in_use: bool
) -> tuple[PartState, SdsRecord]:
    """The part state and the record to keep, from the stored record and a fresh reading."""
    if stored.refcount > 0:
        state = PartState.OK_BUT_ALREADY_OPEN if in_use else PartState.OK_BUT_INTERRUPTED
    else:
        state = PartState.OK
    record = stored
    if stored.device_id == device_id:
        if stored.usc != usc:
            if stored.refcount > 0:
                state = PartState.CORRUPTED
            else:
                record = replace(stored, usc=usc)
    elif stored.refcount > 0:
        state = PartState.INDETERMINATE
    else:
        record = SdsRecord(device_id, usc, 0)
    return state, record


#: Live maps per source identity: what "in use in this process" means.
_in_use: Counter[tuple[object, ...]] = Counter()


def acquire_use(key: tuple[object, ...]) -> None:
    _in_use[key] += 1


def release_use(key: tuple[object, ...]) -> None:
    _in_use[key] -= 1
    if _in_use[key] <= 0:
        del _in_use[key]


def check_sds(
    source: Source, bsrc: BackendSource, acceptable: PartState | int
) -> tuple[PartState, SdsRecord] | None:
    """Step 1 of a map: the part's state, or None when the source has no SDS record.

    Sets ``source.part_state``, then refuses a state ``acceptable`` does not contain.
    """
    if source.sds is None:
        return None
    try:
        device, usc = bsrc.device_id(), bsrc.usc()
    except Pmem2Failure as exc:
        raise exc.as_error(
            ErrorCode.SDS_NOSUPP, f"shutdown data state is not supported for {source!r}"
        ) from None
    state, record = compute_state(source.sds, device, usc, _in_use[source.identity] > 0)
    source.part_state = state
    if not state & acceptable:
        raise error_for(
            ErrorCode.UNDESIRABLE_PART_STATE,
            f"{source!r} is in state {state.name}, which the config does not accept",
        )
    return state, record
