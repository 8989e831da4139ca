"""Crash checks for programs that work on files: every file of a directory crashes at once.

:class:`FileCrashCheck` is :class:`~pmemsim.explore.CrashCheck` for a program that opens its
own files (a pool and its metadata, a log next to a heap) instead of one anonymous pool.
``workload(backend, directory)`` runs once on a fresh simulator in a fresh temporary
directory. At each crash point every file of the directory is part of the image:

* a file the simulator holds (a source is open on it) is that medium's crash image, so the
  lines in flight in all files vary together, exactly as in one pool;
* a file it does not hold (never mapped, or closed before the crash point) is what the disk
  held then: the simulator wrote its durable content back when the last source closed.

For recovery each file is materialised (:meth:`SimBackend.materialise`) into a fresh
directory at the same relative path, on the device it lived on with the unsafe-shutdown
count the restarted machine reads, and ``recover(backend, directory)`` runs on a fresh
simulator. Images are deduplicated by the content of all files together.

Faults work as for CrashCheck. ``unsafe_shutdown`` raises the devices' counts, so shutdown
data state sees the crash. ``badblock`` injects a 512-byte bad block into each sector that
recovery reads of each file, on the recovery simulator: the recovery is the program's own,
so its own handling (bad-block detection and clearing at map time, ``read_mcsafe``) is what
is checked; a load of the block raises :class:`pmemsim.PoisonError`.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import blake2b
from ..enums import Granularity
from ..errors import USER_FAILURES, ErrorCode, InvalidArgumentError
from ..events import BadBlock
from ..markers import CrashInfo, reset_crash, set_crash
from ..scratch import make
from ..snapshot import Snapshot
from .checks import BaseCheck
from .images import SECTOR, Deviations
from .lazy import Observation, ObservedInfo, Outcome, Verdict
from .report import HANG_ERRORS, CrashConsistencyError
from .runtimer import RunTimer
from .trace import Trace, record_run
from .watch import watching

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState, Finding, SimBackend

__all__ = ["FileCrashCheck"]

FileWorkload = Callable[["SimBackend", Path], object]
FileRecovery = Callable[["SimBackend", Path], object]
#: Called with (file number or None, offset, length) for every read recovery makes.
_Tap = Callable[[int | None, int, int], None]


@dataclass(frozen=True)
class FileCrashCheck(BaseCheck):
    """A program over files, the recovery check for its crash images, the expected verdict.

    ``workload(backend, directory)`` runs once on a fresh simulated platform of
    ``granularity`` in a fresh empty directory; ``recover(backend, directory)`` runs on a
    fresh simulator and a fresh directory holding every file of one crash image (it may call
    :func:`pmemsim.current_crash`); returning False or raising means inconsistent. The other
    fields mean what they mean for :class:`~pmemsim.explore.CrashCheck`.
    """

    workload: FileWorkload
    recover: FileRecovery


# -- where each file is at a crash point -------------------------------------------------


@dataclass(frozen=True)
class _File:
    """One file of the directory at a crash point."""

    #: Relative to the directory.
    path: str
    #: Its number in tokens and reports: the crash state's medium index when the simulator
    #: holds it, else one past the media, in path order.
    number: int
    #: Whether ``number`` is a medium of the crash state (else ``data`` is the content).
    held: bool
    data: bytes = b""
    device: bytes | None = None
    usc: int | None = None
    badblocks: tuple[BadBlock, ...] = ()


@dataclass(frozen=True)
class _Layout:
    """The directory at a crash point: its files, by number, and its subdirectories."""

    files: tuple[_File, ...]
    dirs: tuple[str, ...]


def _layout(sim: SimBackend, state: CrashState, root: Path) -> _Layout:
    held = {m.key: i for i, m in enumerate(state.media) if m.key is not None}
    files: list[_File] = []
    dirs: list[str] = []
    loose: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirs += [os.path.relpath(os.path.join(dirpath, d), root) for d in dirnames]
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, root)
            i = held.get((st.st_dev, st.st_ino))
            if i is not None:
                files.append(_File(rel, i, True))
            else:
                loose.append((rel, full))
    n = len(state.media)
    for k, (rel, full) in enumerate(sorted(loose)):
        dev = sim.device_of(full)
        usc = dev.usc + 1 if state.unsafe_shutdown else dev.usc
        data = Path(full).read_bytes()
        files.append(_File(rel, n + k, False, data, dev.id, usc, tuple(sim.badblocks(full))))
    return _Layout(tuple(sorted(files, key=lambda f: f.number)), tuple(sorted(dirs)))


def _recording_sim(granularity: Granularity, root: Path) -> tuple[SimBackend, dict[int, _Layout]]:
    """A fresh simulator that notes, with every crash state it takes, where each file of
    ``root`` is (the states are kept by the trace, so their ids stay theirs)."""
    from pmemsim_backends.sim import CrashMode, SimBackend

    layouts: dict[int, _Layout] = {}

    # mypy sees the installed backends as Any (pyproject.toml): the subclass is fine.
    class RecordingSim(SimBackend):  # type: ignore[misc]
        def crash_state(self, mode: CrashMode | str = CrashMode.POWER_FAILURE) -> CrashState:
            state = super().crash_state(mode)
            layouts[id(state)] = _layout(self, state, root)
            return state

    return RecordingSim(granularity), layouts


# -- images of a directory ---------------------------------------------------------------


@dataclass(frozen=True)
class _Files:
    """Every file of one crash image, and the bad blocks a fault adds: (file, sector)."""

    state: CrashState
    deviations: Deviations
    layout: _Layout
    badblocks: tuple[tuple[int, int], ...] = ()

    @property
    def files(self) -> tuple[_File, ...]:
        return self.layout.files

    def size(self, f: _File) -> int:
        return self.state.snapshots[f.number].size if f.held else len(f.data)


_PAGE = 4096


def _hash(data: bytes | bytearray) -> bytes:
    return blake2b(data, digest_size=16).digest()


class _ContentKeys:
    """Digests of a file's content, page by page, equal exactly when the bytes are: whether a
    page sits in a snapshot, comes from the file through the snapshot's loader, or was read
    from the disk. (A key by the pages a snapshot happens to hold would tell apart images
    that are the same, and could take a page from another loader for the same.) Frozen pages
    (a crash state's own, a loader's) are hashed once."""

    def __init__(self) -> None:
        self._frozen: dict[int, tuple[object, bytes]] = {}
        self._loaded: dict[tuple[int, int], tuple[object, bytes]] = {}

    def snapshot(self, snap: Snapshot, base: Mapping[int, bytes | bytearray]) -> bytes:
        h = blake2b(snap.size.to_bytes(8, "little"), digest_size=16)
        loader = snap.loader
        for p in range(-(-snap.size // _PAGE)):
            page = snap.pages.get(p)
            if page is None and loader is None:
                h.update(_ZERO_PAGE)
            elif page is None:
                hit = self._loaded.get((id(loader), p))
                if hit is None or hit[0] is not loader:  # an id is reused once its owner is gone
                    hit = self._loaded[(id(loader), p)] = (loader, _hash(snap.page(p)))
                h.update(hit[1])
            elif base.get(p) is page:
                hit = self._frozen.get(id(page))
                if hit is None or hit[0] is not page:
                    hit = self._frozen[id(page)] = (page, _hash(page))
                h.update(hit[1])
            else:
                h.update(_hash(page))
        return h.digest()

    def data(self, data: bytes) -> bytes:
        h = blake2b(len(data).to_bytes(8, "little"), digest_size=16)
        for off in range(0, len(data), _PAGE):
            h.update(_hash(data[off : off + _PAGE].ljust(_PAGE, b"\0")))
        return h.digest()


_ZERO_PAGE = _hash(bytes(_PAGE))


class _FilesJudge:
    """FileCrashCheck's judge (see judges.Judge): recovery runs on a directory."""

    def __init__(self, c: FileCrashCheck, layouts: dict[int, _Layout]) -> None:
        self.c = c
        self.layouts = layouts
        self.keys = _ContentKeys()
        self.timer: RunTimer | None = None
        self.steps: int | None = None
        self._contexts: dict[int, bytes] = {}

    def image(self, state: CrashState, deviations: Deviations) -> _Files:
        return _Files(state, deviations, self.layouts[id(state)])

    def key(self, image: _Files, state: CrashState, deviations: Deviations) -> bytes:
        h = blake2b(digest_size=16)
        crash = state.image(image.deviations)
        h.update("\0".join(image.layout.dirs).encode() + b"\1")
        for f in image.files:
            h.update(f.path.encode() + b"\0")
            if f.held:
                snap = crash.snapshot(state.media[f.number])
                h.update(self.keys.snapshot(snap, state.snapshots[f.number].pages))
                h.update(repr((snap.device_id, snap.usc, snap.badblocks)).encode())
            else:
                h.update(self.keys.data(f.data))
                h.update(repr((f.device, f.usc, f.badblocks)).encode())
        return h.digest()

    def badblocks(self, image: _Files) -> list[tuple[str, _Files]]:
        read: set[tuple[int, int]] = set()

        def tap(number: int | None, off: int, n: int) -> None:
            if number is not None:
                read.update((number, s) for s in range(off - off % SECTOR, off + n, SECTOR))

        self._run(image, CrashInfo(-1, "probe", ()), tap, None)
        sizes = {f.number: image.size(f) for f in image.files}
        return [
            (f"badblock.{n}.{s:x}", self.with_badblock(image, f"badblock.{n}.{s:x}"))
            for n, s in sorted(read)
            if s < sizes.get(n, 0)
        ]

    def with_badblock(self, image: _Files, fault: str) -> _Files:
        parts = fault.split(".")
        try:
            number, sector = int(parts[1]), int(parts[2], 16)
        except (IndexError, ValueError):
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"malformed fault {fault!r}: badblock.FILE.SECTOR for files"
            ) from None
        if len(parts) != 3 or number not in {f.number for f in image.files}:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{fault!r}: no such file in the crash")
        return dataclasses.replace(image, badblocks=(*image.badblocks, (number, sector)))

    def verdict(self, image: _Files, info: CrashInfo) -> BaseException | None:
        obs = None
        if self.steps is not None:
            obs = Observation((), lambda m: None, steps=self.steps)
        return self._run(image, info, None, obs)

    def observed(self, state: CrashState, deviations: Deviations, info: CrashInfo) -> Outcome:
        sizes = [m.unit for m in state.media]
        held = len(state.media)
        numbers: dict[object, int] = {}

        def medium_of(medium: Any) -> int | None:
            n = numbers.get(medium.key)
            return n if n is not None and n < held else None

        obs = Observation(sizes, medium_of, steps=self.steps)
        opened: list[str] = []
        err = self._run(self.image(state, deviations), info, None, obs, numbers, opened)
        return Outcome(Verdict.of(err), obs.events, obs.values, err, bool(opened))

    def context(self, state: CrashState, faults: tuple[str, ...]) -> object:
        """Lazy runs are shared only between states whose directory looks the same apart
        from the lines in flight: the same files (and their sizes, devices and counts), the
        same content of files the simulator does not hold, the same folders. Recovery may
        list the directory or read those files without pmemsim seeing it."""
        layout = self.layouts[id(state)]
        digest = self._contexts.get(id(layout))
        if digest is None:
            h = blake2b(digest_size=16)
            h.update("\0".join(layout.dirs).encode() + b"\1")
            for f in layout.files:
                h.update(f"{f.path}\0{f.number}\0{f.held}\0".encode())
                if f.held:
                    snap = state.snapshots[f.number]
                    h.update(repr((snap.size, snap.device_id, snap.usc, snap.badblocks)).encode())
                else:
                    h.update(self.keys.data(f.data))
                    h.update(repr((f.device, f.usc, f.badblocks)).encode())
            digest = self._contexts[id(layout)] = h.digest()
        return (faults, digest)

    def probe(self, state: CrashState) -> set[int]:
        read: set[tuple[int, int]] = set()

        def tap(number: int | None, off: int, n: int) -> None:
            if number is None or number >= len(state.media):
                return
            size = state.media[number].unit
            read.update((number, i * size) for i in range(off // size, (off + n - 1) // size + 1))

        self._run(self.image(state, ()), CrashInfo(-1, "probe", ()), tap, None)
        return {i for i, u in enumerate(state.units) if (u.medium_index, u.offset) in read}

    def sources(self, state: CrashState) -> tuple[str, ...]:
        names = [m.label for m in state.media]
        for f in self.layouts[id(state)].files:
            if f.held:
                names[f.number] = f.path
            else:
                names.append(f.path)
        return tuple(names)

    # -- recovery on a directory -----------------------------------------------------------

    def _materialise(self, image: _Files, sim: SimBackend, root: Path) -> dict[object, int]:
        """Write every file of the image under ``root`` on ``sim``'s devices; returns the
        file numbers by the simulator's key of each file."""
        crash = image.state.image(image.deviations)
        numbers: dict[object, int] = {}
        paths: dict[int, Path] = {}
        for d in image.layout.dirs:
            (root / d).mkdir(parents=True, exist_ok=True)
        for f in image.files:
            path = root / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            if f.held:
                sim.materialise(crash, path, image.state.media[f.number])
                snap = image.state.snapshots[f.number]
                device, usc, blocks = snap.device_id, snap.usc, snap.badblocks
            else:
                path.write_bytes(f.data)
                device, usc, blocks = f.device, f.usc, f.badblocks
            if device is not None:
                # The same device (id and count) the file was on: SDS compares both.
                dev = sim.assign_device(path, device)
                dev.usc = max(dev.usc, usc or 0)
            for bb in blocks:
                sim.inject_badblock(path, bb.offset, bb.length)
            st = path.stat()
            numbers[(st.st_dev, st.st_ino)] = f.number
            paths[f.number] = path
        for number, sector in image.badblocks:
            sim.inject_badblock(paths[number], sector, SECTOR)
        return numbers

    def _run(
        self,
        image: _Files,
        info: CrashInfo,
        tap: _Tap | None,
        observation: Observation | None,
        numbers: dict[object, int] | None = None,
        opened: list[str] | None = None,
    ) -> BaseException | None:
        """Recovery on the image's directory. ``numbers`` (if given) is filled with the file
        numbers by the simulator's key of each file, before recovery starts; ``opened``
        (if given) with the files the simulator holds that recovery opened itself."""
        from pmemsim_backends.sim import SimBackend

        sim = SimBackend(self.c.granularity, lint=False)
        if observation is not None:
            info = ObservedInfo(info, observation)
        timer = self.timer
        # (make and remove hold Ctrl-C and SIGTERM off themselves: a run stopped meanwhile
        # leaves no folder; scratch.remove_left takes one a signal kept from the finally.)
        scratch = make("recovery")
        try:
            root = Path(scratch.path, "work")  # (its lock file out of recovery's sight)
            token = set_crash(info)
        except BaseException:
            scratch.remove(ignore_errors=True)
            raise
        try:
            root.mkdir()
            found = self._materialise(image, sim, root)
            if numbers is not None:
                numbers.update(found)
            if tap is not None:
                sim.set_read_tap(lambda medium, off, n: tap(found.get(medium.key), off, n))
            elif observation is not None:
                sim.set_read_tap(observation.on_read)
                sim.set_tap(observation.on_op)
                sim.machine.tap_depth = 0  # stores are observed by place, not by stack
            held = {os.path.realpath(root / f.path) for f in image.files if f.held}
            watch: AbstractContextManager[list[str]] = (
                watching(held) if opened is not None else nullcontext([])
            )
            try:
                with timer.running() if timer is not None else nullcontext(), watch as seen:
                    try:
                        ok = self.c.recover(sim, root)
                    finally:
                        if opened is not None:
                            opened.extend(seen)
            except USER_FAILURES as exc:  # the user's recovery failed: that is the verdict
                return exc
            except HANG_ERRORS as exc:
                if timer is not None:
                    timer.disarm()
                return exc
        finally:
            reset_crash(token)
            scratch.remove(ignore_errors=True)
        if ok is False:
            return CrashConsistencyError("recovery returned False")
        return None


def _named_in(root: Path, findings: list[Finding]) -> list[Finding]:
    """The findings with each file named as in the workload's folder: its path there is a
    new temporary one every run, and two runs' reports would differ by it."""
    prefix = f"{root}{os.sep}"
    return [
        dataclasses.replace(f, source=f.source.removeprefix(prefix))
        if f.source.startswith(prefix)
        else f
        for f in findings
    ]


@contextmanager
def recorded_files(c: FileCrashCheck, unsafe_shutdown: bool) -> Iterator[tuple[Trace, _FilesJudge]]:
    """Run the workload once in a temporary directory (removed afterwards) and record it."""
    scratch = make("files")
    try:
        root = Path(scratch.path, "work")  # (its lock file out of the workload's sight)
        root.mkdir()
        sim, layouts = _recording_sim(c.granularity, root)

        def run(sim: SimBackend, end: Callable[[], None]) -> None:
            c.workload(sim, root)

        trace = record_run(run, sim, crash_points=c.crash_points, unsafe_shutdown=unsafe_shutdown)
        trace.findings[:] = _named_in(root, trace.findings)
        yield trace, _FilesJudge(c, layouts)
    finally:
        scratch.remove(ignore_errors=True)
