"""What a worker gets of a check, and how it makes a session of it again.

A check travels once per worker (Dask fetches the shipped bytes as a dependency of the
first batch a worker runs, then keeps them), never its crash states or images: the worker
records the workload again (recording is deterministic) and builds each image from its
deviations, as this process does. A fingerprint of the trace travels with it, so that a
worker that recorded something else (another pmemsim, a workload that is not deterministic,
another version of the user's module) says so instead of reporting on other crash states.

A check whose name is ``FILE::NAME`` (how ``pmemsim check`` names the checks it finds, and
what ``pmemsim replay`` loads) travels as that reference, the file's digest and its fields:
the worker imports the file by path, as the command line did (check files are imported
under private module names, so their functions may not pickle). Any other check travels by
value with cloudpickle: its functions by reference when their module is importable (the
worker needs that module), by value otherwise (closures, ``__main__``), plus the modules a
caller asks to ship by value (the pytest plugin ships the test's module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, InvalidArgumentError

if TYPE_CHECKING:
    from ..explore.engine import Explorer, Session
    from ..explore.trace import Trace

__all__ = ["Shipped", "WorkerProblem", "fingerprint", "opened", "ship"]

#: Sessions a worker thread keeps open (the newest; a run's batches reuse its session).
KEEP = 2


class WorkerProblem(InvalidArgumentError):
    """A worker could not run the check as this process did (it cannot import it, has
    another pmemsim, or recorded other crash states)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.EINVAL, message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message,))


@dataclass(frozen=True)
class Shipped:
    """A check as it travels: by reference to its file, or by value."""

    version: str
    name: str
    #: The check's file, re-imported by path on the worker (None: ``check`` is the check).
    path: str | None = None
    digest: str = ""
    #: The check's fields but its functions (by path), as this process ran it.
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    check: Any = None


def _digest(path: str) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def _file_of(c: Any) -> str | None:
    """The file a check named ``FILE::NAME`` comes from, when there is such a file."""
    where, sep, name = str(c.name).rpartition("::")
    if not sep or not where or not name or not os.path.isfile(where):
        return None
    return os.path.abspath(where)


def ship(c: Any, by_value: Sequence[ModuleType] = ()) -> bytes:
    """The bytes a worker rebuilds ``c`` from (see the module docstring)."""
    import cloudpickle

    import pmemsim

    path = _file_of(c)
    if path is not None:
        fields = {
            f.name: getattr(c, f.name)
            for f in dataclasses.fields(c)
            if f.name not in ("workload", "recover", "_")
        }
        shipped = Shipped(pmemsim.__version__, c.name, path, _digest(path), fields)
    else:
        shipped = Shipped(pmemsim.__version__, c.name, check=c)
    registered = []
    try:
        for module in by_value:
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
        blob: bytes = cloudpickle.dumps(shipped)
        return blob
    except Exception as exc:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"check {c.name!r} cannot be sent to Dask workers ({type(exc).__name__}: {exc}); "
            "define it in a file and run `pmemsim check FILE --scheduler ...`, or give it "
            "functions that pickle (module-level functions of a module the workers import)",
        ) from None
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


def _rebuilt(shipped: Shipped) -> Any:
    """The check, on a worker."""
    import pmemsim

    if shipped.version != pmemsim.__version__:
        raise WorkerProblem(
            f"check {shipped.name!r}: this worker has pmemsim {pmemsim.__version__}, the "
            f"client {shipped.version}"
        )
    if shipped.path is None:
        return shipped.check
    path = shipped.path
    if not os.path.isfile(path):
        raise WorkerProblem(
            f"check {shipped.name!r}: {path} is not on this worker (checks defined in files "
            "are imported by path: share the folder, at the same path, with every worker)"
        )
    if _digest(path) != shipped.digest:
        raise WorkerProblem(f"check {shipped.name!r}: {path} differs on this worker")
    from ..cli.discover import Broken, discover

    short = shipped.name.rpartition("::")[2]
    for entry in discover(path, None, files=True):
        if isinstance(entry, Broken):
            if entry.name in (short, entry.origin):
                raise WorkerProblem(
                    f"check {shipped.name!r}: {entry.what} on this worker: {entry.error!r}"
                )
        elif entry.check.name == short:
            return dataclasses.replace(entry.check, **shipped.fields)
    raise WorkerProblem(f"check {shipped.name!r}: {path} defines no check {short!r} here")


def fingerprint(trace: Trace) -> str:
    """A digest of what a recording found at each crash point (equal recordings, equal
    fingerprints)."""
    h = hashlib.blake2b(digest_size=16)
    prev = None
    for p in trace.points:
        unsafe = p.unsafe_state.image_count() if p.unsafe_state is not None else -1
        same = prev is not None and prev.state is p.state
        h.update(
            repr(
                (
                    p.index,
                    p.kind,
                    p.markers,
                    p.state.image_count(),
                    len(p.state.units),
                    unsafe,
                    same,
                )
            ).encode()
        )
        prev = p
    return h.hexdigest()


# -- on a worker -----------------------------------------------------------------------------


@dataclass
class _Open:
    stack: ExitStack
    session: Session
    explorer: Explorer


_OPEN: OrderedDict[tuple[str, int], _Open] = OrderedDict()
_LOCK = threading.Lock()
#: Whether this process removes, as it ends, the scratch folders it left (see below).
_CLEANS = False


def cleans_on_exit() -> None:
    """This worker process, as it ends, removes the scratch folders it made and has not
    removed, as pmemsim's own worker processes do: an exception that comes between a
    ``make`` and its ``try`` leaves one listed (a run's time limit, raised in the worker's
    thread from another; past its grace, wherever that thread is), and nothing else here
    removes it before a later run reclaims it. Once a process; called by each run's first
    batch on it.

    By a multiprocessing finalizer: a nanny's worker process runs them as it ends, whatever
    its start method (a forked one ends with ``os._exit``: no atexit there), and a worker
    without a nanny at exit, as multiprocessing's own atexit hook. A worker killed outright
    leaves its folders to a later run (:func:`pmemsim.scratch.reclaim`)."""
    global _CLEANS
    if _CLEANS:
        return
    with _LOCK:
        if _CLEANS:
            return
        _CLEANS = True
    from multiprocessing import util

    from .. import scratch

    util.Finalize(None, scratch.remove_left, exitpriority=0)


def opened(token: str, blob: bytes, expected: str) -> _Open:
    """This thread's session of the run ``token`` (opened from ``blob`` the first time: the
    check rebuilt and its workload recorded)."""
    import cloudpickle

    from ..explore.engine import Explorer, recorded_session

    cleans_on_exit()
    key = (token, threading.get_ident())
    with _LOCK:
        found = _OPEN.get(key)
        if found is not None:
            _OPEN.move_to_end(key)
            return found
    try:
        shipped: Shipped = cloudpickle.loads(blob)
    except Exception as exc:
        raise WorkerProblem(
            f"the check cannot be loaded on this worker ({type(exc).__name__}: {exc}): the "
            "modules it uses must be importable on every worker"
        ) from None
    c = _rebuilt(shipped)
    stack = ExitStack()
    try:
        session = stack.enter_context(recorded_session(c))
        got = fingerprint(session.trace)
        if got != expected:
            raise WorkerProblem(
                f"check {c.name!r} recorded other crash states on this worker "
                f"({len(session.trace.points)} crash points): its workload is not "
                "deterministic, or the worker runs other code than the client"
            )
        found = _Open(stack, session, Explorer(session))
    except BaseException:
        stack.close()
        raise
    with _LOCK:
        _OPEN[key] = found
        mine = [k for k in _OPEN if k[1] == key[1]]
        old = [_OPEN.pop(k) for k in mine[:-KEEP]]
    for o in old:
        o.stack.close()
    return found


def forget(token: str) -> None:
    """Close every session of the run ``token`` on this worker (the run is over)."""
    with _LOCK:
        keys = [k for k in _OPEN if k[0] == token]
        gone = [_OPEN.pop(k) for k in keys]
    for g in gone:
        g.stack.close()
