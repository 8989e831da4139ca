"""The cache-line simulator backend (rules: docs/persistency.md)."""

from .backend import SimBackend
from .device import SimDevice
from .images import Atom, CrashImage, CrashState, LineState, Option
from .lint import Finding, FindingKind
from .machine import Barrier, Op, Statistics

__all__ = [
    "Atom",
    "Barrier",
    "CrashImage",
    "CrashState",
    "Finding",
    "FindingKind",
    "LineState",
    "Op",
    "Option",
    "SimBackend",
    "SimDevice",
    "Statistics",
]
