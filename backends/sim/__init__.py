"""The cache-line simulator backend (rules: docs/persistency.md)."""

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
