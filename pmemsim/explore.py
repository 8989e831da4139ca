"""Crash-consistency checks: run a workload on the simulator, crash it at every barrier that
follows a store (and at the end), build the distinct crash images, and run recovery on each.

This is the foundation's exact explorer: crash points are the barriers (persistency.md, rule
6: that covers every reachable state), images are enumerated exhaustively and deduplicated by
content. When a crash point has more images than ``max_images`` it checks the two extremes
(nothing unguaranteed persisted, everything persisted) and says how many it skipped, so the
verdict is labelled ``exact`` or ``partial``; it never claims more than it checked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import Config
from .enums import Granularity
from .part import Part
from .provenance import Provenance, describe, locations
from .set import Set
from .source import Source
from .view import View

__all__ = ["CheckResult", "CrashCheck", "Failure", "check"]

Workload = Callable[[View], object]
Recovery = Callable[[View], object]


@dataclass(frozen=True)
class CrashCheck:
    """A workload, the recovery check for its crash images, and the expected verdict.

    ``workload(view)`` runs on a fresh pool of ``size`` bytes (zeroed, anonymous) on a
    simulated platform of ``granularity``. ``recover(view)`` runs on a fresh set mapping one
    crash image; returning False or raising means the image is inconsistent.
    """

    name: str
    workload: Workload
    recover: Recovery
    size: int = 4096
    granularity: Granularity = Granularity.CACHE_LINE
    expect: Literal["consistent", "inconsistent"] = "consistent"
    description: str = ""
    #: Above this many images at one crash point, only the two extremes are checked.
    max_images: int = 4096


@dataclass(frozen=True)
class LostStore:
    """A store (or the part of one in one line) that an image lost."""

    offset: int
    length: int
    provenance: Provenance

    def __str__(self) -> str:
        return f"+0x{self.offset:x} ({self.length} bytes) stored at {describe(self.provenance)}"


@dataclass(frozen=True)
class Failure:
    """One inconsistent crash image."""

    crash_point: int
    barrier_kind: str
    barrier_stack: Provenance
    lines_lost: int
    lost: tuple[LostStore, ...]
    error: BaseException | None

    def describe(self) -> str:
        where = locations(self.barrier_stack)
        at = f" before the {self.barrier_kind} at {where[0]}" if where else " at the end of the run"
        out = [f"crash point {self.crash_point}{at}:"]
        if self.lost:
            out.append(f"  {self.lines_lost} line(s) lost these stores:")
            out += [f"    {s}" for s in self.lost]
        else:
            out.append("  every visible store persisted (the workload's final state)")
        if self.error is not None:
            out.append(f"  recovery said: {type(self.error).__name__}: {self.error}")
        else:
            out.append("  recovery returned False")
        return "\n".join(out)


@dataclass
class CheckResult:
    """What one check found."""

    name: str
    expect: str
    crash_points: int = 0
    images_possible: int = 0
    images_checked: int = 0
    images_skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    findings: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return self.images_skipped == 0

    @property
    def verdict(self) -> str:
        return "inconsistent" if self.failures else "consistent"

    @property
    def as_expected(self) -> bool:
        return self.verdict == self.expect

    @property
    def minimal(self) -> Failure | None:
        """The fewest lines losing the fewest stores at the earliest crash point."""
        if not self.failures:
            return None
        return min(self.failures, key=lambda f: (f.lines_lost, len(f.lost), f.crash_point))


def _run_recovery(c: CrashCheck, snapshot: Any, sim_cls: Any) -> BaseException | bool | None:
    sim = sim_cls(c.granularity)
    with Set(Config(granularity=c.granularity, backend=sim)) as s:
        d = s.map(Part(Source.from_image(snapshot)))
        try:
            ok = c.recover(s.view(d))
        except Exception as exc:  # the user's recovery failed: that is the verdict
            return exc
    return None if ok is not False else False


def check(c: CrashCheck) -> CheckResult:
    """Run ``c`` and return every inconsistent image it found (see :class:`CheckResult`)."""
    from pmemsim_backends.sim import SimBackend

    started = time.perf_counter()
    result = CheckResult(c.name, c.expect)
    sim = SimBackend(c.granularity)
    states: list[tuple[Any, str, Provenance]] = []

    def at_barrier(barrier: Any) -> None:
        if barrier.after_store:
            states.append((sim.crash_state(), barrier.kind, barrier.provenance))

    sim.on_barrier(at_barrier)
    with Set(Config(granularity=c.granularity, backend=sim)) as s:
        d = s.map(Part(Source.anonymous(c.size)))
        c.workload(s.view(d))
        states.append((sim.crash_state(), "end", ()))
        result.findings = sim.lint()

    seen: set[bytes] = set()
    for point, (state, kind, stack) in enumerate(states):
        count = state.image_count()
        result.images_possible += count
        if count <= c.max_images:
            images = list(state.images())
        else:
            images = [state.guaranteed_image(), state.persisted_image()]
            result.images_skipped += count - len(images)
        for image in images:
            snap = image.snapshot()
            digest = hashlib.blake2b(snap.to_bytes(), digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            result.images_checked += 1
            outcome = _run_recovery(c, snap, SimBackend)
            if outcome is None:
                continue
            lost = tuple(LostStore(a.offset, len(a.data), (a.frame,)) for _, a in image.lost())
            result.failures.append(
                Failure(
                    point,
                    kind,
                    stack,
                    len({i for i, _ in image.lost()}),
                    lost,
                    outcome if isinstance(outcome, BaseException) else None,
                )
            )
    result.crash_points = len(states)
    result.seconds = time.perf_counter() - started
    return result
