"""A frozen copy of a source's content, e.g. one crash image, that a fresh set can map."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ._dataclass import dataclass

if TYPE_CHECKING:  # only named in annotations: readers of images need no event types
    from .events import BadBlock

__all__ = ["Snapshot"]

_PAGE_SHIFT = 12
_PAGE = 1 << _PAGE_SHIFT


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Content as 4 KiB pages; pages not listed come from ``loader`` (or read as zeros).

    The pages are shared copy-on-write with whoever made the snapshot: treat them as
    read-only. Map one with ``Set.map(Part(Source.from_image(snapshot)))``.

    A snapshot of a source that lived on a (simulated) device carries what the restarted
    machine reads from that device: its id and unsafe-shutdown count (after an unsafe
    shutdown, one more than before the crash), so that shutdown data state works on the
    image; and the source's bad blocks, which survive a crash. ``read`` returns the stored
    bytes whatever the bad blocks: only loads through a mapping fault.
    """

    label: str
    size: int
    pages: Mapping[int, bytes | bytearray]
    loader: Callable[[int], bytes] | None = None
    source_ident: int = 0
    #: The device holding the source (None: none, e.g. anonymous memory).
    device_id: bytes | None = None
    #: The device's unsafe-shutdown count as the machine reads it after the crash.
    usc: int | None = None
    #: Bad blocks of the source, by offset.
    badblocks: tuple[BadBlock, ...] = ()
    #: Taken by an unsafe shutdown (ADR failed) rather than a clean power failure.
    unsafe_shutdown: bool = False

    def page(self, index: int) -> bytes:
        p = self.pages.get(index)
        if p is not None:
            return bytes(p)
        if self.loader is not None:
            raw = self.loader(index)
            return raw + bytes(_PAGE - len(raw)) if len(raw) < _PAGE else raw
        return bytes(_PAGE)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range +0x{offset:x}, {length} is outside the {self.size}-byte image")
        out = bytearray()
        end = offset + length
        while offset < end:
            p = offset >> _PAGE_SHIFT
            o = offset & (_PAGE - 1)
            take = min(_PAGE - o, end - offset)
            out += self.page(p)[o : o + take]
            offset += take
        return bytes(out)

    def to_bytes(self) -> bytes:
        return self.read(0, self.size)
