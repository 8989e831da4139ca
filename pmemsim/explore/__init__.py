"""Crash exploration: every crash that matters, checked by the user's recovery.

Record a workload once on the simulator (:func:`record`; a program over files of its own:
:class:`FileCrashCheck`), choose crash images per crash
point with a strategy (exact or heuristic, always labelled), run recovery on each distinct
image, and report the minimal failing crash with a replay token (:func:`check`,
:class:`CheckResult`). Hypothesis strategies live in :mod:`pmemsim.hypothesis`, the pytest
plugin in :mod:`pmemsim.pytest_plugin`.

The names are imported on first use (PEP 562): a command that needs one module of the
package (``check-log`` the crash-point strategies, not the engine) does not pay for the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import first_use

if TYPE_CHECKING:
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

#: Public name -> the module that defines it (relative to this package).
_LAZY = {
    "CrashInfo": "..markers",
    "current_crash": "..markers",
    "marker": "..markers",
    "BaseCheck": ".checks",
    "CrashCheck": ".checks",
    "Crash": ".crash",
    "check": ".engine",
    "FileCrashCheck": ".files",
    "NondeterministicRecovery": ".lazy",
    "run_recovery": ".recovery",
    "replay": ".replaying",
    "CheckResult": ".report",
    "CrashConsistencyError": ".report",
    "FailedCrash": ".report",
    "Failure": ".report",
    "LineOutcome": ".report",
    "LostStore": ".report",
    "Progress": ".report",
    "RecoveryHang": ".report",
    "Accumulative": ".strategy",
    "Bounded": ".strategy",
    "Exhaustive": ".strategy",
    "Extremes": ".strategy",
    "FlushedOnly": ".strategy",
    "Lazy": ".strategy",
    "Nothing": ".strategy",
    "Persisted": ".strategy",
    "RandomSample": ".strategy",
    "ReadGuided": ".strategy",
    "ReverseAccumulative": ".strategy",
    "Strategy": ".strategy",
    "strategy_named": ".strategy",
    "CrashPoint": ".trace",
    "MarkerOp": ".trace",
    "Trace": ".trace",
    "record": ".trace",
    "per_granularity": ".variants",
}

__getattr__ = first_use(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
