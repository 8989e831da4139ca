"""HTML reports: a failing crash drawn as a timeline of the cache lines it touched.

One self-contained file per report (styles and script inline, no network): for every check
its verdict, coverage, crash points, images and time; for each distinct failure the
timeline of the lines the workload wrote (state after every operation, the crash, what
the failing image kept of each line), the code of every store and flush beside it, the
lost stores, the exception and the command that replays the crash. docs/html-report.md
explains how to read it.

* :func:`check_report` for a :class:`pmemsim.explore.CheckResult` (also
  ``CheckResult.to_html()``), :func:`checks_report` for several;
* :func:`replay_report` for one crash rebuilt from a replay token;
* :func:`log_report` for ``pmemsim check-log``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .page import CheckPage, FailurePage, page
from .timeline import History

if TYPE_CHECKING:
    from ..explore import CheckResult, Failure
    from ..pmlog import LogCheckResult, Replay

__all__ = ["check_report", "checks_report", "log_report", "replay_report", "write_report"]


def _check_page(
    result: CheckResult,
    check: Any,
    replay: Callable[[Failure], str] | None,
    timeline_if_consistent: bool,
) -> CheckPage:
    from .explore import crash_of, recorded, summary_of

    cp = CheckPage(summary_of(result, check), timeline_if_consistent=timeline_if_consistent)
    if check is None:
        cp.note = "the check itself is not at hand: no timeline (pass check= to draw one)"
        return cp
    failures = result.distinct()
    unsafe = any("unsafe_shutdown" in f.crash.faults for f in failures)
    with recorded(check, unsafe) as (trace, run):
        cp.run = run
        crashes = [crash_of(f, trace, run, replay) for f in failures]
        history = History.of(run, [c.position for c in crashes])
        cp.failures = [FailurePage(c, run, history) for c in crashes]
    return cp


def checks_report(
    results: Sequence[tuple[CheckResult, Any]],
    *,
    title: str = "pmemsim crash report",
    subtitle: str = "",
    replay: Callable[[Failure], str] | None = None,
) -> str:
    """One page for several ``(result, check)`` pairs; timelines for the failing checks."""
    single = len(results) == 1
    pages = [_check_page(r, c, replay, single) for r, c in results]
    return page(title, pages, subtitle)


def check_report(
    result: CheckResult, check: Any = None, *, replay: Callable[[Failure], str] | None = None
) -> str:
    """The page of one check's result. ``check`` (the CrashCheck or FileCrashCheck that
    produced it; default: the one the result remembers) is recorded again to draw the
    timeline. ``replay`` words each failure's replay command."""
    if check is None:
        check = result.check
    return checks_report([(result, check)], title=f"pmemsim: {result.name}", replay=replay)


def replay_report(check: Any, token: str, error: BaseException | None, *, name: str = "") -> str:
    """The page of one crash rebuilt from a replay token, and what recovery said on it."""
    from .explore import replay_page

    cp = replay_page(check, token, error, name or check.name)
    return page(f"pmemsim replay: {cp.summary.name}", [cp])


def log_report(
    result: LogCheckResult,
    replay: Replay,
    *,
    command: str = "",
    search: Sequence[str] = (),
    crash_points: str = "barriers",
) -> str:
    """The page of a check-log result: the log's operations, the minimal inconsistent crash
    laid over them, C source lines from the stack frames the log carries. ``command`` is the
    replay command line; ``search`` folders where the frames' source files may be."""
    from .pmlog import log_page

    cp = log_page(result, replay, command, tuple(search), crash_points)
    return page(f"pmemsim check-log: {result.log}", [cp])


def write_report(path: str | os.PathLike[str], text: str) -> Path:
    """Write a report; returns its absolute path."""
    from ..reportfile import write_file

    return write_file(path, text)
