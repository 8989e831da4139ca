"""pmemsim: write a persistent-memory program once; crash-test it on a cache-line simulator,
property-test it with Hypothesis, and run it on real libpmem2.

This module only re-exports the public API, each name imported on first use (PEP 562): a
command or program that needs one part of pmemsim does not pay for the rest at start-up
(cffi, libpmem2 and Hypothesis are never imported until a feature needs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import first_use

if TYPE_CHECKING:
    from .backend import (
        Backend,
        available_backends,
        default_backend,
        load_backend,
        register_backend,
        set_default_backend,
    )
    from .config import Config, Reservation
    from .enums import Coalescing, Granularity, MemFlag, PartState, SourceFlag
    from .errors import (
        BackendUnavailableError,
        CallbackError,
        ErrorCode,
        InvalidArgumentError,
        LookupFailure,
        MapError,
        MediaError,
        NotSupportedError,
        PartStateError,
        Pmem2Code,
        PmemError,
        PoisonError,
        RangeError,
        SourceError,
        StateError,
    )
    from .events import (
        BadBlock,
        BadBlockEvent,
        BadBlocksClearedEvent,
        CopyEvent,
        DrainEvent,
        Event,
        EventType,
        FlushEvent,
        MoveEvent,
        PartAddEvent,
        PartRemoveEvent,
        PersistEvent,
        RemoveRangeEvent,
        SdsRecord,
        SdsUpdateEvent,
        SetEvent,
        TrackHandle,
    )
    from .part import Descriptor, Part, PartMap
    from .provenance import helper
    from .set import SafeRead, Set
    from .snapshot import Snapshot
    from .source import Source
    from .view import TypedArray, View

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BadBlock",
    "BadBlockEvent",
    "BadBlocksClearedEvent",
    "CallbackError",
    "Coalescing",
    "Config",
    "CopyEvent",
    "Descriptor",
    "DrainEvent",
    "ErrorCode",
    "Event",
    "EventType",
    "FlushEvent",
    "Granularity",
    "InvalidArgumentError",
    "LookupFailure",
    "MapError",
    "MediaError",
    "MemFlag",
    "MoveEvent",
    "NotSupportedError",
    "Part",
    "PartAddEvent",
    "PartMap",
    "PartRemoveEvent",
    "PartState",
    "PartStateError",
    "PersistEvent",
    "Pmem2Code",
    "PmemError",
    "PoisonError",
    "RangeError",
    "RemoveRangeEvent",
    "Reservation",
    "SafeRead",
    "SdsRecord",
    "SdsUpdateEvent",
    "Set",
    "SetEvent",
    "Snapshot",
    "Source",
    "SourceError",
    "SourceFlag",
    "StateError",
    "TrackHandle",
    "TypedArray",
    "View",
    "__version__",
    "available_backends",
    "default_backend",
    "helper",
    "load_backend",
    "register_backend",
    "set_default_backend",
]

#: Public name -> the module that defines it.
_LAZY = {
    "Backend": ".backend",
    "available_backends": ".backend",
    "default_backend": ".backend",
    "load_backend": ".backend",
    "register_backend": ".backend",
    "set_default_backend": ".backend",
    "Config": ".config",
    "Reservation": ".config",
    "Coalescing": ".enums",
    "Granularity": ".enums",
    "MemFlag": ".enums",
    "PartState": ".enums",
    "SourceFlag": ".enums",
    "BackendUnavailableError": ".errors",
    "CallbackError": ".errors",
    "ErrorCode": ".errors",
    "InvalidArgumentError": ".errors",
    "LookupFailure": ".errors",
    "MapError": ".errors",
    "MediaError": ".errors",
    "NotSupportedError": ".errors",
    "PartStateError": ".errors",
    "Pmem2Code": ".errors",
    "PmemError": ".errors",
    "PoisonError": ".errors",
    "RangeError": ".errors",
    "SourceError": ".errors",
    "StateError": ".errors",
    "BadBlock": ".events",
    "BadBlockEvent": ".events",
    "BadBlocksClearedEvent": ".events",
    "CopyEvent": ".events",
    "DrainEvent": ".events",
    "Event": ".events",
    "EventType": ".events",
    "FlushEvent": ".events",
    "MoveEvent": ".events",
    "PartAddEvent": ".events",
    "PartRemoveEvent": ".events",
    "PersistEvent": ".events",
    "RemoveRangeEvent": ".events",
    "SdsRecord": ".events",
    "SdsUpdateEvent": ".events",
    "SetEvent": ".events",
    "TrackHandle": ".events",
    "Descriptor": ".part",
    "Part": ".part",
    "PartMap": ".part",
    "helper": ".provenance",
    "SafeRead": ".set",
    "Set": ".set",
    "Snapshot": ".snapshot",
    "Source": ".source",
    "TypedArray": ".view",
    "View": ".view",
}


__getattr__ = first_use(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    # (No set(): once imported, the submodule pmemsim.set is this module's global "set".)
    return sorted({*globals(), *__all__})
