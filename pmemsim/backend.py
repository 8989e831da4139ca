"""The contract between the set layer and a backend, and the registry of backends.

A backend offers libpmem2's vocabulary (sources, virtual-memory reservations, maps with
store, memmove, memset, flush, drain and deep flush) and knows nothing about sets or part
maps. The set layer checks every address and argument *before* calling a backend, so a
backend may assume its arguments are in range.

Backends are registered by import string and loaded only when asked for, so that
``import pmemsim`` never imports cffi or libpmem2 (the pattern Hypothesis uses for its
providers).
"""

from __future__ import annotations

import errno
import importlib
import threading
from abc import ABC, abstractmethod
from types import FrameType
from typing import TYPE_CHECKING, ClassVar

from .enums import Granularity, MemFlag
from .errors import (
    BackendUnavailableError,
    ErrorCode,
    InvalidArgumentError,
    Pmem2Code,
    PmemError,
    error_for,
)

if TYPE_CHECKING:
    from .events import BadBlock
    from .source import Source

__all__ = [
    "ADDRESS_LIMIT",
    "Backend",
    "BackendMap",
    "BackendReservation",
    "BackendSource",
    "Pmem2Failure",
    "available_backends",
    "beyond_address_space",
    "default_backend",
    "load_backend",
    "register_backend",
    "set_default_backend",
]


class Pmem2Failure(Exception):
    """A backend-level failure with a libpmem2 code; the set layer turns it into a PmemError."""

    def __init__(self, code: Pmem2Code | int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message

    def as_error(self, code: ErrorCode, what: str) -> PmemError:
        """The set layer's error ``code`` for this failure, keeping libpmem2's code and text."""
        return error_for(
            code, f"{what}: {self.message}", pmem2_code=self.code, pmem2_message=self.message
        )


#: No size, length or address at or beyond this reaches a backend: nothing that large fits
#: in any address space (and C's 64-bit integers could not even hold some of them).
ADDRESS_LIMIT = 1 << 63


def beyond_address_space(size: int) -> Pmem2Failure:
    """What a backend says for a range no address space can hold: the kernel's ENOMEM."""
    return Pmem2Failure(-errno.ENOMEM, f"{size} bytes do not fit in the address space")


class BackendSource(ABC):
    """A backend's handle on one :class:`pmemsim.Source`."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Current size in bytes."""

    @abstractmethod
    def close(self) -> None:
        """The source is going away; write back what must be written back."""

    # Reliability features: "not supported" unless the platform has them.

    def device_id(self) -> bytes:
        """The id of the device holding the source (for shutdown data state)."""
        raise Pmem2Failure(Pmem2Code.NOSUPP, "no device id for this source")

    def usc(self) -> int:
        """The device's unsafe-shutdown count."""
        raise Pmem2Failure(Pmem2Code.NOSUPP, "no unsafe-shutdown count for this source")

    def badblocks(self) -> list[BadBlock]:
        """The source's bad blocks, offsets and lengths in bytes."""
        raise Pmem2Failure(Pmem2Code.NOSUPP, "no bad-block information for this source")

    def clear_badblock(self, badblock: BadBlock) -> None:
        """Clear a bad block: its content is lost and it reads as zeros afterwards."""
        raise Pmem2Failure(Pmem2Code.NOSUPP, "bad blocks cannot be cleared for this source")


class BackendReservation(ABC):
    """A range of virtual address space that maps can be placed into."""

    address: int
    size: int
    #: Set by :meth:`delete`; nothing may be mapped into a deleted reservation.
    deleted: bool = False

    @abstractmethod
    def extend(self, size: int) -> None:
        """Grow by ``size`` bytes at the end; Pmem2Failure(MAP_EXISTS) if the range is taken."""

    @abstractmethod
    def shrink(self, offset: int, size: int) -> None:
        """Give back ``[offset, offset + size)``; only a range at either end."""

    @abstractmethod
    def delete(self) -> None:
        """Release the range; Pmem2Failure(VM_RESERVATION_NOT_EMPTY) while maps remain."""


class BackendMap(ABC):
    """One mapped range of a source. Addresses passed in are absolute and already checked."""

    address: int
    size: int
    #: The granularity the platform actually gives this map.
    granularity: Granularity

    @abstractmethod
    def read(self, addr: int, length: int) -> bytes:
        """A load. A range touching a bad block raises :class:`pmemsim.errors.PoisonError`
        with the faulting address (a backend that cannot catch the machine check may die
        instead, as a C program would)."""

    def read_mcsafe(self, addr: int, length: int) -> bytes:
        """A machine-check-safe read (libpmem2's ``pmem2_source_pread_mcsafe`` of the map's
        source at the matching offset).

        A poisoned range raises PoisonError (with the address if the backend knows it) or
        Pmem2Failure(IO_FAIL); a source that cannot do it raises Pmem2Failure with NOSUPP or
        SOURCE_TYPE_NOT_SUPPORTED (anonymous memory, as in libpmem2).
        """
        raise Pmem2Failure(Pmem2Code.NOSUPP, "machine-check-safe reads are not supported")

    @abstractmethod
    def store(self, addr: int, data: bytes, caller: FrameType) -> None:
        """An ordinary store (no flush): what ``*(T *)addr = v`` or ``memcpy`` does in C."""

    @abstractmethod
    def memmove(self, dest: int, src: bytes, flags: MemFlag, caller: FrameType) -> None:
        """libpmem2's memmove/memcpy with ``flags`` (flushing and draining as they say)."""

    @abstractmethod
    def memset(
        self, dest: int, value: int, length: int, flags: MemFlag, caller: FrameType
    ) -> None: ...

    @abstractmethod
    def flush(self, addr: int, length: int, caller: FrameType) -> None: ...

    @abstractmethod
    def drain(self, caller: FrameType) -> None: ...

    @abstractmethod
    def deep_flush(self, addr: int, length: int, caller: FrameType) -> None: ...

    @abstractmethod
    def unmap(self) -> None: ...


class Backend(ABC):
    """A platform the set layer runs on."""

    #: Registry name.
    name: ClassVar[str]
    #: Whether stores should carry the caller's frame (the simulator records provenance).
    wants_provenance: ClassVar[bool] = False
    #: Offsets and lengths of maps must be multiples of this.
    alignment: ClassVar[int] = 4096

    @abstractmethod
    def open_source(self, source: Source) -> BackendSource:
        """This backend's handle on ``source`` (opened once per source and cached there)."""

    @abstractmethod
    def reserve(self, size: int, address: int | None = None) -> BackendReservation:
        """A new reservation; at ``address`` exactly if given (Pmem2Failure if taken)."""

    @abstractmethod
    def map(
        self,
        source: BackendSource,
        offset: int,
        length: int,
        granularity: Granularity,
        reservation: BackendReservation,
        reservation_offset: int,
    ) -> BackendMap:
        """Map ``[offset, offset + length)`` of ``source`` into the reservation.

        Fails with Pmem2Failure(GRANULARITY_NOT_SUPPORTED) if the platform cannot give a
        granularity at least as fine as ``granularity``.
        """


_REGISTRY: dict[str, str] = {
    "sim": "pmemsim_backends.sim:SimBackend",
    "real": "pmemsim_backends.real:RealBackend",
}
_lock = threading.Lock()
_default: Backend | None = None


def register_backend(name: str, import_path: str) -> None:
    """Register a backend class under ``name`` as ``"package.module:ClassName"``."""
    if ":" not in import_path:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"backend import path {import_path!r} must be 'module:Class'"
        )
    _REGISTRY[name] = import_path


def available_backends() -> dict[str, str]:
    return dict(_REGISTRY)


def load_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``, imported now."""
    try:
        path = _REGISTRY[name]
    except KeyError:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"unknown backend {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            ErrorCode.NOSUPP, f"backend {name!r} cannot be imported: {exc}"
        ) from exc
    cls = getattr(module, attr)
    check = getattr(module, "unavailable_reason", None)
    if check is not None:
        reason = check()
        if reason:
            raise BackendUnavailableError(ErrorCode.NOSUPP, f"backend {name!r}: {reason}")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{path} is not a pmemsim Backend")
    return cls


def default_backend() -> Backend:
    """The process-wide backend sets use when their config names none (a simulator)."""
    global _default
    with _lock:
        if _default is None:
            _default = load_backend("sim")()
        return _default


def set_default_backend(backend: Backend | None) -> Backend | None:
    """Replace the default backend (None: a fresh simulator on next use); returns the old one."""
    global _default
    with _lock:
        old, _default = _default, backend
        return old
