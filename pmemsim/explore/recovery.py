"""The user's recovery run on one crash image, and recovery crashed in turn.

:func:`run_recovery` maps an image into a fresh set (or a kept :class:`PoolHarness`) and
returns recovery's verdict; with ``recovery_crash_depth``, recovery is recorded as a
workload, crashed at each of its own crash points, and run again on what each crash leaves.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from ..config import Config
from ..enums import Granularity
from ..errors import USER_FAILURES, PmemError
from ..markers import CrashInfo, reset_crash, set_crash
from ..part import Part
from ..set import Set
from ..snapshot import Snapshot
from ..source import Source
from ..view import View
from .checks import CrashCheck, Recovery, Workload
from .harness import PoolHarness
from .images import _PageSums, crash_for
from .lazy import Observation, ObservedInfo, StateAlternatives
from .report import HANG_ERRORS, CrashConsistencyError, RecoveryCrashFailure
from .runtimer import RunTimer
from .strategy import PointContext, strategy_named
from .trace import record

__all__ = ["run_recovery"]


def _clear_badblocks(s: Set, event: object, arg: object) -> None:
    from ..events import BadBlockEvent

    if isinstance(event, BadBlockEvent):
        event.source.clear_badblock(event.badblock)


def run_recovery(
    recover: Recovery,
    snapshot: Snapshot,
    granularity: Granularity,
    info: CrashInfo,
    read_tap: Callable[[Any, int, int], None] | None = None,
    badblock_policy: str = "clear",
    *,
    observation: Observation | None = None,
    timer: RunTimer | None = None,
    harness: PoolHarness | None = None,
) -> BaseException | None:
    """Recovery's verdict on one image: None when consistent, else the exception.

    An image with bad blocks is mapped with bad-block detection on; ``badblock_policy``
    "clear" clears each block from the BADBLOCK event (its content is lost), "keep" leaves
    them (the map fails with IO_FAIL, which is then recovery's verdict). ``observation``
    hears every read and store (lazy exploration, step budgets); ``timer`` interrupts a run
    that overstays (the verdict is then a :class:`RecoveryHang`); ``harness`` maps the image
    into a set kept from one run to the next when it can (see :mod:`.harness`).
    """
    reads, ops = read_tap, None
    if observation is not None:
        reads, ops = observation.on_read, observation.on_op
        info = ObservedInfo(info, observation)
    if harness is not None and harness.fits(snapshot):
        return _on_harness(recover, snapshot, info, reads, ops, timer, harness)
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(granularity, lint=False)
    if reads is not None:
        sim.set_read_tap(reads)
    if ops is not None:
        sim.set_tap(ops)
        sim.machine.tap_depth = 0  # the observation needs what was stored where, not the stack
    token = set_crash(info)
    callback = _clear_badblocks if snapshot.badblocks and badblock_policy == "clear" else None
    config = Config(granularity=granularity, backend=sim, event_callback=callback)
    source: Source | None = None
    try:
        with timer.running() if timer is not None else nullcontext(), Set(config) as s:
            source = Source.from_image(snapshot)
            if snapshot.badblocks:
                source.badblock_detection = True
            try:
                d = s.map(Part(source))
            except PmemError as exc:  # e.g. IO_FAIL: bad blocks left in the pool
                return exc
            try:
                ok = recover(s.view(d))
            except USER_FAILURES as exc:  # the user's recovery failed: that is the verdict
                return exc
    except HANG_ERRORS as exc:
        if timer is not None:
            timer.disarm()  # again: the interruption may have come before the first
        return exc
    finally:
        reset_crash(token)
        # Closed here, the timer stopped: left to the collector, a source a verdict's
        # traceback holds was closed whenever that verdict went, maybe in a later run, where
        # the timer's interruption could land in its close (which then left it open).
        if source is not None:
            source.close()
    if ok is False:
        return CrashConsistencyError("recovery returned False")
    return None


def _on_harness(
    recover: Recovery,
    snapshot: Snapshot,
    info: CrashInfo,
    reads: Callable[[Any, int, int], None] | None,
    ops: Callable[[Any], None] | None,
    timer: RunTimer | None,
    harness: PoolHarness,
) -> BaseException | None:
    view = harness.load(snapshot)
    harness.taps(reads, ops)
    token = set_crash(info)
    try:
        if timer is not None:
            timer.arm()
        try:
            ok = recover(view)
        except USER_FAILURES as exc:  # the user's recovery failed: that is the verdict
            return exc
        finally:
            if timer is not None:
                timer.disarm()
    except HANG_ERRORS as exc:
        if timer is not None:
            timer.disarm()  # again: the interruption may have come before the first
        return exc
    finally:
        reset_crash(token)
        harness.taps(None, None)
        harness.check()
    if ok is False:
        return CrashConsistencyError("recovery returned False")
    return None


def _cleared(image: Snapshot) -> Snapshot:
    """The image as recovery left it after clearing its bad blocks (policy "clear": the
    kernel reallocates a cleared block, which reads as zeros): what recovery, crashed and
    run again, starts from."""
    if not image.badblocks:
        return image
    patched: dict[int, bytes | bytearray] = {}
    for bb in image.badblocks:
        for off in range(bb.offset, min(bb.offset + bb.length, image.size)):
            p = off // 4096
            if p not in patched:
                patched[p] = bytearray(image.page(p))
            patched[p][off % 4096] = 0  # type: ignore[index]
    pages = collections.ChainMap(patched, image.pages)  # type: ignore[arg-type]  # read only
    return dataclasses.replace(image, pages=pages, badblocks=())


def _recovery_as_workload(c: CrashCheck, info: CrashInfo) -> Workload:
    """Recovery, run as a workload to be crashed, seeing the crash it recovers from."""

    def workload(view: View) -> None:
        token = set_crash(info)
        try:
            c.recover(view)
        finally:
            reset_crash(token)

    return workload


def _crash_recovery(
    c: CrashCheck,
    snapshot: Snapshot,
    depth: int,
    info: CrashInfo,
    *,
    observation: Observation | None = None,
    timer: RunTimer | None = None,
) -> BaseException | None:
    """Crash recovery itself (running on ``snapshot``) at each of its crash points and run
    recovery again on every image that leaves, to ``depth`` levels."""
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(c.granularity)
    if observation is not None:
        sim.set_read_tap(observation.on_read)
    try:
        with timer.running() if timer is not None else nullcontext():
            trace = record(
                _recovery_as_workload(c, info),
                granularity=c.granularity,
                base=snapshot,
                backend=sim,
            )
    except HANG_ERRORS as exc:
        if timer is not None:
            timer.disarm()
        return exc
    except USER_FAILURES as exc:  # recovery failed as a recorded workload: that is its verdict
        return exc
    sums = _PageSums()
    seen: set[bytes] = set()
    strategy = strategy_named(c.strategy)
    for point in trace.points:
        plan = strategy.plan(point.state, PointContext(point.index, c.seed, c.max_images))
        images = StateAlternatives(point.state)
        for dev in plan.images:
            snap = images.snapshot(dev)
            key = sums.key(point.state, images, dev)
            if key in seen:
                continue
            seen.add(key)
            inner = CrashInfo(point.index, point.kind, point.markers)
            err = run_recovery(
                c.recover, snap, c.granularity, inner, observation=observation, timer=timer
            )
            crash = crash_for(point, dev)
            if err is None and depth > 1:
                err = _crash_recovery(
                    c, snap, depth - 1, inner, observation=observation, timer=timer
                )
                if isinstance(err, RecoveryCrashFailure):
                    return RecoveryCrashFailure((crash, *err.chain), err.error)
            if err is not None:
                return RecoveryCrashFailure((crash,), err)
    return None
