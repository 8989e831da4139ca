"""A persistent configuration map with Corosync's cmap semantics, on persistent memory.

Keys are names such as ``totem.token``; values are typed (the signed and unsigned integers
of 8 to 64 bits, float, double, string, binary). ``set`` adds or modifies a key, ``get``
reads it, ``delete`` removes it; errors are Corosync's ``cs_error_t`` codes. Watchers
register with ``track_add`` for an exact key or, with TRACK_PREFIX, for every key under a
prefix, choosing the events (ADD, DELETE, MODIFY) they want; each notification carries the
key, the new value and the old value (unset ones have type 0, as in Corosync), and
``track_delete`` ends it. What this version adds is persistence: every update survives a
crash whole, and a watcher is told of a change only once the change is durable, so nothing
a watcher saw (and maybe acted on) can be gone after a crash.

Layout of the map's region (SLOTS records of 128 bytes, two lines each):
    +0    u64 sequence number (0: the slot is free)
    +8    u8 type, u8 key length, u16 value length
    +16   the key (at most KEY_MAX bytes)
    +64   the value (at most VALUE_MAX bytes)

An update never overwrites the live record: it writes a whole new record into a free slot,
makes it durable, then publishes it with one 8-byte store of a sequence number higher than
any other, and only then frees the old record. A crash in between leaves two live records
for the key, and opening the map keeps the newer. A delete is the one store that frees the
record; scrubbing the old value off the media comes after.

Bugs:
* ``notify_before_persist``: the record is published and the watchers told, and only then
  is it persisted. A watcher that durably acted on the notification (here: it appends the
  change to its own log in the same pool) can survive a crash that the change did not.
  Under eADR (BYTE) the stores are durable when the watchers are told, and nothing is lost.
* ``half_removed_delete``: a delete wipes the whole record with one memset, trusting the
  zeroed sequence number to free it. The record spans two lines, which persist
  independently: a crash can leave the key live with its value wiped. Under eADR (BYTE)
  the memset is one store and cannot be half done.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pmemsim import View
from pmemsim.explore import CrashCheck, per_granularity

Verdict = Literal["consistent", "inconsistent"]


class CsError(enum.IntEnum):
    """Corosync's cs_error_t (the codes this map returns, and the common others)."""

    OK = 1
    ERR_LIBRARY = 2
    ERR_TRY_AGAIN = 6
    ERR_INVALID_PARAM = 7
    ERR_NO_MEMORY = 8
    ERR_BAD_HANDLE = 9
    ERR_ACCESS = 11
    ERR_NOT_EXIST = 12
    ERR_NAME_TOO_LONG = 13
    ERR_EXIST = 14
    ERR_NO_SPACE = 15
    ERR_NOT_SUPPORTED = 19


class CmapError(Exception):
    def __init__(self, error: CsError, message: str) -> None:
        super().__init__(f"CS_{error.name}: {message}")
        self.error = error


class ValueType(enum.IntEnum):
    """cmap_value_types_t."""

    INT8 = 1
    UINT8 = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    INT64 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    STRING = 11
    BINARY = 12


_FORMATS = {
    ValueType.INT8: "<b",
    ValueType.UINT8: "<B",
    ValueType.INT16: "<h",
    ValueType.UINT16: "<H",
    ValueType.INT32: "<i",
    ValueType.UINT32: "<I",
    ValueType.INT64: "<q",
    ValueType.UINT64: "<Q",
    ValueType.FLOAT: "<f",
    ValueType.DOUBLE: "<d",
}

TRACK_DELETE = 1
TRACK_MODIFY = 2
TRACK_ADD = 4
TRACK_PREFIX = 8
_TRACK_BITS = TRACK_DELETE | TRACK_MODIFY | TRACK_ADD | TRACK_PREFIX

KEY_MIN = 3
KEY_MAX = 48
VALUE_MAX = 64
_TYPES = frozenset(ValueType)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:")


@dataclass(frozen=True)
class Value:
    """A typed value as stored; ``type`` 0 is "no value" (Corosync's zeroed notify value).

    Strings are stored NUL-terminated, as Corosync does, and ``len`` counts the NUL.
    """

    type: int
    data: bytes

    @property
    def len(self) -> int:
        return len(self.data)

    def decode(self) -> int | float | str | bytes | None:
        if self.type == 0:
            return None
        t = ValueType(self.type)
        if t == ValueType.STRING:
            return self.data[:-1].decode()
        if t == ValueType.BINARY:
            return self.data
        return struct.unpack(_FORMATS[t], self.data)[0]  # type: ignore[no-any-return]

    @classmethod
    def encode(cls, value: object, vtype: ValueType | int) -> Value:
        try:
            t = ValueType(vtype)
        except ValueError:
            raise CmapError(CsError.ERR_INVALID_PARAM, f"no value type {vtype!r}") from None
        if t == ValueType.STRING:
            if not isinstance(value, str) or "\0" in value:
                raise CmapError(CsError.ERR_INVALID_PARAM, "a string value is a str without NUL")
            data = value.encode() + b"\0"
        elif t == ValueType.BINARY:
            if not isinstance(value, (bytes, bytearray)):
                raise CmapError(CsError.ERR_INVALID_PARAM, "a binary value is bytes")
            data = bytes(value)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if t in (ValueType.FLOAT, ValueType.DOUBLE):
                ok = ok or (isinstance(value, float) and math.isfinite(value))
            if not ok:
                raise CmapError(CsError.ERR_INVALID_PARAM, f"{value!r} is not a {t.name}")
            try:
                data = struct.pack(_FORMATS[t], value)
            except (struct.error, OverflowError):
                raise CmapError(
                    CsError.ERR_INVALID_PARAM, f"{value!r} does not fit {t.name}"
                ) from None
        return cls(t, data)


NO_VALUE = Value(0, b"")

#: notify_fn(cmap, track handle, event, key name, new value, old value, user data)
NotifyFn = Callable[["Cmap", int, int, str, Value, Value, object], None]


@dataclass(frozen=True)
class _Track:
    key_name: str
    track_type: int
    notify_fn: NotifyFn
    user_data: object

    def wants(self, event: int, key: str) -> bool:
        if not self.track_type & event:
            return False
        if self.track_type & TRACK_PREFIX:
            return key.startswith(self.key_name)
        return key == self.key_name


# -- the map -------------------------------------------------------------------------------

SLOT = 128
SLOTS = 12
MAP_AT = 256
HEADER = struct.Struct("<BBH")


class Cmap:
    """The map in ``pool[MAP_AT : MAP_AT + SLOTS * SLOT]``; opening it is its recovery."""

    def __init__(self, pool: View) -> None:
        self.pool = pool
        self._tracks: dict[int, _Track] = {}
        self._next_track = 0x7A0001
        self._pending: list[tuple[int, str, Value, Value]] = []
        self._index: dict[str, int] = {}
        live: dict[str, tuple[int, int]] = {}
        for i in range(SLOTS):
            seq = pool.u64[self._slot(i) // 8]
            if not seq:
                continue
            key = self._key(i)
            if key in live:
                # An update was interrupted between publishing the new record and freeing
                # the old one: the higher sequence number is the newer record.
                older = min(live[key], (seq, i))
                live[key] = max(live[key], (seq, i))
                self._free_slot(older[1])
            else:
                live[key] = (seq, i)
        self._index = {key: i for key, (_, i) in live.items()}
        self._seq = 1 + max((s for s, _ in live.values()), default=0)
        self._free = sorted(set(range(SLOTS)) - set(self._index.values()))

    # -- layout

    @staticmethod
    def _slot(i: int) -> int:
        return MAP_AT + i * SLOT

    def _key(self, i: int) -> str:
        vtype, key_len, value_len = self.pool.unpack_from(HEADER.format, self._slot(i) + 8)
        if vtype not in _TYPES or not KEY_MIN <= key_len <= KEY_MAX:
            raise CmapError(CsError.ERR_LIBRARY, f"slot {i} is live but holds no whole record")
        if value_len > VALUE_MAX:
            raise CmapError(CsError.ERR_LIBRARY, f"slot {i} has a value of {value_len} bytes")
        try:
            return self.pool.read(self._slot(i) + 16, key_len).decode()
        except UnicodeDecodeError:
            raise CmapError(CsError.ERR_LIBRARY, f"slot {i} has a garbled key") from None

    def _value(self, i: int) -> Value:
        vtype, _, value_len = self.pool.unpack_from(HEADER.format, self._slot(i) + 8)
        return Value(vtype, self.pool.read(self._slot(i) + 64, value_len))

    # -- persistence

    def _store_record(self, i: int, key: str, value: Value) -> None:
        """The record's stores into free slot ``i``: header and key in its first line, the
        value in its second. Nothing is durable yet."""
        at, raw = self._slot(i), key.encode()
        # pmemsim: lost-store notify_before_persist
        self.pool.pack_into(f"<BBH4x{len(raw)}s", at + 8, value.type, len(raw), value.len, raw)
        self.pool.write(at + 64, value.data)  # pmemsim: lost-store notify_before_persist

    def _write(self, i: int, key: str, value: Value) -> None:
        """Make a whole record durable in free slot ``i``, then publish it."""
        at = self._slot(i)
        self._store_record(i, key, value)
        self.pool.persist(at + 8, SLOT - 8)
        # The record is durable; one aligned 8-byte store makes it the key's live record.
        self.pool.u64[at // 8] = self._seq
        self.pool.persist(at, 8)
        self._seq += 1

    def _free_slot(self, i: int) -> None:
        """Free a record: one 8-byte store, durable before anything else happens."""
        self.pool.u64[self._slot(i) // 8] = 0
        self.pool.persist(self._slot(i), 8)

    def _scrub(self, i: int) -> None:
        """Wipe a freed record's key and value off the media (memset persists)."""
        self.pool.memset(self._slot(i) + 8, 0, SLOT - 8)

    def _remove(self, i: int) -> None:
        self._free_slot(i)
        self._scrub(i)

    # -- notifications

    def _deliver(self) -> None:
        """Tell the watchers about the changes made so far (call once they are durable)."""
        pending, self._pending = self._pending, []
        for event, key, new, old in pending:
            for handle, track in list(self._tracks.items()):
                if handle in self._tracks and track.wants(event, key):
                    track.notify_fn(self, handle, event, key, new, old, track.user_data)

    # -- the API

    def get(self, key: str) -> Value:
        i = self._index.get(key) if isinstance(key, str) else None
        if i is None:
            raise CmapError(CsError.ERR_NOT_EXIST, f"no key {key!r}")
        return self._value(i)

    def names(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix``, sorted (what a cmap iterator walks)."""
        return sorted(k for k in self._index if k.startswith(prefix))

    def set(self, key: str, value: object, vtype: ValueType | int) -> None:
        if not isinstance(key, str):
            raise CmapError(CsError.ERR_INVALID_PARAM, "a key name is a str")
        new = Value.encode(value, vtype)
        if new.len > VALUE_MAX:
            raise CmapError(CsError.ERR_INVALID_PARAM, f"values hold at most {VALUE_MAX} bytes")
        old_slot = self._index.get(key)
        old = NO_VALUE if old_slot is None else self._value(old_slot)
        if old == new:
            return  # Corosync: setting the value a key already has changes nothing
        if old_slot is None and not (
            KEY_MIN <= len(key.encode()) <= KEY_MAX and set(key) <= _NAME_CHARS
        ):
            raise CmapError(CsError.ERR_NAME_TOO_LONG, f"invalid key name {key!r}")
        # An update needs a free slot for its new record, so an add leaves one for it.
        if len(self._free) < (2 if old_slot is None else 1):
            raise CmapError(CsError.ERR_NO_MEMORY, f"the map holds at most {SLOTS - 1} keys")
        i = self._free.pop(0)
        self._pending.append((TRACK_ADD if old_slot is None else TRACK_MODIFY, key, new, old))
        self._write(i, key, new)
        if old_slot is not None:
            self._remove(old_slot)
            self._free.append(old_slot)
        self._index[key] = i
        self._deliver()

    def delete(self, key: str) -> None:
        old = self.get(key)
        i = self._index.pop(key)
        self._remove(i)
        self._free.append(i)
        self._pending.append((TRACK_DELETE, key, NO_VALUE, old))
        self._deliver()

    def track_add(
        self, key_name: str, track_type: int, notify_fn: NotifyFn | None, user_data: object = None
    ) -> int:
        if notify_fn is None or not callable(notify_fn):
            raise CmapError(CsError.ERR_INVALID_PARAM, "notify_fn is required")
        if not isinstance(track_type, int) or track_type & ~_TRACK_BITS:
            raise CmapError(CsError.ERR_INVALID_PARAM, f"invalid track_type {track_type!r}")
        if not isinstance(key_name, str):
            raise CmapError(CsError.ERR_INVALID_PARAM, "a key name is a str")
        handle = self._next_track
        self._next_track += 1
        self._tracks[handle] = _Track(key_name, track_type, notify_fn, user_data)
        return handle

    def track_delete(self, handle: int) -> None:
        if self._tracks.pop(handle, None) is None:
            raise CmapError(CsError.ERR_BAD_HANDLE, f"no track {handle!r}")


class NotifyBeforePersist(Cmap):
    """Bug: the record is published and the watchers told before it is made durable."""

    def _write(self, i: int, key: str, value: Value) -> None:
        at = self._slot(i)
        self._store_record(i, key, value)
        self.pool.u64[at // 8] = self._seq  # pmemsim: lost-store notify_before_persist
        self._seq += 1
        self._deliver()  # "the watchers need not wait for the flush"
        self.pool.persist(at, SLOT)


class HalfRemovedDelete(Cmap):
    """Bug: one memset wipes the record, sequence number and all, across two lines."""

    def _remove(self, i: int) -> None:
        self.pool.memset(self._slot(i), 0, SLOT)  # pmemsim: lost-store half_removed_delete


# -- a watcher that acts durably on what it is told ----------------------------------------

CHANGES_AT = 2048
CHANGE = 64
CHANGES_MAX = 24
CHANGE_HEADER = struct.Struct("<BBBB")


class ChangeLog:
    """Appends each notification it receives to a durable log (as a replica applying the
    change, or an audit trail, would): after a crash, what the watcher saw is on record."""

    def __init__(self, pool: View) -> None:
        self.pool = pool

    def __call__(
        self, cmap: Cmap, handle: int, event: int, key: str, new: Value, old: Value, _: object
    ) -> None:
        pool, n = self.pool, self.count()
        at = CHANGES_AT + CHANGE * (1 + n)
        raw = key.encode()
        if n == CHANGES_MAX or len(raw) > 24 or new.len > 32:
            raise ValueError(f"the change log has no room for {key!r} = {new}")
        pool.pack_into(CHANGE_HEADER.format, at, event, len(raw), new.type, new.len)
        pool.write(at + 8, raw)
        pool.write(at + 32, new.data)
        pool.persist(at, CHANGE)
        pool.u64[CHANGES_AT // 8] = n + 1
        pool.persist(CHANGES_AT, 8)

    def count(self) -> int:
        return self.pool.u64[CHANGES_AT // 8]

    def entries(self) -> list[tuple[int, str, Value]]:
        out = []
        for n in range(min(self.count(), CHANGES_MAX)):
            at = CHANGES_AT + CHANGE * (1 + n)
            event, key_len, vtype, value_len = self.pool.unpack_from(CHANGE_HEADER.format, at)
            key = self.pool.read(at + 8, key_len).decode(errors="replace")
            out.append((event, key, Value(vtype, self.pool.read(at + 32, value_len))))
        return out


# -- the program and its recovery ----------------------------------------------------------

Op = tuple[str, str, ValueType, object]
SCRIPT: tuple[Op, ...] = (
    ("set", "totem.token", ValueType.UINT32, 3000),
    ("set", "quorum.expected_votes", ValueType.UINT32, 2),
    ("set", "totem.cluster_name", ValueType.STRING, "alpha"),
    ("set", "quorum.expected_votes", ValueType.UINT32, 3),
    ("set", "totem.token", ValueType.UINT32, 3000),  # unchanged: no notification
    ("set", "totem.token", ValueType.DOUBLE, 4.5),  # a new type is a MODIFY
    ("untrack", "quorum.expected_votes", ValueType.UINT32, None),
    ("set", "quorum.expected_votes", ValueType.UINT32, 5),  # nobody tracks it any more
    ("delete", "totem.cluster_name", ValueType.STRING, None),
    ("delete", "quorum.expected_votes", ValueType.UINT32, None),
)
#: The watcher's tracks: every event under "totem.", and modifications of one exact key.
TOTEM = ("totem.", TRACK_ADD | TRACK_MODIFY | TRACK_DELETE | TRACK_PREFIX)
VOTES = ("quorum.expected_votes", TRACK_MODIFY)


def run_script(kind: type[Cmap]) -> Callable[[View], None]:
    def workload(pool: View) -> None:
        cmap = kind(pool)
        watcher = ChangeLog(pool)
        tracks = {name: cmap.track_add(name, how, watcher) for name, how in (TOTEM, VOTES)}
        for op, key, vtype, value in SCRIPT:
            if op == "set":
                cmap.set(key, value, vtype)
            elif op == "delete":
                cmap.delete(key)
            else:
                cmap.track_delete(tracks[key])

    return workload


def expected_history() -> tuple[list[dict[str, Value]], list[tuple[int, int, str, Value]]]:
    """The map after each prefix of SCRIPT, and each notification the watcher should get
    as (number of operations done when it is sent, event, key, new value).

    Written independently of Cmap, from the semantics alone: it is the oracle."""
    table: dict[str, Value] = {}
    states = [dict(table)]
    notices = []
    tracked = [TOTEM, VOTES]
    for n, (op, key, vtype, value) in enumerate(SCRIPT, 1):
        event, new = 0, NO_VALUE
        if op == "set":
            new = Value.encode(value, vtype)
            if table.get(key) != new:
                event = TRACK_MODIFY if key in table else TRACK_ADD
                table[key] = new
        elif op == "delete":
            del table[key]
            event = TRACK_DELETE
        else:
            tracked = [t for t in tracked if t[0] != key]
        for name, how in tracked:
            hit = key.startswith(name) if how & TRACK_PREFIX else key == name
            if event & how and hit:
                notices.append((n, event, key, new))
        states.append(dict(table))
    return states, notices


class Inconsistent(Exception):
    """What recovery found wrong with a crash image."""


EVENTS = {TRACK_ADD: "ADD", TRACK_MODIFY: "MODIFY", TRACK_DELETE: "DELETE"}


def recover(pool: View) -> None:
    """Open the map (its own recovery), then: it is the map after some prefix of SCRIPT, and
    every change the watcher recorded is in that prefix."""
    cmap = Cmap(pool)
    durable = {key: cmap.get(key) for key in cmap.names()}
    states, notices = expected_history()
    reached = [n for n, state in enumerate(states) if state == durable]
    if not reached:
        raise Inconsistent(f"the map is no state the script passed through\n{durable}")
    seen = ChangeLog(pool).entries()
    if seen != [(event, key, new) for _, event, key, new in notices[: len(seen)]]:
        raise Inconsistent(f"the watcher's log is not the notifications sent\n{seen}")
    if seen and notices[len(seen) - 1][0] > max(reached):
        n, event, key, new = notices[len(seen) - 1]
        raise LostNotification(
            "the watcher was told of a change that the crash lost\n"
            f"{EVENTS[event]} {key} = {new.decode()!r} is operation {n}; the map holds only "
            f"the first {max(reached)}"
        )


class LostNotification(Inconsistent):
    """A watcher was told of a change that the crash then lost."""


# -- the checks ------------------------------------------------------------------------------


def both_granularities(
    variant: str, kind: type[Cmap], cache_line: Verdict, byte: Verdict, description: str
) -> tuple[CrashCheck, CrashCheck]:
    check = CrashCheck(f"cmap.{variant}", run_script(kind), recover, description=description)
    return per_granularity(check, cache_line=cache_line, byte=byte)


correct_cache_line, correct_byte = both_granularities(
    "correct",
    Cmap,
    "consistent",
    "consistent",
    "new record durable, published by one 8-byte store, old freed, then notify",
)
notify_before_persist_cache_line, notify_before_persist_byte = both_granularities(
    "notify_before_persist",
    NotifyBeforePersist,
    "inconsistent",
    "consistent",
    "watchers told before the record is durable: they can see a value a crash loses",
)
half_removed_delete_cache_line, half_removed_delete_byte = both_granularities(
    "half_removed_delete",
    HalfRemovedDelete,
    "inconsistent",
    "consistent",
    "one memset wipes a two-line record: the key can survive with its value gone",
)
