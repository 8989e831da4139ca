"""The cache-line simulator backend (rules: docs/persistency.md).

Each name is imported on first use (PEP 562), from its own module only: a reader of crash
states (``pmemsim check-log`` replays a log without the simulator) imports
``pmemsim_backends.sim.images`` without the backend, its machine and device. The modules
import none of this package's names back at import time, so ordinary per-module import
locks keep threads that first use different names at once apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import SimBackend
    from .device import InjectedBadBlocks, SimDevice
    from .images import Atom, CrashImage, CrashMode, CrashState, LineState, Option
    from .lint import Finding, FindingKind
    from .machine import Barrier, Op, Statistics

__all__ = [
    "Atom",
    "Barrier",
    "CrashImage",
    "CrashMode",
    "CrashState",
    "Finding",
    "FindingKind",
    "InjectedBadBlocks",
    "LineState",
    "Op",
    "Option",
    "SimBackend",
    "SimDevice",
    "Statistics",
]

#: Public name -> the module that defines it.
_LAZY = {
    "SimBackend": "backend",
    "InjectedBadBlocks": "device",
    "SimDevice": "device",
    "Atom": "images",
    "CrashImage": "images",
    "CrashMode": "images",
    "CrashState": "images",
    "LineState": "images",
    "Option": "images",
    "Finding": "lint",
    "FindingKind": "lint",
    "Barrier": "machine",
    "Op": "machine",
    "Statistics": "machine",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    # Not cached here: a name always agrees with its module in sys.modules (see
    # pmemsim/explore/__init__.py).
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
