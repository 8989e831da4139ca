"""pmemsim: write a persistent-memory program once; crash-test it on a cache-line simulator,
property-test it with Hypothesis, and run it on real libpmem2.

This module only re-exports the public API; nothing heavy (cffi, libpmem2, Hypothesis) is
imported until a feature needs it.
"""

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
