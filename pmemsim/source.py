"""Sources: where a set's data lives (a file, a temporary file, anonymous memory, an image).

Opening and creating files is the same on every backend, so it happens here; a backend gets
the open descriptor. A source is closed with :meth:`Source.close` (or a ``with`` block, or
when it is garbage collected): backends then write back what they must (the simulator writes
the persisted media image into a file) and a temporary file disappears.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import stat
import tempfile
import weakref
from typing import TYPE_CHECKING, Literal

from .backend import ADDRESS_LIMIT, Pmem2Failure
from .enums import PartState, SourceFlag
from .errors import ErrorCode, InvalidArgumentError, error_for
from .events import BadBlock, SdsRecord
from .sds import DEVICE_ID_MAX, fresh_record
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .backend import Backend, BackendSource

__all__ = ["Source"]

SourceKind = Literal["file", "temporary", "anonymous", "image"]
_idents = itertools.count(1)


def _close_all(fd: int | None, handles: list[BackendSource]) -> None:
    for h in handles:
        h.close()
    handles.clear()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


#: Sources not closed yet; closed at exit, so that files still get their write-back.
_open_sources: weakref.WeakSet[Source] = weakref.WeakSet()


@atexit.register
def _close_open_sources() -> None:
    for source in list(_open_sources):
        source.close()


class Source:
    """Where data lives. Build one with a ``from_*`` constructor, not directly."""

    def __init__(
        self,
        kind: SourceKind,
        *,
        label: str,
        fd: int | None = None,
        path: str | None = None,
        size: int = 0,
        flags: SourceFlag = SourceFlag.NONE,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.kind: SourceKind = kind
        self.label = label
        #: Unique per process; crash images name the source they came from by it.
        self.ident = next(_idents)
        self.fd = fd
        self.path = path
        self._size = size
        self.flags = flags
        self.snapshot = snapshot
        self._handles: dict[int, BackendSource] = {}
        self._closers: list[BackendSource] = []
        # Not a weakref.finalize: its arguments would hold the backend handles, which refer
        # back to the source, and keep it alive for ever (a temporary file would never go).
        self._closed = False
        _open_sources.add(self)
        self._sds: SdsRecord | None = None
        #: The shutdown data state computed at the last map (None before, or without SDS).
        self.part_state: PartState | None = None
        self._badblock_detection = False

    def __repr__(self) -> str:
        return f"<Source {self.kind} {self.label}>"

    # -- constructors ------------------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        flags: SourceFlag | int = SourceFlag.NONE,
        *,
        mode: int = 0o600,
    ) -> Source:
        """A file, opened read-write. ``flags``: CREATE_ALWAYS, CREATE_IF_NEEDED, DO_NOT_GROW."""
        if (
            isinstance(flags, bool)
            or not isinstance(flags, int)
            or flags & ~SourceFlag.valid_mask()
        ):
            raise InvalidArgumentError(
                ErrorCode.INVALID_SOURCE_FILE_CREATE_FLAGS, f"invalid source flags {flags!r}"
            )
        flags = SourceFlag(flags)
        create = flags & (SourceFlag.CREATE_ALWAYS | SourceFlag.CREATE_IF_NEEDED)
        if create == SourceFlag.CREATE_ALWAYS | SourceFlag.CREATE_IF_NEEDED:
            raise InvalidArgumentError(
                ErrorCode.INVALID_SOURCE_FILE_CREATE_FLAGS,
                "CREATE_ALWAYS and CREATE_IF_NEEDED exclude each other",
            )
        if not isinstance(mode, int) or mode & ~0o777:
            raise InvalidArgumentError(
                ErrorCode.INVALID_SOURCE_FILE_CREATE_FLAGS, f"invalid create mode {mode!r}"
            )
        p = os.fspath(path)
        if not p:
            raise error_for(ErrorCode.INVALID_SOURCE_PATH, "empty path")
        oflags = os.O_RDWR | os.O_CLOEXEC
        if flags & SourceFlag.CREATE_ALWAYS:
            oflags |= os.O_CREAT | os.O_TRUNC
        elif flags & SourceFlag.CREATE_IF_NEEDED:
            oflags |= os.O_CREAT
        try:
            fd = os.open(p, oflags, mode)
        except IsADirectoryError:
            raise error_for(ErrorCode.INVALID_SOURCE_TYPE, f"{p} is a directory") from None
        except OSError as exc:
            raise error_for(
                ErrorCode.INVALID_SOURCE_PATH, f"cannot open {p}: {exc.strerror}"
            ) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise error_for(ErrorCode.INVALID_SOURCE_TYPE, f"{p} is not a regular file")
        return cls("file", label=p, fd=fd, path=p, flags=flags)

    @classmethod
    def temporary(cls, directory: str | os.PathLike[str]) -> Source:
        """An unnamed file in ``directory``; it vanishes when the source is closed."""
        d = os.fspath(directory)
        try:
            os.stat(d)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):  # libpmemset: a path leading nowhere
                raise error_for(
                    ErrorCode.INVALID_SOURCE_PATH, f"no folder {d!r}: {exc.strerror}"
                ) from None
        try:
            fd = os.open(d, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise error_for(
                    ErrorCode.CANNOT_CREATE_TEMP_FILE,
                    f"cannot create a temporary file in {d}: {exc.strerror}",
                ) from exc
            try:  # file systems without O_TMPFILE: create, then unlink at once
                fd, name = tempfile.mkstemp(dir=d, prefix=".pmemsim-")
                os.unlink(name)
            except OSError as exc2:
                raise error_for(
                    ErrorCode.CANNOT_CREATE_TEMP_FILE,
                    f"cannot create a temporary file in {d}: {exc2.strerror}",
                ) from exc2
        return cls("temporary", label=f"temporary file in {d}", fd=fd, path=None)

    @classmethod
    def anonymous(cls, size: int) -> Source:
        """Anonymous memory of ``size`` bytes; every map of it starts zeroed."""
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < ADDRESS_LIMIT:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid anonymous size {size!r}")
        return cls("anonymous", label=f"anonymous({size})", size=size)

    @classmethod
    def from_image(cls, snapshot: Snapshot) -> Source:
        """A source holding a snapshot's content (e.g. a crash image), for recovery code.

        Mapping it never changes the snapshot: writes go to the new mapping only.
        """
        if not isinstance(snapshot, Snapshot):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{snapshot!r} is not a Snapshot")
        return cls(
            "image", label=f"image of {snapshot.label}", size=snapshot.size, snapshot=snapshot
        )

    # -- state -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        """Current size in bytes (a file's size on disk)."""
        if self.fd is not None:
            if self.closed:
                raise error_for(ErrorCode.INVALID_PMEM2_SOURCE, f"{self!r} is closed")
            return os.fstat(self.fd).st_size
        return self._size

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes two sources the same data: the file (device, inode), or this object."""
        if self.fd is not None and not self._closed:
            st = os.fstat(self.fd)
            return ("file", st.st_dev, st.st_ino)
        return ("source", self.ident)

    # -- shutdown data state and bad blocks ----------------------------------------------

    @property
    def sds(self) -> SdsRecord | None:
        """The layer's copy of the SDS record (updated at every map and unmap)."""
        return self._sds

    def set_sds(self, record: SdsRecord | None = None) -> None:
        """Enable shutdown data state with the record saved by the last run (None: a new pool).

        Every map then checks it (see :mod:`pmemsim.sds`) and every change fires SDS_UPDATE
        with the record to save.
        """
        if self._sds is not None:
            raise error_for(ErrorCode.SDS_ALREADY_SET, f"{self!r} already has an SDS record")
        if record is None:
            record = fresh_record()
        if not isinstance(record, SdsRecord):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{record!r} is not an SdsRecord")
        if not isinstance(record.device_id, bytes):
            raise InvalidArgumentError(ErrorCode.EINVAL, "the SDS device id must be bytes")
        if len(record.device_id) > DEVICE_ID_MAX:
            raise error_for(
                ErrorCode.SDS_DEVICE_ID_LEN_TOO_BIG,
                f"device id of {len(record.device_id)} bytes; at most {DEVICE_ID_MAX}",
            )
        for name in ("usc", "refcount"):
            value = getattr(record, name)
            if type(value) is not int or value < 0:
                raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid SDS {name} {value!r}")
        self._sds = record

    @property
    def badblock_detection(self) -> bool:
        """Scan for bad blocks at every map (off by default)."""
        return self._badblock_detection

    @badblock_detection.setter
    def badblock_detection(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{value!r} is not a bool")
        self._badblock_detection = value

    def clear_badblock(self, badblock: BadBlock) -> None:
        """Clear ``badblock`` (typically from a BADBLOCK callback): its content is lost."""
        if not isinstance(badblock, BadBlock):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{badblock!r} is not a BadBlock")
        if not self._handles:
            raise error_for(ErrorCode.BADBLOCK_NOSUPP, f"{self!r} has not been opened yet")
        for h in self._handles.values():
            try:
                h.clear_badblock(badblock)
            except Pmem2Failure as exc:
                raise exc.as_error(ErrorCode.BADBLOCK_NOSUPP, f"cannot clear {badblock}") from None

    def grow(self, size: int) -> None:
        """Grow a file to ``size`` bytes (sparse)."""
        assert self.fd is not None
        if size >= ADDRESS_LIMIT:  # beyond what a file offset (a signed 64-bit off_t) holds
            raise error_for(
                ErrorCode.CANNOT_GROW_SOURCE_FILE,
                f"cannot grow {self.label} to {size} bytes: beyond the largest file offset",
            )
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise error_for(
                ErrorCode.CANNOT_GROW_SOURCE_FILE, f"cannot grow {self.label}: {exc.strerror}"
            ) from exc

    def handle(self, backend: Backend) -> BackendSource:
        """This source as ``backend`` sees it (opened once, closed with the source)."""
        if self.closed:
            raise error_for(ErrorCode.INVALID_PMEM2_SOURCE, f"{self!r} is closed")
        h = self._handles.get(id(backend))
        if h is None:
            h = backend.open_source(self)
            self._handles[id(backend)] = h
            self._closers.append(h)
        return h

    def close(self) -> None:
        """Let go of the source; backends write back (the simulator: persisted media only)."""
        if self._closed:
            return
        self._closed = True
        _open_sources.discard(self)
        self._handles.clear()
        _close_all(self.fd, self._closers)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
