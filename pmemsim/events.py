"""Events a set fires, their payloads, and change tracking.

Every call that changes a set fires events in a fixed order (see ``docs/events.md``). They go
first to the config's single callback, then to every *track* registered with
:meth:`pmemsim.Set.track`, in registration order. Only the config callback's return value for
``BADBLOCKS_CLEARED`` is honoured; every other return value is ignored.

The dispatcher keeps, per event type, whether anybody listens, so that a set with no callback
and no tracks builds no payload on the store and copy paths (the Trio instrument pattern).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .enums import MemFlag, PartState
from .errors import ErrorCode, InvalidArgumentError

if TYPE_CHECKING:
    from .set import Set
    from .source import Source

__all__ = [
    "BadBlock",
    "BadBlockEvent",
    "BadBlocksClearedEvent",
    "CopyEvent",
    "DrainEvent",
    "Event",
    "EventType",
    "FlushEvent",
    "MoveEvent",
    "PartAddEvent",
    "PartRemoveEvent",
    "PersistEvent",
    "RemoveRangeEvent",
    "SdsRecord",
    "SdsUpdateEvent",
    "SetEvent",
    "TrackHandle",
]


class EventType(enum.IntFlag):
    """Kinds of events; combine them with ``|`` to track several kinds at once."""

    COPY = 1 << 0
    MOVE = 1 << 1
    SET = 1 << 2
    FLUSH = 1 << 3
    DRAIN = 1 << 4
    #: Declared by libpmemset but never fired: persist fires FLUSH then DRAIN.
    PERSIST = 1 << 5
    PART_ADD = 1 << 6
    PART_REMOVE = 1 << 7
    REMOVE_RANGE = 1 << 8
    SDS_UPDATE = 1 << 9
    BADBLOCK = 1 << 10
    BADBLOCKS_CLEARED = 1 << 11

    @classmethod
    def all(cls) -> EventType:
        return cls((1 << 12) - 1)


# Payloads are frozen, without slots: on Python 3.11 a frozen slots dataclass raises
# TypeError instead of FrozenInstanceError when a non-field (e.g. ``type``) is assigned.
@dataclass(frozen=True)
class CopyEvent:
    """memcpy is about to copy ``len`` bytes from ``src`` (an address or a buffer)."""

    src: int | bytes
    dest: int
    len: int
    flags: MemFlag
    type = EventType.COPY

    @property
    def address(self) -> int:
        return self.dest


@dataclass(frozen=True)
class MoveEvent:
    """memmove is about to move ``len`` bytes from ``src`` to ``dest``."""

    src: int | bytes
    dest: int
    len: int
    flags: MemFlag
    type = EventType.MOVE

    @property
    def address(self) -> int:
        return self.dest


@dataclass(frozen=True)
class SetEvent:
    """memset is about to fill ``len`` bytes at ``dest`` with ``value``."""

    dest: int
    value: int
    len: int
    flags: MemFlag
    type = EventType.SET

    @property
    def address(self) -> int:
        return self.dest


@dataclass(frozen=True)
class FlushEvent:
    """A flush of ``[addr, addr + len)`` is about to happen."""

    addr: int
    len: int
    type = EventType.FLUSH

    @property
    def address(self) -> int:
        return self.addr


@dataclass(frozen=True)
class DrainEvent:
    """A drain (fence) happened or was requested by a mem operation."""

    type = EventType.DRAIN
    address = None
    len = 0


@dataclass(frozen=True)
class PersistEvent:
    """Declared for completeness; never fired (persist fires FLUSH then DRAIN)."""

    addr: int
    len: int
    type = EventType.PERSIST

    @property
    def address(self) -> int:
        return self.addr


@dataclass(frozen=True)
class PartAddEvent:
    """A part was mapped; ``addr``/``len`` cover the whole (possibly coalesced) part map."""

    addr: int
    len: int
    source: Source
    type = EventType.PART_ADD

    @property
    def address(self) -> int:
        return self.addr


@dataclass(frozen=True)
class PartRemoveEvent:
    """A whole part map is about to be unmapped."""

    addr: int
    len: int
    type = EventType.PART_REMOVE

    @property
    def address(self) -> int:
        return self.addr


@dataclass(frozen=True)
class RemoveRangeEvent:
    """remove_range was called for ``[addr, addr + len)``; fired first, always."""

    addr: int
    len: int
    type = EventType.REMOVE_RANGE

    @property
    def address(self) -> int:
        return self.addr


@dataclass(frozen=True)
class SdsRecord:
    """A shutdown-data-state record: device id, unsafe-shutdown count, users."""

    device_id: bytes
    usc: int
    refcount: int


@dataclass(frozen=True)
class SdsUpdateEvent:
    """The layer's copy of ``source``'s SDS record changed; persist it somewhere safe."""

    sds: SdsRecord
    source: Source
    state: PartState | None = None
    type = EventType.SDS_UPDATE
    address = None
    len = 0


@dataclass(frozen=True)
class BadBlock:
    """A bad block of a source: ``offset`` and ``length`` in bytes."""

    offset: int
    length: int


@dataclass(frozen=True)
class BadBlockEvent:
    """Bad-block detection found ``badblock`` in ``source`` (before mapping)."""

    badblock: BadBlock
    source: Source
    type = EventType.BADBLOCK
    address = None
    len = 0


@dataclass(frozen=True)
class BadBlocksClearedEvent:
    """Every reported bad block of ``source`` is gone; a non-zero return fails the map."""

    source: Source
    type = EventType.BADBLOCKS_CLEARED
    address = None
    len = 0


Event = (
    CopyEvent
    | MoveEvent
    | SetEvent
    | FlushEvent
    | DrainEvent
    | PersistEvent
    | PartAddEvent
    | PartRemoveEvent
    | RemoveRangeEvent
    | SdsUpdateEvent
    | BadBlockEvent
    | BadBlocksClearedEvent
)

#: ``callback(set, event, user_arg) -> int | None``
ConfigCallback = Callable[["Set", Event, Any], "int | None"]
#: ``notify(set, handle, event, user_data) -> None``
TrackCallback = Callable[["Set", "TrackHandle", Event, Any], object]


class Kind:
    """Event kinds as plain ints, for the data path's ``listening & Kind.X`` tests."""

    COPY = int(EventType.COPY)
    MOVE = int(EventType.MOVE)
    SET = int(EventType.SET)
    FLUSH = int(EventType.FLUSH)
    DRAIN = int(EventType.DRAIN)
    PART_ADD = int(EventType.PART_ADD)
    PART_REMOVE = int(EventType.PART_REMOVE)
    REMOVE_RANGE = int(EventType.REMOVE_RANGE)
    SDS_UPDATE = int(EventType.SDS_UPDATE)
    BADBLOCK = int(EventType.BADBLOCK)
    BADBLOCKS_CLEARED = int(EventType.BADBLOCKS_CLEARED)


class TrackHandle:
    """A registered track; pass it to :meth:`pmemsim.Set.untrack` (or call :meth:`delete`)."""

    __slots__ = ("_dispatcher", "address", "callback", "id", "kinds", "length", "user_data")

    def __init__(
        self,
        dispatcher: Dispatcher,
        ident: int,
        kinds: EventType,
        callback: TrackCallback,
        address: int | None,
        length: int | None,
        user_data: Any,
    ) -> None:
        self._dispatcher: Dispatcher | None = dispatcher
        self.id = ident
        self.kinds = kinds
        self.callback = callback
        self.address = address
        #: ``None``: exact address; otherwise the tracked range's length (the prefix form).
        self.length = length
        self.user_data = user_data

    @property
    def active(self) -> bool:
        return self._dispatcher is not None

    def delete(self) -> None:
        if self._dispatcher is None:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"track {self.id} was already deleted")
        self._dispatcher.untrack(self)

    def matches(self, event: Event) -> bool:
        if not self.kinds & event.type:
            return False
        if self.address is None:  # the whole set: every event of the chosen kinds
            return True
        addr = event.address
        if addr is None:
            return False
        if self.length is None:
            return addr == self.address
        end = addr + max(event.len, 1)
        return addr < self.address + self.length and self.address < end

    def __repr__(self) -> str:
        where = (
            "everything"
            if self.address is None
            else f"0x{self.address:x}"
            if self.length is None
            else f"[0x{self.address:x}, +{self.length})"
        )
        return f"<TrackHandle {self.id} {self.kinds!r} {where}>"


class Dispatcher:
    """Delivers events to the config callback and the tracks of one set."""

    __slots__ = ("_ids", "_owner", "_tracks", "callback", "listening", "user_arg")

    def __init__(self, owner: Set, callback: ConfigCallback | None, user_arg: Any) -> None:
        self._owner = owner
        self.callback = callback
        self.user_arg = user_arg
        self._tracks: list[TrackHandle] = []
        self._ids = itertools.count(1)
        #: Event kinds somebody listens to, as a plain int (testing an IntFlag goes through
        #: the enum machinery); the hot paths test it before building a payload.
        self.listening = int(EventType.all()) if callback is not None else 0

    def track(
        self,
        kinds: EventType | int,
        callback: TrackCallback | None,
        *,
        address: int | None = None,
        length: int | None = None,
        user_data: Any = None,
    ) -> TrackHandle:
        if callback is None or not callable(callback):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                "track needs a callable notify callback (got None)"
                if callback is None
                else f"track callback {callback!r} is not callable",
            )
        if isinstance(kinds, bool) or not isinstance(kinds, int):
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"track kinds must be EventType flags, not {kinds!r}"
            )
        if kinds <= 0 or int(kinds) & ~int(EventType.all()):  # ~EventType.all() is 0
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"invalid event kinds {kinds!r}: use EventType flags"
            )
        if address is None and length is not None:
            raise InvalidArgumentError(ErrorCode.EINVAL, "a tracked length needs an address")
        if address is not None and (not isinstance(address, int) or address < 0):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid tracked address {address!r}")
        if length is not None and (not isinstance(length, int) or length <= 0):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid tracked length {length!r}")
        handle = TrackHandle(
            self, next(self._ids), EventType(kinds), callback, address, length, user_data
        )
        self._tracks.append(handle)
        self.listening |= int(handle.kinds)
        return handle

    def untrack(self, handle: TrackHandle) -> None:
        if handle._dispatcher is not self or handle not in self._tracks:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{handle!r} is not an active track of this set"
            )
        self._tracks.remove(handle)
        handle._dispatcher = None
        listening = int(EventType.all()) if self.callback is not None else 0
        for t in self._tracks:
            listening |= int(t.kinds)
        self.listening = listening

    @property
    def tracks(self) -> tuple[TrackHandle, ...]:
        return tuple(self._tracks)

    def fire(self, event: Event) -> int:
        """Deliver ``event``; returns the config callback's return value (0 if none)."""
        ret = 0
        if self.callback is not None:
            r = self.callback(self._owner, event, self.user_arg)
            if r and event.type == EventType.BADBLOCKS_CLEARED:  # every other one is ignored
                ret = int(r)
        for t in tuple(self._tracks):
            if t.matches(event) and t._dispatcher is not None:
                t.callback(self._owner, t, event, t.user_data)
        return ret
