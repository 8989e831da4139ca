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

import _thread
from typing import TYPE_CHECKING

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

#: Held while the public names are imported: the first use of any of them imports every
#: module behind them, in one thread, in the order above (as pmemsim/__init__.py does, for
#: the same reason: threads that each imported one module on first use could deadlock).
_LOADING = _thread.RLock()
_loaded = False


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    global _loaded
    with _LOADING:
        if not _loaded:
            _loaded = True
            for where in dict.fromkeys(_LAZY.values()):
                importlib.import_module(where, __name__)
    # Looked up in the module each time, not cached here: a name always agrees with its
    # module in sys.modules (pytester drops and re-imports modules between inner sessions;
    # a cached class would then be another class than the one a re-imported module uses).
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
