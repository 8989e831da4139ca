"""Crash exploration: every crash that matters, checked by the user's recovery.

Record a workload once on the simulator (:func:`record`; a program over files of its own:
:class:`FileCrashCheck`), choose crash images per crash
point with a strategy (exact or heuristic, always labelled), run recovery on each distinct
image, and report the minimal failing crash with a replay token (:func:`check`,
:class:`CheckResult`). Hypothesis strategies live in :mod:`pmemsim.hypothesis`, the pytest
plugin in :mod:`pmemsim.pytest_plugin`.
"""

from ..markers import CrashInfo, current_crash, marker
from .checks import BaseCheck, CrashCheck
from .crash import Crash
from .engine import check
from .files import FileCrashCheck
from .lazy import NondeterministicRecovery
from .recovery import run_recovery
from .replaying import replay
from .report import (
    CheckResult,
    CrashConsistencyError,
    FailedCrash,
    Failure,
    LineOutcome,
    LostStore,
    Progress,
    RecoveryHang,
)
from .strategy import (
    Accumulative,
    Bounded,
    Exhaustive,
    Extremes,
    FlushedOnly,
    Lazy,
    Nothing,
    Persisted,
    RandomSample,
    ReadGuided,
    ReverseAccumulative,
    Strategy,
    strategy_named,
)
from .trace import CrashPoint, MarkerOp, Trace, record
from .variants import per_granularity

__all__ = [
    "Accumulative",
    "BaseCheck",
    "Bounded",
    "CheckResult",
    "Crash",
    "CrashCheck",
    "CrashConsistencyError",
    "CrashInfo",
    "CrashPoint",
    "Exhaustive",
    "Extremes",
    "FileCrashCheck",
    "FailedCrash",
    "FlushedOnly",
    "Failure",
    "Lazy",
    "LineOutcome",
    "LostStore",
    "MarkerOp",
    "NondeterministicRecovery",
    "Nothing",
    "Persisted",
    "Progress",
    "RandomSample",
    "ReadGuided",
    "RecoveryHang",
    "ReverseAccumulative",
    "Strategy",
    "Trace",
    "check",
    "current_crash",
    "marker",
    "per_granularity",
    "record",
    "replay",
    "run_recovery",
    "strategy_named",
]
