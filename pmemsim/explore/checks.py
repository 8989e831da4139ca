"""What a crash check is: a workload, its recovery, the verdict expected, how to explore.

:class:`CrashCheck` (one anonymous pool) and :class:`~pmemsim.explore.FileCrashCheck` (a
program over files of its own) share :class:`BaseCheck`: every field but the first three is
keyword-only, and every field is checked when the check is made, with a message that names
the check and lists what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Literal

from ..enums import Granularity
from ..errors import ErrorCode, InvalidArgumentError
from ..view import View
from .strategy import STRATEGY_NAMES, Strategy, strategy_named
from .trace import CRASH_POINT_MODES

__all__ = ["FAULTS", "BaseCheck", "CrashCheck", "granularity_of"]

Workload = Callable[[View], object]
Recovery = Callable[[View], object]

FAULTS = ("unsafe_shutdown", "badblock")
EXPECT = ("consistent", "inconsistent")


def validate_check(c: object) -> None:
    """``c`` is a check this engine runs (its fields were checked when it was made)."""
    if not isinstance(c, BaseCheck):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"{c!r} is not a CrashCheck or a FileCrashCheck"
        )


def granularity_of(value: object, where: str = "granularity") -> Granularity:
    """A granularity from the enum, its name in any case ("cache_line") or its value."""
    if isinstance(value, Granularity):
        return value
    if isinstance(value, str):
        try:
            return Granularity[value.strip().upper()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return Granularity(value)
        except ValueError:
            pass
    names = ", ".join(repr(g.name.lower()) for g in Granularity)
    raise InvalidArgumentError(ErrorCode.EINVAL, f"{where}={value!r} is not one of {names}")


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True)
class BaseCheck:
    """The fields every kind of crash check has (see docs/explore.md)."""

    name: str
    workload: Any
    recover: Any
    _: KW_ONLY
    #: CACHE_LINE (ADR, the default), BYTE (eADR) or PAGE (msync); names are accepted too.
    granularity: Granularity = Granularity.CACHE_LINE
    expect: Literal["consistent", "inconsistent"] = "consistent"
    description: str = ""
    #: "barriers" (exact, the default), "operations" or "markers" (see trace.py).
    crash_points: str = "barriers"
    #: How images are picked per crash point (a name or a Strategy; see strategy.py). The
    #: default, "lazy", is exact and branches only on what recovery reads.
    strategy: str | Strategy = "lazy"
    #: Strategy per marker name, for crash points inside that marked operation (the
    #: innermost marker with an entry wins; "none" skips its crash points).
    markers: Mapping[str, str | Strategy] = field(default_factory=dict)
    seed: int = 0
    #: Faults to combine with power failures (docs/faults.md): "unsafe_shutdown" (ADR
    #: fails too: data fenced but not deep-flushed may be lost), "badblock" (a 512-byte
    #: bad block in each sector that recovery reads of each crash point's image).
    faults: Sequence[str] = ()
    #: An explicit cap on images per crash point (exhaustive then falls back, and says so);
    #: None (the default): no cap by count, the time budgets decide.
    max_images: int | None = None
    #: Seconds the whole check may take; past it, the crash points not yet explored are
    #: left out and the result says how much it covered. None: no limit.
    time_budget: float | None = 60.0
    #: Seconds one crash point may take (None: no limit).
    point_budget: float | None = 20.0
    #: Seconds one run of recovery may take before it is taken for a hang (None: no limit).
    run_timeout: float | None = 10.0
    #: Reads and stores one run of recovery may make before it is taken for a hang
    #: (deterministic, unlike time; None: no limit).
    run_steps: int | None = None

    def __post_init__(self) -> None:
        where = f"check {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"a check's name is a non-empty string, not {self.name!r}"
            )
        for f in ("workload", "recover"):
            if not callable(getattr(self, f)):
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, f"{where}: {f}={getattr(self, f)!r} is not callable"
                )
        object.__setattr__(
            self, "granularity", granularity_of(self.granularity, f"{where}: granularity")
        )
        if self.expect not in EXPECT:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: expect={self.expect!r} is not one of {', '.join(map(repr, EXPECT))}",
            )
        if self.crash_points not in CRASH_POINT_MODES:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: crash_points={self.crash_points!r} is not one of "
                f"{', '.join(map(repr, CRASH_POINT_MODES))}",
            )
        try:
            strategy_named(self.strategy)
            for s in self.markers.values():
                strategy_named(s)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{where}: {exc.message}") from None
        except AttributeError:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: markers={self.markers!r} is not a mapping of marker names to "
                f"strategies ({', '.join(STRATEGY_NAMES)})",
            ) from None
        if isinstance(self.faults, str) or not isinstance(self.faults, Sequence):
            bad: object = self.faults
        else:
            bad = [f for f in self.faults if f not in FAULTS] or None
        if bad is not None:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: faults={self.faults!r}: faults are a sequence of "
                f"{', '.join(map(repr, FAULTS))}",
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{where}: seed={self.seed!r} is not an int >= 0"
            )
        if self.max_images is not None and (
            not isinstance(self.max_images, int) or self.max_images < 2
        ):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: max_images={self.max_images!r} is not None or an int >= 2",
            )
        for f in ("time_budget", "point_budget", "run_timeout"):
            value = getattr(self, f)
            if value is not None and not _positive(value):
                raise InvalidArgumentError(
                    ErrorCode.EINVAL,
                    f"{where}: {f}={value!r} is not None or a number of seconds > 0",
                )
        if self.run_steps is not None and (
            not isinstance(self.run_steps, int)
            or isinstance(self.run_steps, bool)
            or self.run_steps < 1
        ):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: run_steps={self.run_steps!r} is not None or an int >= 1",
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "_")


@dataclass(frozen=True)
class CrashCheck(BaseCheck):
    """A workload, the recovery check for its crash images, and the expected verdict.

    ``workload(view)`` runs on a fresh pool of ``size`` zero bytes on a simulated platform of
    ``granularity``. ``recover(view)`` runs on a fresh set mapping one crash image (it may
    call :func:`pmemsim.current_crash`); returning False or raising means inconsistent.
    """

    workload: Workload
    recover: Recovery
    _: KW_ONLY
    size: int = 4096
    #: Crash recovery too, to this depth: recovery must survive its own power failures.
    recovery_crash_depth: int = 0
    #: What recovery's set does with a bad block at map time: "clear" it (its content
    #: reads as zeros, as after the kernel reallocates it) or "keep" it (loads of it raise
    #: PoisonError; the map itself refuses with IO_FAIL when detection is on).
    badblock_policy: Literal["clear", "keep"] = "clear"

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"check {self.name!r}"
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{where}: size={self.size!r} is not a number of bytes > 0"
            )
        depth = self.recovery_crash_depth
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{where}: recovery_crash_depth={depth!r} is not an int >= 0"
            )
        if self.badblock_policy not in ("clear", "keep"):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{where}: badblock_policy={self.badblock_policy!r} is not one of 'clear', 'keep'",
            )
