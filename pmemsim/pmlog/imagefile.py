"""An image file: filled from the base image, watched for a checker's writes, and put back
in place.

A checker (a program, or a library in a worker process) gets each crash image as a file.
Filling it costs the base image's data, not the pool's size (:func:`copy_base`); a
checker that opens it for writing (libpmemobj's open does) is seen through inotify
(:class:`Inotify`), and the file is then made right again over its own pages
(:class:`Refill`).

This module imports nothing of pmemsim's and no more of Python's than it uses: a library
checker's worker is a new interpreter that imports it while pmemsim starts
(:mod:`pmemsim.pmlog.serve`)."""

from __future__ import annotations

import errno
import mmap
import posix  # (os's C half: os itself is 6.4 million instructions of a worker's start)
import select
import sys

from .clib import Library, c_errno

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .images import Pool

__all__ = [
    "IN_IGNORED",
    "IN_Q_OVERFLOW",
    "Inotify",
    "Refill",
    "copy_base",
    "extents",
    "fsencode",
]

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
_WATCH = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_DELETE_SELF | _IN_MOVE_SELF
#: struct inotify_event: int wd; uint32_t mask, cookie, len; then a name of len bytes.
_EVENT = 16


class Inotify:
    """Just enough of inotify(7), through libc."""

    def __init__(self) -> None:
        libc = Library(None, use_errno=True)
        self._add = libc.function("inotify_add_watch")
        fd = libc.function("inotify_init1")(posix.O_NONBLOCK | posix.O_CLOEXEC)
        if fd < 0:
            raise OSError(c_errno(), "inotify_init1")
        self.fd: int = fd
        # Asked once per image: a poll answers "nothing" without a failed read's exception.
        ready = select.poll()
        ready.register(fd, select.POLLIN)
        #: ``poll(0)``: a list, not empty when an event is queued (what :meth:`pending`
        #: says, without a frame of its own, for a caller that asks once per image).
        self.poll: Callable[[int], list[tuple[int, int]]] = ready.poll

    def watch(self, path: str) -> int:
        wd = self._add(self.fd, fsencode(path), _WATCH)
        if wd < 0:
            raise OSError(c_errno(), "inotify_add_watch")
        return int(wd)

    def pending(self) -> bool:
        """Whether an event is queued."""
        return bool(self.poll(0))

    def events(self) -> list[tuple[int, int]]:
        """``(watch, mask)`` of every event queued so far."""
        out: list[tuple[int, int]] = []
        if not self.pending():
            return out
        while True:
            try:
                data = posix.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            order = sys.byteorder
            while pos + _EVENT <= len(data):
                wd = int.from_bytes(data[pos : pos + 4], order, signed=True)
                mask = int.from_bytes(data[pos + 4 : pos + 8], order)
                out.append((wd, mask))
                pos += _EVENT + int.from_bytes(data[pos + 12 : pos + 16], order)

    def close(self) -> None:
        posix.close(self.fd)


def fsencode(path: str) -> bytes:
    """``path`` as the system calls take it (``os.fsencode``, without importing os)."""
    return path.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def copy_base(source: str, fd: int, n: int) -> None:
    """The first ``n`` bytes of ``source`` into ``fd``, an empty file of at least that size:
    only the source's data (its holes already read as zeros there), in the kernel where it
    can. A sparse pool of gigabytes so costs its data, not its size, in time and on disk."""
    with open(source, "rb") as f:
        src = f.fileno()
        for start, end in extents(src, n):
            done = start
            while done < end:
                try:
                    got = posix.copy_file_range(src, fd, end - done, done, done)
                except OSError:
                    got = 0
                if got <= 0:
                    data = posix.pread(src, min(1 << 20, end - done), done)
                    if not data:
                        return
                    got = posix.pwrite(fd, data, done)
                done += got


def extents(fd: int, n: int, at: int = 0) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of each run of data in bytes ``at`` to ``n`` of ``fd``; the whole of
    them where the file system cannot tell data from holes."""
    while at < n:
        try:
            start = posix.lseek(fd, at, posix.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here on
                return
            yield at, n  # no SEEK_DATA here: copy it all
            return
        if start >= n:
            return
        end = min(posix.lseek(fd, start, posix.SEEK_HOLE), n)
        yield start, end
        at = end


class Refill:
    """Puts a pool's initial content back into one of its image files, in place.

    A checker that opens its image for writing (libpmemobj's open does, copy-on-write or
    not) leaves a file that must be made right again, and most often changed nothing. A new
    file costs allocating every page of the base image's data and freeing the old file's
    (an 8 MiB pool: about 10 ms, more than libpmemobj's open of it); putting the data back
    over the file's own pages costs a copy (0.6 ms)."""

    def __init__(self, spec: Pool) -> None:
        self.size, source, source_size = spec
        self._data: list[tuple[int, int]] = []
        self._map: mmap.mmap | None = None
        self._source = memoryview(b"")
        n = min(self.size, source_size)
        if source is not None and n > 0:
            with open(source, "rb") as f:
                self._data = list(extents(f.fileno(), n))
                if self._data:
                    self._map = mmap.mmap(f.fileno(), n, mmap.MAP_PRIVATE, mmap.PROT_READ)
                    self._source = memoryview(self._map)
        #: Where the base image has no data: zeros in the image file.
        self._holes = list(_between(self._data, self.size))

    def __call__(self, path: str, fd: int, buf: mmap.mmap | None = None) -> bool:
        """Make ``fd`` (the image file at ``path``; ``buf``, a shared mapping of it, if
        there is one) hold the initial content again. False when it cannot be done in
        place (make a new file then): ``path`` names another file now, or its size changed,
        or it lost its owner's read and write permission, or holes cannot be punched."""
        try:
            st = posix.fstat(fd)
            named = posix.stat(path)
        except OSError:
            return False
        if (named.st_ino, named.st_dev) != (st.st_ino, st.st_dev) or st.st_size != self.size:
            return False
        if st.st_mode & 0o600 != 0o600:
            return False
        source = self._source
        for start, end in self._data:
            if buf is not None:
                buf[start:end] = source[start:end]
                continue
            while start < end:
                start += posix.pwrite(fd, source[start:end], start)
        return all(_punch(fd, start, end) for start, end in self._holes)

    def close(self) -> None:
        self._source.release()
        if self._map is not None:
            self._map.close()


def _between(runs: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """The ranges of ``[0, size)`` that sorted, disjoint ``runs`` leave out."""
    at = 0
    for start, end in runs:
        if start > at:
            yield at, start
        at = max(at, end)
    if at < size:
        yield at, size


def _punch(fd: int, start: int, end: int) -> bool:
    """Make ``[start, end)`` of ``fd`` a hole again wherever it holds data (a checker wrote
    there, or an earlier image did); False if the file system cannot punch holes."""
    for first, last in extents(fd, end, start):
        if _fallocate()(fd, _PUNCH_HOLE | _KEEP_SIZE, first, last - first) != 0:
            return False
    return True


def _fallocate() -> Callable[[int, int, int, int], int]:
    """libc's fallocate(2), loaded at first use (only a base image with holes needs it)."""
    global _FALLOCATE
    if _FALLOCATE is None:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).fallocate
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fn.restype = ctypes.c_int
        _FALLOCATE = fn
    return _FALLOCATE


_FALLOCATE: Callable[[int, int, int, int], int] | None = None
_KEEP_SIZE = 0x01
_PUNCH_HOLE = 0x02
