"""libpmem2 return codes turned into exceptions, in one place.

Calls whose failures the set layer converts (map, reserve, deep flush, bad blocks, device
id and USC) raise :class:`Pmem2Failure` with libpmem2's code and message; the layer picks
the PMEMSET code for its context, as it does for the simulator. Calls the layer does not
wrap (opening a source, unmapping) raise the :class:`pmemsim.PmemError` that
:data:`DIRECT` names, still carrying libpmem2's code and message.

libpmem2 keeps one message per thread and does not clear it: a call that fails without
setting one (device id and USC on a regular file) would show the message of an earlier,
unrelated failure. Such calls pass ``message_set=False`` and get a message of our own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pmemsim.backend import Pmem2Failure
from pmemsim.errors import ErrorCode, NotSupportedError, Pmem2Code, PmemError

if TYPE_CHECKING:
    from ._ffi import Binding

__all__ = ["DIRECT", "check", "direct_error", "failure", "missing", "not_supported"]

#: The layer's code for a libpmem2 failure in a call the layer does not wrap.
DIRECT: dict[int, ErrorCode] = {
    Pmem2Code.NOSUPP: ErrorCode.NOSUPP,
    Pmem2Code.SOURCE_TYPE_NOT_SUPPORTED: ErrorCode.NOSUPP,
    Pmem2Code.FILE_HANDLE_NOT_SET: ErrorCode.INVALID_PMEM2_SOURCE,
    Pmem2Code.FILE_DESCRIPTOR_NOT_SET: ErrorCode.INVALID_PMEM2_SOURCE,
    Pmem2Code.INVALID_FILE_HANDLE: ErrorCode.INVALID_PMEM2_SOURCE,
    Pmem2Code.INVALID_FILE_TYPE: ErrorCode.INVALID_SOURCE_TYPE,
    Pmem2Code.SOURCE_EMPTY: ErrorCode.SOURCE_FILE_IS_TOO_SMALL,
    Pmem2Code.MAP_RANGE: ErrorCode.SOURCE_FILE_IS_TOO_SMALL,
    Pmem2Code.LENGTH_OUT_OF_RANGE: ErrorCode.LENGTH_OUT_OF_RANGE,
    Pmem2Code.OFFSET_OUT_OF_RANGE: ErrorCode.OFFSET_OUT_OF_RANGE,
    Pmem2Code.MAPPING_NOT_FOUND: ErrorCode.INVALID_PMEM2_MAP,
    Pmem2Code.IO_FAIL: ErrorCode.IO_FAIL,
    -12: ErrorCode.ENOMEM,  # -ENOMEM: libpmem2 passes system errors on as negative errno
}


def _describe(code: int) -> str:
    try:
        return f"PMEM2_E_{Pmem2Code(code).name}"
    except ValueError:
        if -4096 < code < 0:
            return os.strerror(-code)
        return f"libpmem2 error {code}"


def failure(b: Binding, ret: int, what: str, *, message_set: bool = True) -> Pmem2Failure:
    """The Pmem2Failure for a failed call: libpmem2's code and (fresh) message."""
    message = b.errormsg() if message_set else ""
    if not message:
        message = f"{what}: {_describe(ret)} (libpmem2 gave no message)"
    return Pmem2Failure(ret, message)


def check(b: Binding, ret: int, what: str, *, message_set: bool = True) -> None:
    """Raise the Pmem2Failure for ``ret`` unless it is 0."""
    if ret:
        raise failure(b, ret, what, message_set=message_set)


def direct_error(exc: Pmem2Failure, what: str) -> PmemError:
    """The PmemError for a failure in a call the set layer does not wrap."""
    return exc.as_error(DIRECT.get(exc.code, ErrorCode.UNKNOWN), what)


def not_supported(feature: str, symbol: str, path: str) -> NotSupportedError:
    """This libpmem2 lacks ``symbol``, so ``feature`` is off."""
    return NotSupportedError(
        ErrorCode.NOSUPP,
        f"{feature} is not available: {path} does not export {symbol}",
        pmem2_code=int(Pmem2Code.NOSUPP),
        pmem2_message=f"{symbol} is not exported",
    )


def missing(feature: str, symbol: str, path: str) -> Pmem2Failure:
    """The same as :func:`not_supported`, for calls the set layer wraps (it then reports its
    own NOSUPP code for the context: SDS_NOSUPP, BADBLOCK_NOSUPP)."""
    return Pmem2Failure(
        Pmem2Code.NOSUPP, f"{feature} is not available: {path} does not export {symbol}"
    )
