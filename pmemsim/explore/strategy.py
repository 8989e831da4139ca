"""Which crash images of one crash point to check.

Every strategy says whether it is *exact* (covers every distinct image of the point) or a
*heuristic*; reports carry that label, and an exact strategy that had to fall back because
the point had too many images says how many it skipped. Strategies return images as
deviations from the all-persisted image: ``((unit index, alternative), ...)``, as
:meth:`CrashState.image` takes them. Within one point distinct deviations are distinct
images, so nothing here hashes content.

By name (CLI, markers): ``exhaustive``, ``extremes``, ``persisted``, ``bounded:K``,
``random:N``, ``read-guided``, ``accumulative``, ``reverse-accumulative``, ``flushed-only``,
``none``, and
pmreorder's engine names (``ReorderFull`` and friends), mapped to their closest legal
equivalent.
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ErrorCode, InvalidArgumentError

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = [
    "Accumulative",
    "Bounded",
    "Exhaustive",
    "Extremes",
    "FlushedOnly",
    "Nothing",
    "Persisted",
    "Plan",
    "RandomSample",
    "ReadGuided",
    "ReverseAccumulative",
    "Strategy",
    "strategy_named",
]

Deviations = tuple[tuple[int, int], ...]


@dataclass
class PointContext:
    """What a strategy may use besides the state."""

    point: int
    seed: int
    max_images: int
    #: Runs recovery on the all-persisted image of the state and returns the indexes of
    #: the units it read (for read-guided exploration).
    probe: Callable[[CrashState], set[int]] | None = None

    def rng(self) -> random.Random:
        # One generator per point, derived from the seed: the images a point gets do not
        # depend on how many other points ran before it, or in which process.
        return random.Random(f"pmemsim:{self.seed}:{self.point}")


@dataclass
class Plan:
    images: list[Deviations]
    #: Distinct images of the point this plan leaves out.
    skipped: int


class Strategy(ABC):
    #: Covers every distinct image of a crash point (when it did not have to fall back).
    exact: bool = False
    name: str = ""

    @abstractmethod
    def plan(self, state: CrashState, ctx: PointContext) -> Plan: ...

    def __str__(self) -> str:
        return self.name


def _counts(state: CrashState) -> list[int]:
    return [len(state.units[i].options(state._bases[i])) for i in range(len(state.units))]


def _extremes(state: CrashState) -> list[Deviations]:
    low = state.guaranteed_image().deviations
    return [()] if not low else [(), low]


def _finish(state: CrashState, images: list[Deviations]) -> Plan:
    unique = list(dict.fromkeys(images))
    return Plan(unique, state.image_count() - len(unique))


class Exhaustive(Strategy):
    """Every distinct image; above ``max_images`` at one point, the extremes and every
    single-line deviation (then the point is labelled partial, with what was skipped)."""

    exact = True
    name = "exhaustive"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        counts = _counts(state)
        total = state.image_count()
        if total <= ctx.max_images:
            ranges = [range(c) for c in counts]
            images = [
                tuple((i, o) for i, o in enumerate(combo) if o)
                for combo in itertools.product(*ranges)
            ]
            return Plan(images, 0)
        images = _extremes(state)
        for i, c in enumerate(counts):
            images.extend(((i, o),) for o in range(1, c))
            if len(images) >= ctx.max_images:
                break
        return _finish(state, images[: ctx.max_images])


class Extremes(Strategy):
    """Nothing unguaranteed persisted, and everything persisted (always tried first)."""

    name = "extremes"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return _finish(state, _extremes(state))


class Persisted(Strategy):
    """Only the image with everything visible persisted (pmreorder's NoReorderDoCheck)."""

    name = "persisted"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return _finish(state, [()])


class Nothing(Strategy):
    """No image at all (pmreorder's NoReorderNoCheck; a marker's "don't crash here")."""

    name = "none"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return _finish(state, [])


class Bounded(Strategy):
    """The extremes, and every image in which at most ``k`` lines deviate from the
    all-persisted image (Chipmunk uses k = 2)."""

    def __init__(self, k: int = 2) -> None:
        if k < 1:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"bounded needs k >= 1, not {k}")
        self.k = k
        self.name = f"bounded:{k}"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        counts = _counts(state)
        images = _extremes(state)
        live = [i for i, c in enumerate(counts) if c > 1]
        for j in range(1, self.k + 1):
            for units in itertools.combinations(live, j):
                for alts in itertools.product(*[range(1, counts[i]) for i in units]):
                    images.append(tuple(zip(units, alts, strict=True)))
                    if len(images) >= ctx.max_images:
                        return _finish(state, images)
        return _finish(state, images)


class RandomSample(Strategy):
    """The extremes and ``n`` seeded random images per point: each line independently keeps
    everything with probability 1/2, otherwise a uniformly chosen alternative."""

    def __init__(self, n: int = 100) -> None:
        if n < 1:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"random needs n >= 1, not {n}")
        self.n = n
        self.name = f"random:{n}"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        counts = _counts(state)
        rng = ctx.rng()
        images = _extremes(state)
        for _ in range(self.n):
            dev = []
            for i, c in enumerate(counts):
                if c > 1 and rng.random() < 0.5:
                    dev.append((i, rng.randrange(1, c)))
            images.append(tuple(dev))
        return _finish(state, images)


class ReadGuided(Strategy):
    """Vinter's pruning: run recovery on the all-persisted image, note the lines it reads,
    and branch only on those (every other line persisted everything), plus the extremes."""

    name = "read-guided"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        if ctx.probe is None:
            raise InvalidArgumentError(ErrorCode.EINVAL, "read-guided exploration needs a recovery")
        counts = _counts(state)
        read = sorted(i for i in ctx.probe(state) if counts[i] > 1)
        images = _extremes(state)
        for alts in itertools.product(*[range(counts[i]) for i in read]):
            images.append(tuple((i, o) for i, o in zip(read, alts, strict=True) if o))
            if len(images) >= ctx.max_images:
                break
        return _finish(state, images)


def _alternative_of(state: CrashState, i: int, kept: int, picks: tuple[int, ...]) -> int:
    """The alternative index of unit ``i`` whose content keeps ``kept`` write-back atoms and
    the given non-temporal picks (alternatives are deduplicated by content)."""
    from pmemsim_backends.sim import Option

    u, base = state.units[i], state._bases[i]
    want = u.content(base, Option(kept, picks, 0))
    for o, opt in enumerate(u.options(base)):
        if u.content(base, opt) == want:
            return o
    raise AssertionError("every legal choice has an alternative")  # pragma: no cover


def _cutoff_image(state: CrashState, keep: Callable[[int], bool]) -> Deviations:
    dev = []
    for i, u in enumerate(state.units):
        kept = 0
        while kept < len(u.wb) and keep(u.wb[kept].seq):
            kept += 1
        picks = tuple(
            max((j for j, a in enumerate(g) if keep(a.seq)), default=-1) for g in u.nt_groups
        )
        o = _alternative_of(state, i, kept, picks)
        if o:
            dev.append((i, o))
    return tuple(dev)


def _seqs(state: CrashState) -> list[int]:
    seqs = {a.seq for u in state.units for a in u.wb}
    seqs |= {a.seq for u in state.units for g in u.nt_groups for a in g}
    return sorted(seqs)


class Accumulative(Strategy):
    """Program-order prefixes of the stores in flight (pmreorder's ReorderAccumulative)."""

    name = "accumulative"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        seqs = _seqs(state)
        cuts = [*seqs, (seqs[-1] + 1) if seqs else 0]
        images = [_cutoff_image(state, c.__gt__) for c in cuts]
        return _finish(state, images[::-1])


class ReverseAccumulative(Strategy):
    """Newest lines first (the legal reading of pmreorder's ReorderReverseAccumulative):
    lines whose last store in flight is at or after a cutoff keep everything, the others
    keep nothing unguaranteed, for every cutoff from the newest store back."""

    name = "reverse-accumulative"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        last = []
        for u in state.units:
            seqs = [a.seq for a in u.wb] + [a.seq for g in u.nt_groups for a in g]
            last.append(max(seqs))
        images = []
        for c in [*sorted(set(last), reverse=True), max(last, default=0) + 1]:
            images.append(self._image(state, [t >= c for t in last]))
        return _finish(state, [(), *images])

    @staticmethod
    def _image(state: CrashState, keeps: list[bool]) -> Deviations:
        low = dict(state.guaranteed_image().deviations)
        return tuple((i, low[i]) for i, k in enumerate(keeps) if not k and i in low)


class FlushedOnly(Strategy):
    """pmreorder's model, for side-by-side comparison: stores never flushed never persist
    (no eviction); flushed ones persist in any legal combination. It misses real bugs."""

    name = "flushed-only"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        per_unit = []
        for i, u in enumerate(state.units):
            alts = set()
            for kept in range(u.flushed + 1):
                for picks in itertools.product(*[range(-1, len(g)) for g in u.nt_groups]):
                    alts.add(_alternative_of(state, i, kept, tuple(picks)))
            per_unit.append(sorted(alts))
        images = []
        for combo in itertools.product(*per_unit):
            images.append(tuple((i, o) for i, o in enumerate(combo) if o))
            if len(images) >= ctx.max_images:
                break
        return _finish(state, images)


_PMREORDER = {
    "NoReorderNoCheck": "none",
    "NoReorderDoCheck": "persisted",
    "ReorderFull": "exhaustive",
    "ReorderPartial": "random:3",
    "ReorderAccumulative": "accumulative",
    "ReorderReverseAccumulative": "reverse-accumulative",
}

STRATEGY_NAMES = (
    "exhaustive",
    "extremes",
    "persisted",
    "bounded:K",
    "random:N",
    "read-guided",
    "accumulative",
    "reverse-accumulative",
    "flushed-only",
    "none",
    *_PMREORDER,
)


def strategy_named(spec: str | Strategy) -> Strategy:
    """A strategy from its name (see the module docstring)."""
    if isinstance(spec, Strategy):
        return spec
    name = _PMREORDER.get(spec, spec)
    base, _, arg = name.partition(":")
    simple: dict[str, Callable[[], Strategy]] = {
        "exhaustive": Exhaustive,
        "extremes": Extremes,
        "persisted": Persisted,
        "none": Nothing,
        "read-guided": ReadGuided,
        "accumulative": Accumulative,
        "reverse-accumulative": ReverseAccumulative,
        "flushed-only": FlushedOnly,
    }
    try:
        if base in simple and not arg:
            return simple[base]()
        if base == "bounded":
            return Bounded(int(arg) if arg else 2)
        if base == "random":
            return RandomSample(int(arg) if arg else 100)
    except ValueError:
        pass
    raise InvalidArgumentError(
        ErrorCode.EINVAL,
        f"unknown exploration strategy {spec!r}; use one of: {', '.join(STRATEGY_NAMES)}",
    )
