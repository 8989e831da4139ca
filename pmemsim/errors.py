"""One exception hierarchy for every backend.

Each exception carries the ``PMEMSET_E_*`` code it stands for (``err.code``, an
:class:`ErrorCode`) and, when libpmem2 (real or simulated) caused it, that code and message
too (``err.pmem2_code``, ``err.pmem2_message``). The class says what kind of failure it is,
so callers can catch broadly (``except pmemsim.MapError``) or test the exact code.

Both backends raise these classes with the same codes for the same misuse; the differential
tests hold them to it.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .events import BadBlock

__all__ = [
    "BackendUnavailableError",
    "CallbackError",
    "ErrorCode",
    "InvalidArgumentError",
    "LookupFailure",
    "MapError",
    "MediaError",
    "NotSupportedError",
    "PartStateError",
    "PmemError",
    "Pmem2Code",
    "PoisonError",
    "RangeError",
    "SourceError",
    "StateError",
    "error_for",
]


class ErrorCode(enum.IntEnum):
    """PMEMSET_E_* codes (values from libpmemset), plus ``EINVAL`` for plain bad arguments."""

    EINVAL = -22
    ENOMEM = -12
    UNKNOWN = -200000
    NOSUPP = -200001
    INVALID_PMEM2_SOURCE = -200002
    INVALID_SOURCE_PATH = -200003
    INVALID_SOURCE_TYPE = -200004
    CANNOT_ALLOCATE_INTERNAL_STRUCTURE = -200005
    INVALID_OFFSET_VALUE = -200006
    GRANULARITY_NOT_SUPPORTED = -200007
    INVALID_PMEM2_MAP = -200008
    PART_EXISTS = -200009
    GRANULARITY_NOT_SET = -200010
    GRANULARITY_MISMATCH = -200011
    NO_PART_MAPPED = -200012
    CANNOT_FIND_PART_MAP = -200013
    CANNOT_COALESCE_PARTS = -200014
    LENGTH_UNALIGNED = -200015
    PART_NOT_FOUND = -200016
    INVALID_COALESCING_VALUE = -200017
    DEEP_FLUSH_FAIL = -200018
    INVALID_SOURCE_FILE_CREATE_FLAGS = -200019
    CANNOT_CREATE_TEMP_FILE = -200020
    CANNOT_GROW_SOURCE_FILE = -200021
    PART_MAP_POSSIBLE_USE_AFTER_DROP = -200022
    CANNOT_FIT_PART_MAP = -200023
    OFFSET_OUT_OF_RANGE = -200024
    INVALID_PART_STATES = -200025
    UNDESIRABLE_PART_STATE = -200026
    SDS_ALREADY_SET = -200027
    SDS_NOSUPP = -200028
    SDS_DEVICE_ID_LEN_TOO_BIG = -200029
    MAP_LENGTH_UNSET = -200030
    SOURCE_FILE_IS_TOO_SMALL = -200031
    IO_FAIL = -200032
    LENGTH_OUT_OF_RANGE = -200033
    INVALID_ALIGNMENT_VALUE = -200035
    DAX_REGION_NOT_FOUND = -200036
    CANNOT_READ_BOUNDS = -200037
    BADBLOCK_NOSUPP = -200038
    #: Not a libpmemset code: the event callback returned this non-zero value (see
    #: :class:`CallbackError`, whose ``code`` is the value itself).
    CALLBACK = -299999

    @property
    def c_name(self) -> str:
        """The C spelling, e.g. ``PMEMSET_E_GRANULARITY_MISMATCH``."""
        if self.name in {"EINVAL", "ENOMEM"}:
            return self.name
        return f"PMEMSET_E_{self.name}"


class Pmem2Code(enum.IntEnum):
    """The libpmem2 codes (PMEM2_E_*) that the backends report as a cause."""

    UNKNOWN = -100000
    NOSUPP = -100001
    FILE_HANDLE_NOT_SET = -100003
    INVALID_FILE_HANDLE = -100004
    INVALID_FILE_TYPE = -100005
    MAP_RANGE = -100006
    MAPPING_EXISTS = -100007
    GRANULARITY_NOT_SET = -100008
    GRANULARITY_NOT_SUPPORTED = -100009
    OFFSET_OUT_OF_RANGE = -100010
    OFFSET_UNALIGNED = -100011
    INVALID_ALIGNMENT_FORMAT = -100012
    INVALID_ALIGNMENT_VALUE = -100013
    INVALID_SIZE_FORMAT = -100014
    LENGTH_UNALIGNED = -100015
    MAPPING_NOT_FOUND = -100016
    BUFFER_TOO_SMALL = -100017
    SOURCE_EMPTY = -100018
    INVALID_SHARING_VALUE = -100019
    SRC_DEVDAX_PRIVATE = -100020
    INVALID_ADDRESS_REQUEST_TYPE = -100021
    ADDRESS_UNALIGNED = -100022
    ADDRESS_NULL = -100023
    DEEP_FLUSH_RANGE = -100024
    INVALID_REGION_FORMAT = -100025
    DAX_REGION_NOT_FOUND = -100026
    INVALID_DEV_FORMAT = -100027
    CANNOT_READ_BOUNDS = -100028
    NO_BAD_BLOCK_FOUND = -100029
    LENGTH_OUT_OF_RANGE = -100030
    INVALID_PROT_FLAG = -100031
    NO_ACCESS = -100032
    VM_RESERVATION_NOT_EMPTY = -100033
    MAP_EXISTS = -100034
    FILE_DESCRIPTOR_NOT_SET = -100035
    SOURCE_TYPE_NOT_SUPPORTED = -100036
    IO_FAIL = -100037


class PmemError(Exception):
    """Base of every error pmemsim raises on purpose."""

    #: Codes this class is raised for; :func:`error_for` picks the class by code.
    codes: ClassVar[frozenset[ErrorCode]] = frozenset({ErrorCode.UNKNOWN})

    def __init__(
        self,
        code: ErrorCode | int,
        message: str,
        *,
        pmem2_code: int | None = None,
        pmem2_message: str | None = None,
    ) -> None:
        self.code: int = code
        self.message = message
        self.pmem2_code = pmem2_code
        self.pmem2_message = pmem2_message
        super().__init__(self._render())

    @property
    def code_name(self) -> str:
        try:
            return ErrorCode(self.code).c_name
        except ValueError:
            return str(self.code)

    def _render(self) -> str:
        text = f"{self.code_name} ({self.code}): {self.message}"
        if self.pmem2_code is not None:
            try:
                cause = f"PMEM2_E_{Pmem2Code(self.pmem2_code).name}"
            except ValueError:
                cause = "libpmem2 error"
            text += f" [caused by {cause} ({self.pmem2_code})"
            if self.pmem2_message:
                text += f": {self.pmem2_message}"
            text += "]"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps errors picklable across worker processes with their codes intact.
        return (
            _rebuild,
            (type(self), self.code, self.message, self.pmem2_code, self.pmem2_message),
        )


def _rebuild(
    cls: type[PmemError], code: int, message: str, p2: int | None, p2m: str | None
) -> PmemError:
    return cls(code, message, pmem2_code=p2, pmem2_message=p2m)


class InvalidArgumentError(PmemError, ValueError):
    """An argument is malformed or out of its legal range; nothing was changed."""

    codes = frozenset(
        {
            ErrorCode.EINVAL,
            ErrorCode.INVALID_OFFSET_VALUE,
            ErrorCode.LENGTH_UNALIGNED,
            ErrorCode.INVALID_COALESCING_VALUE,
            ErrorCode.INVALID_SOURCE_FILE_CREATE_FLAGS,
            ErrorCode.INVALID_PART_STATES,
            ErrorCode.GRANULARITY_NOT_SET,
            ErrorCode.INVALID_ALIGNMENT_VALUE,
            ErrorCode.SDS_DEVICE_ID_LEN_TOO_BIG,
            ErrorCode.INVALID_SOURCE_TYPE,
        }
    )


class RangeError(InvalidArgumentError, IndexError):
    """An offset or length runs outside the object it indexes."""

    codes = frozenset({ErrorCode.OFFSET_OUT_OF_RANGE, ErrorCode.LENGTH_OUT_OF_RANGE})


class SourceError(PmemError):
    """A source cannot be opened, created, grown or read as asked."""

    codes = frozenset(
        {
            ErrorCode.INVALID_PMEM2_SOURCE,
            ErrorCode.INVALID_SOURCE_PATH,
            ErrorCode.CANNOT_CREATE_TEMP_FILE,
            ErrorCode.CANNOT_GROW_SOURCE_FILE,
            ErrorCode.SOURCE_FILE_IS_TOO_SMALL,
            ErrorCode.MAP_LENGTH_UNSET,
            ErrorCode.SDS_ALREADY_SET,
        }
    )


class MapError(PmemError):
    """A part could not be mapped or placed."""

    codes = frozenset(
        {
            ErrorCode.INVALID_PMEM2_MAP,
            ErrorCode.GRANULARITY_NOT_SUPPORTED,
            ErrorCode.GRANULARITY_MISMATCH,
            ErrorCode.CANNOT_COALESCE_PARTS,
            ErrorCode.CANNOT_FIT_PART_MAP,
            ErrorCode.PART_EXISTS,
            ErrorCode.ENOMEM,
            ErrorCode.CANNOT_ALLOCATE_INTERNAL_STRUCTURE,
        }
    )


class LookupFailure(PmemError, LookupError):
    """An address, part or part map that was asked for is not there."""

    codes = frozenset(
        {
            ErrorCode.NO_PART_MAPPED,
            ErrorCode.CANNOT_FIND_PART_MAP,
            ErrorCode.PART_NOT_FOUND,
        }
    )


class StateError(PmemError):
    """The object is in a state that forbids the call (e.g. a part map still in use)."""

    codes = frozenset({ErrorCode.PART_MAP_POSSIBLE_USE_AFTER_DROP})


class PartStateError(PmemError):
    """Shutdown data state says the part must not be used."""

    codes = frozenset({ErrorCode.UNDESIRABLE_PART_STATE})


class MediaError(PmemError):
    """The media failed: poisoned data, or data that cannot be made durable."""

    codes = frozenset({ErrorCode.IO_FAIL, ErrorCode.DEEP_FLUSH_FAIL})


class PoisonError(MediaError):
    """A load touched a bad block: the machine check (SIGBUS, BUS_MCEERR_AR) of real hardware.

    ``code`` is IO_FAIL. ``address`` is the first poisoned byte the load touched (None when
    only the source offset is known, e.g. from libpmem2's ``pread_mcsafe``), ``offset`` that
    byte's offset in the source (None when unknown), ``source`` the source's label and
    ``badblock`` the :class:`~pmemsim.BadBlock` hit (None when unknown).
    """

    codes = frozenset({ErrorCode.IO_FAIL})

    def __init__(
        self,
        code: ErrorCode | int = ErrorCode.IO_FAIL,
        message: str = "",
        *,
        address: int | None = None,
        offset: int | None = None,
        source: str = "",
        badblock: BadBlock | None = None,
        pmem2_code: int | None = None,
        pmem2_message: str | None = None,
    ) -> None:
        self.address = address
        self.offset = offset
        self.source = source
        self.badblock = badblock
        if not message:
            where = [f"0x{address:x}"] if address is not None else []
            if offset is not None:
                where.append(f"+0x{offset:x} in {source or 'the source'}")
            message = "poisoned read (media error)" + (f" at {', '.join(where)}" if where else "")
            if badblock is not None:
                message += f": bad block at +0x{badblock.offset:x}, {badblock.length} bytes"
        super().__init__(code, message, pmem2_code=pmem2_code, pmem2_message=pmem2_message)

    def at(self, address: int | None) -> PoisonError:
        """The same error with the faulting ``address`` filled in (a new object)."""
        return PoisonError(
            self.code,
            address=address,
            offset=self.offset,
            source=self.source,
            badblock=self.badblock,
            pmem2_code=self.pmem2_code,
            pmem2_message=self.pmem2_message,
        )

    def __reduce__(self) -> tuple[object, ...]:
        fields = (self.address, self.offset, self.source, self.badblock)
        return (
            _rebuild_poison,
            (self.code, self.message, fields, self.pmem2_code, self.pmem2_message),
        )


def _rebuild_poison(
    code: int,
    message: str,
    fields: tuple[int | None, int | None, str, BadBlock | None],
    p2: int | None,
    p2m: str | None,
) -> PoisonError:
    address, offset, source, bb = fields
    return PoisonError(
        code,
        message,
        address=address,
        offset=offset,
        source=source,
        badblock=bb,
        pmem2_code=p2,
        pmem2_message=p2m,
    )


class NotSupportedError(PmemError):
    """The platform or backend cannot do this."""

    codes = frozenset(
        {
            ErrorCode.NOSUPP,
            ErrorCode.SDS_NOSUPP,
            ErrorCode.BADBLOCK_NOSUPP,
            ErrorCode.DAX_REGION_NOT_FOUND,
            ErrorCode.CANNOT_READ_BOUNDS,
        }
    )


class CallbackError(PmemError):
    """The event callback returned non-zero where its return value is honoured.

    ``code`` is the value the callback returned (libpmemset fails the call with it).
    """

    codes = frozenset({ErrorCode.CALLBACK})


class BackendUnavailableError(NotSupportedError):
    """A backend was asked for but cannot run here; the message says what to install."""


_BY_CODE: dict[int, type[PmemError]] = {
    code: cls
    for cls in (
        InvalidArgumentError,
        RangeError,
        SourceError,
        MapError,
        LookupFailure,
        StateError,
        PartStateError,
        MediaError,
        NotSupportedError,
        CallbackError,
    )
    for code in cls.codes
}


def error_for(
    code: ErrorCode,
    message: str,
    *,
    pmem2_code: int | None = None,
    pmem2_message: str | None = None,
) -> PmemError:
    """The exception (of the right class) for ``code``; raise it at the call site."""
    cls = _BY_CODE.get(code, PmemError)
    return cls(code, message, pmem2_code=pmem2_code, pmem2_message=pmem2_message)


#: What user code (a recovery, a checker function) may fail with, as its verdict: any
#: Exception, and SystemExit, as a checker ported from a program's main() calls sys.exit().
#: (Uncaught, that ended pmemsim on the spot with the checker's status and no report.)
USER_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit)
