"""Bad-block detection at map time.

With ``source.badblock_detection`` on, a map first lists the source's bad blocks and fires
BADBLOCK for each; the callback may clear them (``source.clear_badblock``: the content is
lost). The source is then scanned again: blocks left fail the map with IO_FAIL; if all are
gone, BADBLOCKS_CLEARED fires and a non-zero return from the config callback fails the map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backend import Pmem2Failure
from .errors import CallbackError, ErrorCode, error_for
from .events import BadBlockEvent, BadBlocksClearedEvent, Dispatcher, Kind

if TYPE_CHECKING:
    from .backend import BackendSource
    from .source import Source

__all__ = ["scan_badblocks"]


def scan_badblocks(source: Source, bsrc: BackendSource, events: Dispatcher) -> None:
    """Step 2 of a map: report bad blocks, let the callback clear them, scan again."""
    try:
        found = bsrc.badblocks()
    except Pmem2Failure as exc:
        raise exc.as_error(
            ErrorCode.BADBLOCK_NOSUPP, f"bad-block detection is not supported for {source!r}"
        ) from None
    if not found:
        return
    if events.listening & Kind.BADBLOCK:
        for bb in found:
            events.fire(BadBlockEvent(bb, source))
    remaining = bsrc.badblocks()
    if remaining:
        raise error_for(
            ErrorCode.IO_FAIL,
            f"{len(remaining)} bad block(s) remain in {source!r}, first {remaining[0]}",
        )
    ret = 0
    if events.listening & Kind.BADBLOCKS_CLEARED:
        ret = events.fire(BadBlocksClearedEvent(source))
    if ret:
        raise CallbackError(ret, f"the BADBLOCKS_CLEARED callback returned {ret}")
