"""Noticing a recovery that opens an image's files behind pmemsim's back.

Lazy exploration learns what recovery reads through the simulator. A program over files
(FileCrashCheck) could also ``open()`` one of the files the simulator holds and read it
with plain file I/O: those reads are invisible, and exploring lazily would then be unsound.
An audit hook (installed once per process, on first use; inert unless a run is watched)
sees every ``open`` of a watched path and tells pmemsim's own opens (the nearest caller
outside the standard library is pmemsim or its simulator) from the program's. The engine
then explores that check exhaustively instead.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

__all__ = ["watching"]


class _Watch:
    __slots__ = ("opened", "paths")

    def __init__(self, paths: set[str]) -> None:
        self.paths = paths
        #: The watched paths the program opened itself.
        self.opened: list[str] = []


_current: ContextVar[_Watch | None] = ContextVar("pmemsim_watch", default=None)
_installed = False
_STDLIB = tuple(
    os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")
)
_PMEMSIM = str(Path(__file__).resolve().parent.parent) + os.sep


@functools.cache
def _backends_dir() -> str:
    import pmemsim_backends

    return str(Path(pmemsim_backends.__file__).resolve().parent) + os.sep


def _ours(filename: str) -> bool:
    real = os.path.realpath(filename)
    return real.startswith(_PMEMSIM) or real.startswith(_backends_dir())


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event != "open":
        return
    watch = _current.get()
    if watch is None or not args:
        return
    path = args[0]
    if not isinstance(path, str | bytes | os.PathLike):
        return
    try:
        full = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    if full not in watch.paths:
        return
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_STDLIB):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is not None and _ours(frame.f_code.co_filename):
        return
    watch.opened.append(full)


@contextmanager
def watching(paths: set[str]) -> Iterator[list[str]]:
    """Watch opens of ``paths`` (real paths) in this context; yields the list of the ones
    the program opened itself (empty if it read them only through pmemsim)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    watch = _Watch(paths)
    token = _current.set(watch)
    try:
        yield watch.opened
    finally:
        _current.reset(token)
