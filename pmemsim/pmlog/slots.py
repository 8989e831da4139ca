"""Image files for checkers that read files: kept in step with a :class:`PoolImage`.

A checker program or library gets each image as files (one per registered file). Writing the
whole pool per image would cost the pool; instead each *slot* (one per checker that may run at
once) keeps its files, and before each image only the pages that may differ from what the
files hold are written: the pages the image buffers rewrote since the slot's last image
(:meth:`PoolImage.pages_since`), and the pages the last and the new image patch. A 64 MiB pool
then costs per image what its crash point changed.

A checker may write to its image (libpmemobj's open does), and the next image would then be
wrong. Linux's inotify says whether anyone opened a slot's file for writing (or wrote to it,
truncated, renamed or removed it) while the checker had it; such a slot's files are rebuilt
for its next image: their initial content put back in place (a copy of the base image's
data), or new files where a checker replaced, resized or locked out the old. A slot whose
files are not watched is rebuilt after every checker run: where inotify is not available,
and at the start of every check. Closing an inotify instance that watched files waits for
the kernel's grace period (8 to 20 ms here), more than a short check's rebuilds cost; so the
files are watched only once the rebuilds have cost that much.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from .._dataclass import dataclass, field
from ..scratch import Scratch, make, reclaim
from .images import PAGE, Deviations, Pool, PoolImage

__all__ = ["ImageFiles", "image_folder", "scratch_folder", "write_image"]

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_WATCH = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_DELETE_SELF | _IN_MOVE_SELF
#: struct inotify_event: int wd; uint32_t mask, cookie, len; then a name of len bytes.
_EVENT = 16


class _Inotify:
    """Just enough of inotify(7), through libc."""

    def __init__(self) -> None:
        import ctypes  # here: an in-process checker writes no image files

        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd: int = fd
        # Asked once per image: a poll answers "nothing" without a failed read's exception.
        self._ready = select.poll()
        self._ready.register(fd, select.POLLIN)

    def watch(self, path: str) -> int:
        wd = self._add(self.fd, os.fsencode(path), _WATCH)
        if wd < 0:
            import ctypes

            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        return int(wd)

    def events(self) -> list[tuple[int, int]]:
        """``(watch, mask)`` of every event queued so far."""
        out: list[tuple[int, int]] = []
        if not self._ready.poll(0):
            return out
        while True:
            try:
                data = os.read(self.fd, 65536)
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
        os.close(self.fd)


@dataclass
class _Slot:
    paths: list[str]
    fds: list[int] = field(default_factory=list)
    #: The move of the image buffers the files follow (-1: rebuild them).
    synced: int = -1
    #: Pages the last image written here patched.
    patched: set[tuple[int, int]] = field(default_factory=set)
    busy: bool = False
    #: Someone wrote to a file (or could have) while a checker had it.
    touched: bool = False
    #: Its files are watched (inotify): else they are rebuilt after each checker run.
    watched: bool = False


class ImageFiles:
    """``slots`` sets of image files, one file per pool, in ``directory``."""

    def __init__(
        self,
        img: PoolImage,
        pools: Sequence[Pool],
        names: Sequence[str],
        slots: int,
        directory: str,
    ) -> None:
        self.img = img
        self.pools = list(pools)
        self._slots: list[_Slot] = []
        self._watches: dict[int, int] = {}  # watch -> slot
        self.rebuilds = 0
        self._notify: _Inotify | None = None
        #: Seconds spent rebuilding so far; None once watching started, or was given up.
        self._unwatched_cost: float | None = 0.0
        self._refills: list[Refill] = []
        for k in range(slots):  # folders made at first use: small logs use few slots
            folder = os.path.join(directory, f"slot-{k}")
            self._slots.append(_Slot([os.path.join(folder, n) for n in names]))

    def paths(self, slot: int) -> list[str]:
        return self._slots[slot].paths

    def close(self) -> None:
        for s in self._slots:
            for fd in s.fds:
                os.close(fd)
            s.fds = []
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        for refill in self._refills:
            refill.close()
        self._refills = []

    # -- writing images ----------------------------------------------------------------

    def write(self, slot: int, deviations: Deviations) -> None:
        """Make the slot's files hold the image: the buffers' state with ``deviations``."""
        s = self._slots[slot]
        img = self.img
        pages = None if s.synced < 0 or s.touched else img.pages_since(s.synced)
        mine = img.pages_of(deviations)
        img.patch(deviations)
        try:
            if pages is None:
                self._rebuild(s, mine)
            else:
                for pool, p in sorted(pages | s.patched | mine):
                    _write_page(img, pool, s.fds[pool], p)
        finally:
            img.restore(deviations)
        s.synced = img.moves
        s.patched = mine
        s.touched = False

    def _rebuild(self, s: _Slot, mine: set[tuple[int, int]]) -> None:
        """Write the slot's files again: the initial content (in place while a file is
        the one made, :class:`Refill`), then every page the state holds (and the image
        patches)."""
        self.rebuilds += 1
        started = time.perf_counter()
        if self._unwatched_cost is not None and self._unwatched_cost > _WATCH_AFTER:
            self._unwatched_cost = None
            try:
                self._notify = _Inotify()
            except (OSError, AttributeError):
                self._notify = None  # every image rebuilt: correct, slower
        kept, s.fds = s.fds, []
        s.watched = self._notify is not None
        os.makedirs(os.path.dirname(s.paths[0]), 0o700, exist_ok=True)
        for pool, (path, spec) in enumerate(zip(s.paths, self.pools, strict=True)):
            if kept and self._refill(pool)(path, kept[pool]):
                s.fds.append(kept[pool])
                _write_held(self.img, pool, kept[pool], mine)
            else:
                if kept:
                    os.close(kept[pool])
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                s.fds.append(fd)
                _fill(self.img, pool, fd, spec, mine)
            if s.watched and self._notify is not None:
                try:
                    self._watches[self._notify.watch(path)] = self._slots.index(s)
                except OSError:  # out of watches: no telling what a checker does
                    self._notify.close()
                    self._notify = None
                    for other in self._slots:
                        other.watched = False
        if self._unwatched_cost is not None:
            self._unwatched_cost += time.perf_counter() - started

    def _refill(self, pool: int) -> Refill:
        if not self._refills:
            self._refills = [Refill(spec) for spec in self.pools]
        return self._refills[pool]

    # -- lending slots to checkers -----------------------------------------------------

    def lend(self, *slots: int) -> None:
        """The slots go to a checker now (call after :meth:`write`)."""
        self._drain()
        for k in slots:
            self._slots[k].busy = True

    def returned(self, *slots: int) -> None:
        """The checker that had the slots is done."""
        self._drain()
        for k in slots:
            s = self._slots[k]
            s.busy = False
            if not s.watched:
                s.touched = True

    def _drain(self) -> None:
        """Events so far: those of a lent slot are its checker's (ours happen while the slot
        is not lent, and are dropped)."""
        if self._notify is None:
            return
        for wd, mask in self._notify.events():
            if mask & _IN_Q_OVERFLOW:
                for s in self._slots:
                    s.touched = s.touched or s.busy
                continue
            if mask & _IN_IGNORED:
                self._watches.pop(wd, None)
                continue
            k = self._watches.get(wd)
            if k is not None and self._slots[k].busy:
                self._slots[k].touched = True


#: Seconds of rebuilding image files after which their slots' files are watched instead
#: (about what closing a watching inotify instance costs).
_WATCH_AFTER = 0.01


def scratch_folder(need: int) -> str | None:
    """Where image files go: ``$TMPDIR`` when it is set, else /dev/shm (memory: creating and
    removing hundreds of small files there costs microseconds, on a disk milliseconds) when
    the files' pages (``need`` bytes at most) fit easily, else the system's default. Killed
    runs' folders in /dev/shm are reclaimed before its room is counted."""
    if os.environ.get("TMPDIR"):
        return None
    shm = "/dev/shm"
    reclaim(shm)
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if not os.access(shm, os.W_OK | os.X_OK) or need > st.f_bavail * st.f_frsize // 8:
        return None
    return shm


def _write_page(img: PoolImage, pool: int, fd: int, p: int) -> None:
    buf = img.buffer(pool)
    start = p * PAGE
    os.pwrite(fd, buf[start : min(start + PAGE, len(buf))], start)


def _fill(img: PoolImage, pool: int, fd: int, spec: Pool, patched: set[tuple[int, int]]) -> None:
    """Make the empty file ``fd`` hold pool ``pool`` of the image (with the deviations that
    patched ``patched`` applied): its size, sparse; its initial content; then only the
    pages the state holds or the deviations patch (a terabyte pool costs its changes)."""
    size, source, source_size = spec
    os.ftruncate(fd, size)
    if source is not None and source_size:
        _copy(source, fd, min(size, source_size))
    _write_held(img, pool, fd, patched)


def _write_held(img: PoolImage, pool: int, fd: int, patched: set[tuple[int, int]]) -> None:
    """Over the initial content in ``fd``: the pages the state holds or the deviations patch."""
    state = img.state
    held = [] if state is None or pool >= len(state.media) else state.changed_pages(None, pool)
    for p in sorted({*held, *(p for q, p in patched if q == pool)}):
        _write_page(img, pool, fd, p)


def write_image(
    img: PoolImage, deviations: Deviations, pools: Sequence[Pool], paths: Sequence[str]
) -> None:
    """The image (the buffers' state with ``deviations``) as files at ``paths``, one per
    pool, replacing what they held; sparse, like the checkers' image files."""
    from ..reportfile import replacing

    mine = img.pages_of(deviations)
    img.patch(deviations)
    try:
        for pool, (path, spec) in enumerate(zip(paths, pools, strict=True)):
            # Whole or not at all; and a file the image is made from (its pool's base
            # content) is read to the end before it is replaced.
            with replacing(path) as fd:
                _fill(img, pool, fd, spec, mine)
    finally:
        img.restore(deviations)


@contextlib.contextmanager
def image_folder(sizes: Sequence[int], copies: int = 1) -> Iterator[str]:
    """A new folder for ``copies`` sets of image files of ``sizes`` bytes (sparse), removed
    on the way out (or by a later run if this one is killed: :mod:`pmemsim.scratch`).
    Whether the folder's file system takes a file of the largest size is tried first: a
    pool bigger than its largest file (a log may register terabytes) is then a clear error
    here, not a traceback from a checker's worker halfway through."""
    folder = _new_folder(scratch_folder(sum(sizes) * copies))
    try:
        probe = os.path.join(folder.path, "size-probe")
        try:
            fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, max(sizes, default=0))
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise _cannot(
                f"cannot make a {max(sizes, default=0)}-byte image file in "
                f"{os.path.dirname(folder.path)}: "
                f"{exc.strerror} (image files are sparse: point TMPDIR at a file system that "
                "takes files that large)"
            ) from None
        yield folder.path
    finally:
        folder.remove()


def _new_folder(where: str | None) -> Scratch:
    """A new folder of this user's only, in ``where`` (None: the system's temporary
    folder). Not tempfile's: importing it (and shutil, and the compressors shutil imports)
    would cost a short check more than its checker's work."""
    if where is None:
        import tempfile

        where = tempfile.gettempdir()
    try:
        return make("check-log", where)
    except OSError as exc:
        text = f"cannot make a folder for image files in {where}: {exc.strerror}"
        raise _cannot(text) from None


def _cannot(text: str) -> Exception:
    from ..errors import ErrorCode, error_for

    return error_for(ErrorCode.CANNOT_CREATE_TEMP_FILE, text)


def _copy(source: str, fd: int, n: int) -> None:
    """The first ``n`` bytes of ``source`` into ``fd``, an empty file of at least that size:
    only the source's data (its holes already read as zeros there), in the kernel where it
    can. A sparse pool of gigabytes so costs its data, not its size, in time and on disk."""
    with open(source, "rb") as f:
        src = f.fileno()
        for start, end in _extents(src, n):
            done = start
            while done < end:
                try:
                    got = os.copy_file_range(src, fd, end - done, done, done)
                except OSError:
                    got = 0
                if got <= 0:
                    data = os.pread(src, min(1 << 20, end - done), done)
                    if not data:
                        return
                    got = os.pwrite(fd, data, done)
                done += got


def _extents(fd: int, n: int, at: int = 0) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of each run of data in bytes ``at`` to ``n`` of ``fd``; the whole of
    them where the file system cannot tell data from holes."""
    while at < n:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here on
                return
            yield at, n  # no SEEK_DATA here: copy it all
            return
        if start >= n:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), n)
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
                self._data = list(_extents(f.fileno(), n))
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
            st = os.fstat(fd)
            named = os.stat(path)
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
                start += os.pwrite(fd, source[start:end], start)
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
    for first, last in _extents(fd, end, start):
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
