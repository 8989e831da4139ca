"""Simulated devices: what shutdown data state and bad-block detection read.

A device has an id and an unsafe-shutdown count (USC). Every file a simulator opens lives on
its default device unless assigned to another, so several sources can share a device.
Bad blocks belong to a file or an image source (offsets and lengths in bytes, as libpmem2
reports them). Anonymous memory has neither, as with libpmem2: asking is "not supported".
An image source carries the device reading and bad blocks of the source it was taken from.
"""

from __future__ import annotations

from dataclasses import dataclass

from pmemsim.events import BadBlock

__all__ = ["InjectedBadBlocks", "SimDevice"]


@dataclass
class SimDevice:
    """A simulated persistent-memory device."""

    id: bytes
    #: Unsafe-shutdown count; raise it to simulate a power failure the ADR did not survive.
    usc: int = 0


@dataclass(frozen=True)
class InjectedBadBlocks:
    """What one seeded random injection made: replay it with the same seed."""

    seed: int
    blocks: tuple[BadBlock, ...]
