"""Scratch folders: pmemsim's own folders in /dev/shm or the temporary folder, reclaimed by a
later run when the run that made one died without removing it.

A run removes its folders on the way out, but a run that is SIGKILLed (the OOM killer, a
lost machine, ``kill -9``) cannot; an image folder of a big pool on /dev/shm then holds
memory until the next reboot. So every folder is marked as in use for as long as its maker
lives: it holds a lock file (:data:`LOCK`) on which the run keeps an exclusive ``flock``,
which the kernel drops when the last descriptor of it closes, however the process ended.
Liveness is the lock, not a pid: it is right across PID namespaces sharing a folder (one
kernel, one lock) and whatever pids were reused since.

The first folder a run makes in a root (``/dev/shm``, ``$TMPDIR``, ...) comes after a look
at the root's ``pmemsim-*`` folders: one whose lock file this run can lock is dead, and is
removed (at most :data:`MOST` a run). Never a folder without the lock file (a user's, or an
older pmemsim's), another user's, a symbolic link, or anything but the root's own entries;
a folder that vanishes meanwhile (another run reclaiming it) or cannot be removed is left.

Forked children (exploration and check-log workers) share the lock's open file: a folder
stays in use until its maker *and* the workers forked after it are gone, which is right, as
they use it. A program exec'd in it does not hold the lock (the descriptor closes on exec).

A run stopped by Ctrl-C or SIGTERM removes its folders itself, wherever the signal lands:
:func:`make` and :meth:`Scratch.remove` hold the two signals off while they work (a folder
is never half made or half removed by one), a folder made when the signal comes is removed
before its exception leaves :func:`make`, and every folder not removed yet is listed in the
process, for :func:`remove_left` to remove on the way out (a signal between ``make`` and
the ``try`` meant to remove its folder, or in a ``finally`` before the removal): the CLI
and pmemsim's workers call it, and the first ``make`` of a process registers it with
:mod:`atexit` for the processes of API users, which never do (a forked child that exits
normally runs it too, and removes only its own folders). A worker killed outright is its
parent's to clean up after: :func:`sweep`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["LOCK", "MOST", "Scratch", "make", "reclaim", "remove_left", "sweep"]

#: The lock file in every scratch folder, held (flock, exclusive) while its run lives.
LOCK = ".pmemsim-lock"
#: Folders one run removes at most: the cost of a start-up after many runs were killed.
MOST = 8
_PREFIX = "pmemsim-"
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: (Not blocking: a FIFO put there must not hang the run.)
_OPEN_LOCK = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Roots this process looked at already (forked children inherit it: one look a run).
_looked: set[str] = set()
#: The signals that stop a run by raising (KeyboardInterrupt, the CLI's Terminated, a
#: worker's stop) and so can cut short what makes or removes a folder.
_STOPPING = frozenset({signal.SIGINT, signal.SIGTERM})
#: The folders made here and not removed yet (a forked child inherits its maker's, which it
#: never removes): what :func:`remove_left` removes.
_left: set[Scratch] = set()
#: :func:`remove_left` is registered with atexit (by the first make; a forked child inherits
#: the registration, where it leaves its maker's folders alone: :meth:`Scratch.remove`).
_at_exit = False


class Scratch:
    """A scratch folder this process made: :attr:`path`, removed by :meth:`remove` (or on
    leaving a ``with`` block)."""

    __slots__ = ("_lock", "_maker", "path")

    def __init__(self, path: str, lock: int) -> None:
        self.path = path
        self._lock: int | None = lock  # (None: removed; -1: a file system without flock)
        self._maker = os.getpid()

    def remove(self, ignore_errors: bool = False) -> None:
        """Remove the folder and what it holds (symbolic links are removed, not followed);
        the lock file last, so a run killed meanwhile leaves a folder a later run takes.
        In a forked child, nothing: the folder is its maker's. OSError as the system gave
        it, unless ``ignore_errors`` (then a later run removes what is left)."""
        if self._lock is None or os.getpid() != self._maker:
            return
        with _held_off():  # (Ctrl-C or SIGTERM raises once it is all gone)
            try:
                fd = os.open(self.path, _OPEN_DIR)
                try:
                    _empty(fd)
                finally:
                    os.close(fd)
                _absent(os.rmdir, self.path)
            except OSError:
                self._forget()
                if not ignore_errors:
                    raise
            else:
                self._forget()
        # (Cut short otherwise, by a signal's exception that another thread let through: it
        # stays listed, for remove_left to finish.)

    def _forget(self) -> None:
        if self._lock is not None and self._lock >= 0:
            os.close(self._lock)
        self._lock = None
        _left.discard(self)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Scratch({self.path!r})"


def make(kind: str, root: str | None = None) -> Scratch:
    """A new folder ``pmemsim-KIND-RANDOM`` of this user's only (mode 0700) in ``root``
    (None: the system's temporary folder), marked as in use until this process and its
    forked children are gone; the root's dead folders are reclaimed first (once a run).
    OSError when the folder cannot be made."""
    global _at_exit
    if not _at_exit:
        # Before the first folder: an API user's process never calls remove_left, and a
        # folder a signal kept from its removal stayed until a later run reclaimed it.
        _at_exit = True
        atexit.register(remove_left)
    if root is None:
        import tempfile  # (only here: check-log's images go to /dev/shm)

        root = tempfile.gettempdir()
    old = _hold_off()
    try:
        made = _make(kind, root)
        _left.add(made)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    try:
        # A signal that came meanwhile is handled here: its exception (the run being
        # stopped) must not leave the folder behind, as the caller never gets it.
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    except BaseException:
        made.remove(ignore_errors=True)
        raise
    return made


def _make(kind: str, root: str) -> Scratch:
    reclaim(root)
    while True:
        path = os.path.join(root, f"{_PREFIX}{kind}-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            break
        except FileExistsError:
            continue
    # Locked under another name, then renamed: a lock file found by its name is held from
    # the start (a reclaiming run never sees a newborn folder's lock as free).
    fresh = os.path.join(path, LOCK + ".new")
    lock = -1
    try:
        lock = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no flock here (an NFS without lockd): removed on the way out only
            os.close(lock)
            lock = -1
            os.unlink(fresh)
        else:
            os.rename(fresh, os.path.join(path, LOCK))
    except BaseException:
        if lock >= 0:
            os.close(lock)
        with contextlib.suppress(OSError):
            os.unlink(fresh)
        with contextlib.suppress(OSError):  # (a lock file there: a later run removes it)
            os.rmdir(path)
        raise
    return Scratch(path, lock)


def reclaim(root: str, most: int = MOST) -> int:
    """Remove the dead scratch folders in ``root`` (``most`` at most); the first call for
    a root in a run only (later ones return 0). How many were removed; never an error."""
    if root in _looked:
        return 0
    _looked.add(root)
    return _reclaim(root, most)


def remove_left() -> None:
    """Remove every folder this process made and has not removed: the last cleanup of a
    process stopped by a signal, which may have come where no ``finally`` removed one.
    Never an error (what cannot be removed is a later run's to reclaim)."""
    for made in list(_left):
        made.remove(ignore_errors=True)


def sweep() -> int:
    """Reclaim again, in every root this process looked at, the dead folders: after a
    forked worker (whose folders go to the same roots) was killed outright, its last
    folder is dead and nobody else removes it. How many were removed; never an error."""
    return sum(_reclaim(root, MOST) for root in sorted(_looked))


def _hold_off() -> set[int | signal.Signals]:
    """Block Ctrl-C and SIGTERM in this thread; the signal mask as it was."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)


@contextlib.contextmanager
def _held_off() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the body is done (their handlers run right after)."""
    old = _hold_off()
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _reclaim(root: str, most: int) -> int:
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    removed = 0
    try:
        with os.scandir(top) as entries:
            names = [
                e.name
                for e in entries
                if e.name.startswith(_PREFIX) and e.is_dir(follow_symlinks=False)
            ]
        tried = 0
        for name in names:
            if tried == most:
                break
            try:  # (a quick look first: most folders are alive, or not scratch folders)
                os.stat(f"{name}/{LOCK}", dir_fd=top, follow_symlinks=False)
            except OSError:
                continue
            got = _take(top, name)
            if got is not None:
                tried += 1
                removed += got
    except OSError:
        pass
    finally:
        os.close(top)
    return removed


def _take(top: int, name: str) -> bool | None:
    """Remove the folder ``name`` in ``top`` if it is a dead scratch folder of this user's:
    True when it was removed, False when it was dead but not all of it could be removed,
    None when it is not to be touched (live, foreign, gone, not a folder)."""
    uid = os.geteuid()
    try:
        folder = os.open(name, _OPEN_DIR, dir_fd=top)  # (a symbolic link: ELOOP)
    except OSError:
        return None
    try:
        if os.fstat(folder).st_uid != uid:
            return None
        try:
            lock = os.open(LOCK, _OPEN_LOCK, dir_fd=folder)
        except OSError:  # no lock file: not a scratch folder (or one being made)
            return None
        try:
            held = os.fstat(lock)
            if not stat.S_ISREG(held.st_mode) or held.st_uid != uid:
                return None
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its run (or another run reclaiming it) holds it
                return None
            # Still the folder's lock file, and the folder still in the root under this
            # name: another run may have removed both since they were opened.
            try:
                now = os.stat(LOCK, dir_fd=folder, follow_symlinks=False)
                there = os.stat(name, dir_fd=top, follow_symlinks=False)
            except OSError:
                return None
            if _key(now) != _key(held) or _key(there) != _key(os.fstat(folder)):
                return None
            try:
                _empty(folder)
                _absent(os.rmdir, name, top)
            except OSError:  # (what is left keeps its lock file: a later run tries again)
                return False
            return True
        finally:
            os.close(lock)
    finally:
        os.close(folder)


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _empty(fd: int) -> None:
    """Empty the scratch folder open as ``fd``, its lock file last: a run killed meanwhile
    leaves a folder a later run still knows for pmemsim's and takes."""
    _clear(fd, keep=LOCK)
    _absent(os.unlink, LOCK, fd)


def _clear(fd: int, keep: str | None = None) -> None:
    """Remove what the folder open as ``fd`` holds (but ``keep``), by names relative to it:
    no path is looked up again, so no symbolic link on the way is followed. A subfolder a
    checker made read-only is made writable first (it is ours: we made its parent)."""
    if os.fstat(fd).st_mode & 0o700 != 0o700:
        os.fchmod(fd, 0o700)
    with os.scandir(fd) as entries:
        found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in found:
        if name == keep:
            continue
        if not is_dir:
            _absent(os.unlink, name, fd)
            continue
        try:
            sub = os.open(name, _OPEN_DIR, dir_fd=fd)
        except FileNotFoundError:
            continue
        try:
            _clear(sub)
        finally:
            os.close(sub)
        _absent(os.rmdir, name, fd)


def _absent(remove: Callable[..., None], name: str, fd: int | None = None) -> None:
    """``remove(name, dir_fd=fd)``; a name already gone is no error (another run removing
    the same dead folder)."""
    with contextlib.suppress(FileNotFoundError):
        remove(name, dir_fd=fd)
