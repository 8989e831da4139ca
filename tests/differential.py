"""What the differential suites share: the platform's granularity rules, backends built to
follow them, and comparable forms of events and errors.

The simulator is configured to be the machine libpmem2 runs on here (libpmem2.md): a file on
ext4 or tmpfs gets PAGE granularity, anonymous memory BYTE, and ``PMEM2_FORCE_GRANULARITY``
makes files pretend to have the forced one. The table is written out here, not taken from
either backend, so that it judges both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pmemsim as pm

PAGE = 4096
G = pm.Granularity

BACKENDS = ("sim", "real")


def forced_granularity() -> pm.Granularity | None:
    """The granularity ``PMEM2_FORCE_GRANULARITY`` forces (libpmem2 ignores unknown values)."""
    value = os.environ.get("PMEM2_FORCE_GRANULARITY", "").strip().upper()
    return G[value] if value in G.__members__ else None


def offered(kind: str) -> pm.Granularity:
    """What libpmem2 gives a source of ``kind`` on a machine without persistent memory."""
    if kind == "anonymous":
        return G.BYTE
    forced = forced_granularity()
    return G.PAGE if forced is None else forced  # not ``or``: BYTE is 0


def real_unavailable_reason() -> str | None:
    try:
        import pmemsim_backends.real as real
    except ImportError as exc:  # pragma: no cover - the package is always installed
        return f"pmemsim_backends.real cannot be imported: {exc}"
    reason: str | None = real.unavailable_reason()
    return reason


def make_backend(name: str) -> pm.Backend:
    """A fresh backend: the simulator configured as this machine, or libpmem2."""
    if name == "sim":
        from pmemsim_backends.sim import SimBackend

        return SimBackend(offered("file"), anonymous_granularity=offered("anonymous"))
    return pm.load_backend(name)()


def backend_or_skip(name: str) -> pm.Backend:
    """``make_backend(name)``, or skip the test (with the reason) where libpmem2 is missing."""
    if name == "real":
        reason = real_unavailable_reason()
        if reason:
            pytest.skip(f"real backend unavailable: {reason}")
    return make_backend(name)


def rig_on(backend: pm.Backend, tmp_path: Path) -> Iterator[Rig]:
    """A Rig on ``backend`` with folders on ``tmp_path`` and tmpfs, closed afterwards."""
    for tmpfs in shm_dir():
        r = Rig(backend.name, backend, tmp_path, tmpfs)
        try:
            yield r
        finally:
            r.close()


def fails(exc_type: type[pm.PmemError], code: pm.ErrorCode, pmem2: int | None = None) -> Any:
    """``with fails(MapError, E.X, P2.Y): ...``: the class, the code and libpmem2's code."""
    return _Fails(exc_type, code, pmem2)


class _Fails:
    def __init__(self, exc_type: type[pm.PmemError], code: pm.ErrorCode, pmem2: int | None) -> None:
        self.ctx = pytest.raises(exc_type)
        self.code = code
        self.pmem2 = pmem2

    def __enter__(self) -> None:
        self.info = self.ctx.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        handled = self.ctx.__exit__(*exc)
        err = self.info.value
        assert err.code == self.code, f"{err.code_name}, expected {self.code.c_name}: {err}"
        if self.pmem2 is not None:
            assert err.pmem2_code == self.pmem2, f"libpmem2 code of {err}"
        return bool(handled)


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def shm_dir() -> Iterator[Path]:
    """A fresh folder on tmpfs (``/dev/shm``), removed afterwards."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = Path(tempfile.mkdtemp(prefix="pmemsim-diff-", dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def error_key(exc: BaseException) -> tuple[str, int | None, int | None]:
    """What must match across backends for a failure: class, PMEMSET code, libpmem2 code."""
    if isinstance(exc, pm.PmemError):
        return (type(exc).__name__, exc.code, exc.pmem2_code)
    return (type(exc).__name__, None, None)


Translate = Callable[[int], Any]


def event_key(
    event: Any, where: Translate, source_name: Callable[[pm.Source], str]
) -> tuple[Any, ...]:
    """An event with its addresses translated by ``where`` and its source named: the form
    in which two backends' events can be compared (their address spaces differ)."""
    t = event.type
    if t in (pm.EventType.COPY, pm.EventType.MOVE):
        src = where(event.src) if isinstance(event.src, int) else bytes(event.src)
        return (t.name, src, where(event.dest), event.len, int(event.flags))
    if t == pm.EventType.SET:
        return (t.name, where(event.dest), event.value, event.len, int(event.flags))
    if t == pm.EventType.PART_ADD:
        return (t.name, where(event.addr), event.len, source_name(event.source))
    if t in (pm.EventType.FLUSH, pm.EventType.PART_REMOVE, pm.EventType.REMOVE_RANGE):
        return (t.name, where(event.addr), event.len)
    if t == pm.EventType.DRAIN:
        return (t.name,)
    return (t.name, repr(event))


class Rig:
    """One backend with folders on ext4 and tmpfs, and the sets and sources a test makes.

    Every set records its events (``rig.events``); everything is closed at the end.
    """

    def __init__(self, name: str, backend: pm.Backend, ext4: Path, tmpfs: Path) -> None:
        self.name = name
        self.backend = backend
        self.dirs = {"ext4": ext4, "tmpfs": tmpfs}
        self.events: list[Any] = []
        self._sets: list[pm.Set] = []
        self._sources: list[pm.Source] = []
        self._reservations: list[pm.Reservation] = []

    def _record(self, s: pm.Set, event: Any, arg: Any) -> None:
        self.events.append(event)

    def set(self, granularity: pm.Granularity = G.PAGE, **kw: Any) -> pm.Set:
        s = pm.Set(
            pm.Config(
                granularity=granularity, backend=self.backend, event_callback=self._record, **kw
            )
        )
        self._sets.append(s)
        return s

    def path(self, name: str = "pool", fs: str = "ext4") -> Path:
        return self.dirs[fs] / name

    def file(
        self,
        name: str = "pool",
        fs: str = "ext4",
        flags: pm.SourceFlag = pm.SourceFlag.CREATE_IF_NEEDED,
        *,
        size: int | None = None,
        content: bytes | None = None,
    ) -> pm.Source:
        """A file source; ``size`` or ``content`` (written with plain file I/O) set it up."""
        p = self.path(name, fs)
        if content is not None:
            p.write_bytes(content)
        elif size is not None:
            with open(p, "wb") as f:
                f.truncate(size)
        return self.keep(pm.Source.from_file(p, flags))

    def anon(self, size: int) -> pm.Source:
        return self.keep(pm.Source.anonymous(size))

    def temporary(self, fs: str = "ext4") -> pm.Source:
        return self.keep(pm.Source.temporary(self.dirs[fs]))

    def keep(self, source: pm.Source) -> pm.Source:
        self._sources.append(source)
        return source

    def reservation(self, size: int, **kw: Any) -> pm.Reservation:
        r = pm.Reservation(size, backend=self.backend, **kw)
        self._reservations.append(r)
        return r

    def take_events(self) -> list[Any]:
        out, self.events = self.events, []
        return out

    def kinds(self) -> list[str]:
        """The names of the events recorded so far (and forget them)."""
        return [e.type.name for e in self.take_events()]

    def close(self) -> None:
        for s in self._sets:
            s.close()
        for src in self._sources:
            src.close()
        for r in self._reservations:
            r.close()
