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
import os
import time
from collections.abc import Iterator, Sequence

from .._dataclass import dataclass, field
from ..scratch import Scratch, make, reclaim
from .imagefile import IN_IGNORED, IN_Q_OVERFLOW, Inotify, Refill, copy_base
from .images import PAGE, Deviations, Pool, PoolImage

__all__ = ["ImageFiles", "image_folder", "new_folder", "probe", "scratch_folder", "write_image"]


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
        self._notify: Inotify | None = None
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
                self._notify = Inotify()
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
            if mask & IN_Q_OVERFLOW:
                for s in self._slots:
                    s.touched = s.touched or s.busy
                continue
            if mask & IN_IGNORED:
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
        copy_base(source, fd, min(size, source_size))
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
    on the way out (or by a later run if this one is killed: :mod:`pmemsim.scratch`)."""
    folder = new_folder(scratch_folder(sum(sizes) * copies))
    try:
        probe(folder.path, max(sizes, default=0))
        yield folder.path
    finally:
        folder.remove()


def probe(folder: str, size: int) -> None:
    """Whether ``folder``'s file system takes a (sparse) file of ``size`` bytes, tried: a
    pool bigger than its largest file (a log may register terabytes) is then a clear error
    here, not a traceback from a checker's worker halfway through."""
    path = os.path.join(folder, "size-probe")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as exc:
        raise _cannot(
            f"cannot make a {size}-byte image file in {os.path.dirname(folder)}: "
            f"{exc.strerror} (image files are sparse: point TMPDIR at a file system that "
            "takes files that large)"
        ) from None


def new_folder(where: str | None) -> Scratch:
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
