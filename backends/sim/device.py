"""Simulated devices: what shutdown data state and bad-block detection read.

A device has an id and an unsafe-shutdown count (USC). Every file a simulator opens lives on
its default device unless assigned to another, so several sources can share a device.
Bad blocks belong to a file (offsets and lengths in bytes, as libpmem2 reports them).
Anonymous memory has neither, as with libpmem2: asking is "not supported".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimDevice"]


@dataclass
class SimDevice:
    """A simulated persistent-memory device."""

    id: bytes
    #: Unsafe-shutdown count; raise it to simulate a power failure the ADR did not survive.
    usc: int = 0
