"""Set configuration and user reservations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .backend import (
    ADDRESS_LIMIT,
    Backend,
    BackendReservation,
    Pmem2Failure,
    beyond_address_space,
    default_backend,
    load_backend,
)
from .enums import Granularity, PartState
from .errors import ErrorCode, InvalidArgumentError, Pmem2Code, error_for
from .events import ConfigCallback

__all__ = ["Config", "Reservation", "resolve_backend"]

DEFAULT_ACCEPTABLE_STATES = PartState.OK | PartState.OK_BUT_ALREADY_OPEN


def resolve_backend(backend: Backend | str | None) -> Backend:
    if backend is None:
        return default_backend()
    if isinstance(backend, str):
        return load_backend(backend)()
    if isinstance(backend, Backend):
        return backend
    raise InvalidArgumentError(ErrorCode.EINVAL, f"{backend!r} is not a backend")


class Reservation:
    """A range of virtual address space that part maps are placed into (first fit).

    Give it to :class:`Config` as ``reservation``; the set then places every part map inside
    it and fails with CANNOT_FIT_PART_MAP when no gap is large enough. Close it (or leave a
    ``with`` block) once no part map is left in it; a closed reservation cannot be used again.
    """

    def __init__(
        self, size: int, *, address: int | None = None, backend: Backend | str | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid reservation size {size!r}")
        if address is not None and (
            isinstance(address, bool) or not isinstance(address, int) or address <= 0
        ):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"invalid reservation address {address!r} (None places it anywhere)",
            )
        self.backend = resolve_backend(backend)
        if size % self.backend.alignment:
            raise InvalidArgumentError(
                ErrorCode.LENGTH_UNALIGNED,
                f"reservation size {size} is not a multiple of {self.backend.alignment}",
            )
        try:
            if (address or 0) + size > ADDRESS_LIMIT:
                raise beyond_address_space(size)
            self.raw: BackendReservation = self.backend.reserve(size, address)
        except Pmem2Failure as exc:
            raise exc.as_error(
                ErrorCode.CANNOT_FIT_PART_MAP, f"cannot reserve {size} bytes"
            ) from None

    @property
    def address(self) -> int:
        return self.raw.address

    @property
    def size(self) -> int:
        return self.raw.size

    @property
    def closed(self) -> bool:
        return self.raw.deleted

    def close(self) -> None:
        """Release the range (again: nothing).

        Fails with PART_MAP_POSSIBLE_USE_AFTER_DROP (libpmem2: VM_RESERVATION_NOT_EMPTY)
        while part maps of any set remain in it: remove them, or close their sets, first.
        """
        from . import placement

        with placement.lock:
            if self.raw.deleted:
                return
            held = len(placement.user_region(self).holders)
            if held:
                raise error_for(
                    ErrorCode.PART_MAP_POSSIBLE_USE_AFTER_DROP,
                    f"{held} part map(s) are still in {self!r}; remove them or close their "
                    "sets first",
                    pmem2_code=Pmem2Code.VM_RESERVATION_NOT_EMPTY,
                )
            try:
                self.raw.delete()
            except Pmem2Failure as exc:
                raise exc.as_error(ErrorCode.UNKNOWN, "cannot release the reservation") from None

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<Reservation 0x{self.address:x} +{self.size} closed>"
        return f"<Reservation 0x{self.address:x} +{self.size}>"


@dataclass
class Config:
    """What a set is created with; the set copies it, so later edits do not affect it.

    ``granularity`` is required: the coarsest store granularity the program accepts.
    ``event_callback(set, event, user_arg)`` receives every event. ``acceptable_states``
    lists the SDS part states a map may proceed with. ``backend`` is a backend object, a
    registered name ("sim", "real"), or None for the process-wide simulator.
    """

    granularity: Granularity | None = None
    event_callback: ConfigCallback | None = None
    user_arg: Any = None
    reservation: Reservation | None = None
    acceptable_states: PartState | int = field(default=DEFAULT_ACCEPTABLE_STATES)
    backend: Backend | str | None = None

    def validated(self) -> Config:
        """A checked copy (what a set keeps)."""
        if self.granularity is None:
            raise error_for(
                ErrorCode.GRANULARITY_NOT_SET, "a set needs a required store granularity"
            )
        if isinstance(self.granularity, bool) or not isinstance(self.granularity, int):
            # Granularity(1.0) or Granularity(True) would pass
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"invalid granularity {self.granularity!r}"
            )
        try:
            gran = Granularity(self.granularity)
        except ValueError:
            raise error_for(
                ErrorCode.GRANULARITY_NOT_SUPPORTED, f"unknown granularity {self.granularity}"
            ) from None
        states = self.acceptable_states
        if (
            isinstance(states, bool)
            or not isinstance(states, int)
            or not 0 < states <= (PartState.valid_mask())
        ):
            raise error_for(
                ErrorCode.INVALID_PART_STATES, f"invalid acceptable part states {states!r}"
            )
        if self.event_callback is not None and not callable(self.event_callback):
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"event_callback {self.event_callback!r} is not callable"
            )
        if self.reservation is not None:
            if not isinstance(self.reservation, Reservation):
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, f"{self.reservation!r} is not a pmemsim.Reservation"
                )
            if self.reservation.closed:
                raise InvalidArgumentError(ErrorCode.EINVAL, f"{self.reservation!r} is closed")
        backend = resolve_backend(self.backend)
        if self.reservation is not None and self.reservation.backend is not backend:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, "the reservation belongs to another backend than the set"
            )
        return Config(
            gran,
            self.event_callback,
            self.user_arg,
            self.reservation,
            PartState(states),
            backend,
        )
