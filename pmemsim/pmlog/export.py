"""Writing a recorded workload as a pmemcheck / pmreorder store log.

The pool is registered as one file at a fixed base address (page-aligned, so cache lines of
addresses are cache lines of the file). Every store is written as pmemcheck writes it: cut
at each 8-byte boundary into parts of at most 8 bytes, each value little-endian; a memcpy or
memset is its stores. The log has no flag for non-temporal stores: pmemcheck logs one as a
store that is flushed at once, and so does this, a STORE per part followed by a FLUSH of its
lines. Replayed, such a store obeys the write-back rules (a line's stores persist in order),
which allow fewer images than the non-temporal ones the simulator applied while recording.
Flushes and deep flushes are written over the whole cache lines they act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ..enums import Granularity
from ..errors import ErrorCode, InvalidArgumentError
from ..explore.trace import MarkerOp, record
from ..provenance import locations

__all__ = ["DEFAULT_BASE", "export_log", "format_log"]

#: Where exported logs map the pool (as pmemcheck might have; any page-aligned value works).
DEFAULT_BASE = 0x10000000

_LINE = 64


def _frame(op: Any) -> str:
    locs = locations(op.provenance)
    if not locs:
        return ""
    loc = locs[0]
    text = f"{loc.function} ({os.path.basename(loc.filename)}:{loc.lineno})"
    # A frame must not hold the log's separators.
    return ";" + text.translate({ord("|"): "/", ord(";"): ",", ord("\n"): " ", ord("\r"): " "})


def _lines(base: int, offset: int, length: int) -> str:
    lo = offset - offset % _LINE
    hi = -(-(offset + length) // _LINE) * _LINE
    return f"0x{base + lo:x};0x{hi - lo:x}"


def format_log(
    ops: Iterable[Any],
    size: int,
    pool: str,
    *,
    base: int = DEFAULT_BASE,
    frames: bool = True,
) -> str:
    """The log of recorded operations (a Trace's ``ops``) on a pool of ``size`` bytes
    registered as the file ``pool`` at address ``base``."""
    if not isinstance(base, int) or base <= 0 or base % 4096:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"base must be page-aligned, not {base!r}")
    if not pool or any(c in pool for c in "|;\n\r"):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"the pool path {pool!r} is empty or holds '|', ';' or a newline"
        )
    out = ["START", f"REGISTER_FILE;{pool};0x{base:x};0x{size:x};0x0"]
    medium = None
    for op in ops:
        if isinstance(op, MarkerOp):
            out.append(f"{op.name}.{'BEGIN' if op.begin else 'END'}")
            continue
        if op.kind == "fence":
            out.append("FENCE")
            continue
        if medium is None:
            medium = op.medium
        elif op.medium is not medium:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, "the workload wrote to more than one source; a log has one"
            )
        if op.kind == "store":
            data, off = op.data, op.offset
            frame = _frame(op) if frames else ""
            pos = 0
            while pos < len(data):
                at = off + pos
                take = min(8 - at % 8, len(data) - pos)
                value = int.from_bytes(data[pos : pos + take], "little")
                out.append(f"STORE;0x{base + at:x};0x{value:x};0x{take:x}{frame}")
                pos += take
            if op.nontemporal:
                out.append(f"FLUSH;{_lines(base, off, len(data))}")
        elif op.kind == "flush":
            out.append(f"FLUSH;{_lines(base, op.offset, op.length)}")
        elif op.kind == "deep_flush":
            out.append(f"DEEP_SYNC;{_lines(base, op.offset, op.length)}")
        else:  # pragma: no cover - the simulator reports no other kind
            raise InvalidArgumentError(ErrorCode.EINVAL, f"cannot log a {op.kind!r} operation")
    out.append("STOP")
    return "|".join(out) + "\n"


def export_log(
    check: Any, pool: str = "pool.bin", *, base: int = DEFAULT_BASE, frames: bool = True
) -> str:
    """Record a CrashCheck's workload once and return it as a store log.

    ``pool`` is the path registered for the pool (made absolute, as pmemcheck writes it).
    Only CACHE_LINE checks can be logged: the log format is x86's.
    """
    if check.granularity != Granularity.CACHE_LINE:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"{check.name}: a store log describes x86 cache lines; this check runs at "
            f"{Granularity(check.granularity).name} granularity",
        )
    trace = record(
        check.workload,
        size=check.size,
        granularity=check.granularity,
        keep_ops=True,
        on_point=lambda point: None,
    )
    return format_log(trace.ops, trace.size, os.path.abspath(pool), base=base, frames=frames)
