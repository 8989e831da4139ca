"""A scratch folder (or a Dask cluster holding one) is never left behind by an exception that
comes right after the call that made it returned: where a Ctrl-C or SIGTERM lands in the
caller between that call and the ``try`` meant to remove it. The CLI's last cleanup
(``scratch.remove_left``) would hide such a gap; the API has none, so these tests do not
call it. And a Dask worker process removes, as it ends, the folders it made and left (as
pmemsim's own worker processes do), where nothing else would before a later run."""

from __future__ import annotations

import dis
import multiprocessing
import sys
import tempfile
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import pytest

import pmemsim.distributed.executor
import pmemsim.html.explore
from pmemsim import scratch
from pmemsim.explore import FileCrashCheck

pytest_plugins = ["dask_support"]

_NOP = dis.opmap["NOP"]


class InterruptAfter:
    """While in the block, a call of ``owner.name(...)`` is followed by a KeyboardInterrupt
    at the first line Python then runs in its caller, or further out when the caller
    returns first (up to the block's own frame): a signal that comes as the call returns.
    A line that runs only a NOP (a ``try:``) is passed over: no signal is handled there.
    :attr:`landed` says where it was raised ("function:line")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.monkeypatch, self.owner, self.name = monkeypatch, owner, name
        self.landed: list[str] = []
        self._traced: list[FrameType] = []
        self._armed = False
        self._real: Any = None

    def __enter__(self) -> InterruptAfter:
        outer = sys._getframe(1)
        real = getattr(self.owner, self.name)

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event != "line" or not self._armed:
                return local
            if frame.f_code.co_code[frame.f_lasti] == _NOP:
                return local
            self._armed = False
            sys.settrace(None)
            self.landed.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            raise KeyboardInterrupt

        def called(*args: Any, **kwargs: Any) -> Any:
            got = real(*args, **kwargs)
            if not self.landed and not self._armed:
                frame: FrameType | None = sys._getframe(1)
                while frame is not None:
                    frame.f_trace, frame.f_trace_lines = local, True
                    self._traced.append(frame)
                    if frame is outer:
                        break
                    frame = frame.f_back
                self._armed = True
                sys.settrace(lambda frame, event, arg: None)  # (only the frames above)
            return got

        self._real = real
        self.monkeypatch.setattr(self.owner, self.name, called)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        sys.settrace(None)
        self._armed = False
        for frame in self._traced:
            frame.f_trace = None
        self._traced.clear()
        self.monkeypatch.setattr(self.owner, self.name, self._real)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder this test's scratch folders go to (the first look at it
    reclaims nothing: it is new)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setattr(scratch, "_looked", set())
    monkeypatch.setattr(scratch, "_left", set())
    return folder


def _left_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("pmemsim-*"))


def _workload(sim: Any, root: Path) -> None:
    (root / "data").write_bytes(b"x")


def _recover(sim: Any, root: Path) -> bool:
    return True


def test_the_reports_recording_leaves_no_folder_when_interrupted_after_making_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """html's recording of a FileCrashCheck again (the report's timeline)."""
    c = FileCrashCheck("files", _workload, _recover)
    with (
        InterruptAfter(monkeypatch, pmemsim.html.explore, "make") as stop,
        pytest.raises(KeyboardInterrupt),
        pmemsim.html.explore.recorded(c, False),
    ):
        pass
    assert stop.landed  # (the interruption came, and in the recording)
    assert stop.landed[0].startswith("recorded:")
    assert _left_in(root) == []


def _no_cluster_left(root: Path, before: set[int]) -> None:
    assert _left_in(root) == []
    alive = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert alive == []


def test_a_local_cluster_leaves_no_folder_when_interrupted_after_making_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its scratch folder made, the LocalCluster not started yet."""
    from dask_support import dask_or_skip, hard_limit

    dask_or_skip()
    from pmemsim.distributed import Dask

    before = {p.pid for p in multiprocessing.active_children()}
    with (
        hard_limit(),
        InterruptAfter(monkeypatch, scratch, "make") as stop,
        pytest.raises(KeyboardInterrupt),
    ):
        Dask("local:1").close()
    assert stop.landed[0].startswith("_start_local:")
    _no_cluster_left(root, before)


def test_the_commands_cluster_is_closed_when_interrupted_as_it_opens(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--scheduler local:1``: the LocalCluster started, the executor not handed out
    yet (in the executor's constructor, or in the command's context manager)."""
    from dask_support import dask_or_skip, hard_limit

    dask_or_skip()
    from pmemsim.distributed.options import cluster_for

    before = {p.pid for p in multiprocessing.active_children()}
    owner = pmemsim.distributed.executor
    with (
        hard_limit(),
        InterruptAfter(monkeypatch, owner, "Connection") as stop,
        pytest.raises(KeyboardInterrupt),
        cluster_for("local:1"),
    ):
        pass
    assert stop.landed
    _no_cluster_left(root, before)


# -- a Dask worker removes, as it ends, the folders it left ----------------------------------

#: Functions that run on the workers: by value (they cannot import this module).
ON_WORKER = """
from pmemsim import scratch


def one_store(v):
    v.u64[0] = 1
    v.persist(0, 8)


def leaves_a_folder(view):
    scratch.make("left")  # (never removed: as a make cut short before its try leaves it)
    return True
"""


def _on_worker() -> dict[str, Any]:
    scope: dict[str, Any] = {}
    exec(ON_WORKER, scope)
    return scope


@pytest.fixture
def worker_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``root``, the temporary folder of the workers started from here too."""
    monkeypatch.setenv("TMPDIR", str(root))
    return root


def _ended_leaving_none(ex: Any, root: Path) -> None:
    """The folders the worker left are there while it lives, gone once it ended."""
    assert [n for n in _left_in(root) if n.startswith("pmemsim-left-")]
    ex.close()
    assert _left_in(root) == []


def test_a_dask_worker_exploring_removes_the_folders_it_left_as_it_ends(
    worker_root: Path,
) -> None:
    from dask_support import dask_or_skip, hard_limit

    dask_or_skip()
    from pmemsim.distributed import Dask
    from pmemsim.explore import CrashCheck, check

    fns = _on_worker()
    c = CrashCheck("leaves", fns["one_store"], fns["leaves_a_folder"], strategy="exhaustive")
    with hard_limit():
        ex = Dask("local:1")
        try:
            r = check(c, progress=None, executor=ex)
            assert r.verdict == "consistent" and ex.sent >= 1
            _ended_leaving_none(ex, worker_root)
        finally:
            ex.close()


def test_a_dask_worker_judging_a_log_removes_the_folders_it_left_as_it_ends(
    worker_root: Path,
) -> None:
    from dask_support import dask_or_skip, hard_limit

    dask_or_skip()
    from pmemsim.distributed import Dask
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log

    fns = _on_worker()
    text = (
        "START|REGISTER_FILE;/pool;0x10000;0x1000;0x0|STORE;0x10000;0x1;0x8|"
        "FLUSH;0x10000;0x40|FENCE|STOP\n"
    )
    checker = FunctionChecker(fns["leaves_a_folder"], "leaves")
    with hard_limit():
        ex = Dask("local:1")
        try:
            r = check_log(Replay.of(parse_log(text)), checker, executor=ex)
            assert r.verdict == "consistent" and ex.sent >= 1
            _ended_leaving_none(ex, worker_root)
        finally:
            ex.close()
