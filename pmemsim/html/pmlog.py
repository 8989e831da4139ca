"""Reports of ``pmemsim check-log``: a store log's records as the run, its minimal
inconsistent crash laid over them, and the C source lines its stack frames name."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..enums import Granularity
from .explore import position
from .model import Crash, Finding, Operation, Run, Summary
from .page import CheckPage, FailurePage
from .source import parse_frame
from .timeline import History

if TYPE_CHECKING:
    from ..pmlog import LogCheckResult, Replay
    from ..pmlog.lint import LogFinding

__all__ = ["log_page", "log_run"]

_NAMES = {0: "store", 1: "flush", 2: "fence", 3: "deep_flush"}
_RECORD = {0: "STORE", 1: "FLUSH", 2: "FENCE", 3: "DEEP_SYNC"}


def log_run(replay: Replay, search: tuple[str, ...] = ()) -> Run:
    """The log's operations (inside the registered files, each file a medium of the run),
    each named by its record."""
    ops: list[Operation] = []
    for record, step, _ in replay.conversions():
        if step is None:  # outside every registered file
            continue
        kind, pool, off, arg, rec = step
        if kind >= 4:  # a marker's BEGIN or END
            ops.append(Operation("marker", marker=str(arg), begin=kind == 4, label=""))
            continue
        frames: tuple[str, ...] = tuple(getattr(record, "frames", ()))
        stack = tuple(w for w in (parse_frame(f, search) for f in frames) if w is not None)
        data = arg if isinstance(arg, bytes) else b""
        length = len(data) if isinstance(arg, bytes) else (arg if isinstance(arg, int) else 0)
        ops.append(
            Operation(
                _NAMES[kind],
                pool if kind != 2 else -1,
                off,
                length,
                data,
                stack=stack,
                label=f"{_RECORD[kind]} #{rec}",
                frames=frames,
                seq=rec,
            )
        )
    paths = [p.path for p in replay.pools]
    return Run(ops, paths, Granularity.CACHE_LINE, [64] * len(paths))


def log_finding(run: Run, f: LogFinding) -> Finding:
    """A check-log lint finding placed at the records it concerns (as the text report
    counts them)."""
    from ..pmlog.lint import _FLUSH_KINDS

    kind = "flush" if f.kind in _FLUSH_KINDS else "store"
    return Finding(str(f), f.severity, run.numbered(kind, f.concerns))


def log_page(
    result: LogCheckResult,
    replay: Replay,
    command: str,
    search: tuple[str, ...] = (),
    crash_points: str = "barriers",
) -> CheckPage:
    summary = Summary(
        name=result.log or "store log",
        verdict=result.verdict,
        expected=None,
        coverage=result.coverage,
        crash_points=result.crash_points,
        images_possible=result.images_possible,
        images_checked=result.images_checked,
        inconsistent=result.inconsistent,
        seconds=result.seconds,
        strategy=result.engine,
        seed=result.seed,
        granularity="CACHE_LINE (x86 ADR)",
        details=(
            ", ".join(f"file {f['path']} ({f['size']:,} bytes)" for f in result.files)
            # Replayed: the log's operations inside its registered files (the text report's
            # header counts the log's, CPUID fences and flushes of other memory included).
            + f", {result.operations:,} operations replayed ({result.stores:,} stores); "
            f"checker: {result.checker}",
        ),
        text_report=result.report(),
    )
    folders = tuple(search) or (os.getcwd(),)
    run = log_run(replay, folders)
    run.findings = [log_finding(run, f) for f in result.findings]
    cp = CheckPage(summary, run)
    m = result.minimal
    if m is None:
        return cp
    trace = replay.record(crash_points)
    point = trace.points[min(m.crash.point, len(trace.points) - 1)]
    state = point.state
    index = {(u.medium_index, u.offset): i for i, u in enumerate(state.units)}
    wanted = [(index[(md, off)], alt) for md, off, alt in m.crash.lines if (md, off) in index]
    crash = Crash(
        point=point.index,
        position=position(run, trace.points, point),
        text=m.where,
        state=state,
        deviations=tuple(state.image(wanted).deviations),
        verdict=f"checker: {m.verdict}",
        token=m.token,
        replay=command or f"pmemsim check-log LOG --replay {m.token} -- CHECKER",
        markers=point.markers,
        expected={(pool, off): (n, lost) for pool, off, _, n, lost in m.lines},
    )
    cp.failures = [FailurePage(crash, run, History.of(run, [crash.position]))]
    return cp
