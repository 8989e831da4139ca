"""Which crash images of one crash point to check.

Every strategy says whether it is *exact* (covers every distinct image of the point) or a
*heuristic*; reports carry that label, and an exact strategy that had to fall back because
the point had too many images says how many it skipped. Strategies return images as
deviations from the all-persisted image: ``((unit index, alternative), ...)``, as
:meth:`CrashState.image` takes them. Within one point distinct deviations are distinct
images, so nothing here hashes content.

By name (CLI, markers): ``lazy`` (the default: exact, run by the engine, see
:mod:`pmemsim.explore.lazy`), ``exhaustive``, ``extremes``, ``persisted``, ``bounded:K``,
``random:N``, ``read-guided``, ``accumulative``, ``reverse-accumulative``, ``flushed-only``,
``none``, and pmreorder's engine names (``ReorderFull`` and friends), mapped to their
closest legal equivalent. Plans are generators: none holds a point's images in a list.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from .._dataclass import dataclass
from ..errors import ErrorCode, InvalidArgumentError

if TYPE_CHECKING:
    import random

    from pmemsim_backends.sim import CrashState

    from .trace import CrashPoint

__all__ = [
    "Accumulative",
    "Bounded",
    "Exhaustive",
    "Extremes",
    "FlushedOnly",
    "Nothing",
    "Lazy",
    "Persisted",
    "Plan",
    "RandomSample",
    "ReadGuided",
    "ReverseAccumulative",
    "Strategy",
    "strategy_for",
    "strategy_named",
]

Deviations = tuple[tuple[int, int], ...]


@dataclass
class PointContext:
    """What a strategy may use besides the state."""

    point: int
    seed: int
    #: An explicit cap on the images of one point (``CrashCheck.max_images``); None: no cap
    #: by count (time budgets decide).
    max_images: int | None = None
    #: Runs recovery on the all-persisted image of the state and returns the indexes of
    #: the units it read (for read-guided exploration).
    probe: Callable[[CrashState], set[int]] | None = None

    def rng(self) -> random.Random:
        # One generator per point, derived from the seed: the images a point gets do not
        # depend on how many other points ran before it, or in which process. (random is
        # imported here: most strategies use none, and a short check-log pays for imports.)
        import random

        return random.Random(f"pmemsim:{self.seed}:{self.point}")


@dataclass
class Plan:
    """The images a strategy picks at one point, produced lazily: a plan never holds more
    than a few images at a time, whatever the point's image count.

    ``images`` yields distinct deviations (within the plan). ``skipped`` is the number of
    the point's distinct images the plan leaves out when that is known before it runs (an
    exhaustive plan: 0), else None. The engine counts what a plan yields either way.
    """

    images: Iterable[Deviations]
    skipped: int | None = None


class Strategy(ABC):
    #: Covers every distinct image of a crash point (when it did not have to fall back).
    exact: bool = False
    #: Runs recovery itself and branches on what it reads (the engine's lazy exploration),
    #: instead of planning images up front.
    lazy: bool = False
    name: str = ""

    @abstractmethod
    def plan(self, state: CrashState, ctx: PointContext) -> Plan: ...

    def __str__(self) -> str:
        return self.name


def _counts(state: CrashState) -> list[int]:
    return [len(state.units[i].options(state.base(i))) for i in range(len(state.units))]


def _extremes(state: CrashState) -> list[Deviations]:
    low = state.guaranteed_image().deviations
    return [()] if not low else [(), low]


def _every(counts: list[int]) -> Iterator[Deviations]:
    """Every image of a point, all-persisted first, as deviations (never a list)."""
    live = [i for i, c in enumerate(counts) if c > 1]
    for combo in itertools.product(*[range(counts[i]) for i in live]):
        yield tuple((i, o) for i, o in zip(live, combo, strict=True) if o)


def _distinct(images: Iterable[Deviations]) -> Iterator[Deviations]:
    """``images`` without repeats (memory: the distinct images yielded so far)."""
    seen: set[Deviations] = set()
    for dev in images:
        if dev not in seen:
            seen.add(dev)
            yield dev


def _capped(images: Iterable[Deviations], cap: int | None) -> Iterable[Deviations]:
    return images if cap is None else itertools.islice(images, cap)


class Exhaustive(Strategy):
    """Every distinct image, produced one at a time. With an explicit ``max_images`` and a
    point above it: the extremes and every single-line deviation up to that many (then the
    point is labelled partial, with what was skipped)."""

    exact = True
    name = "exhaustive"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        counts = _counts(state)
        total = state.image_count()
        if ctx.max_images is None or total <= ctx.max_images:
            return Plan(_every(counts), 0)
        images = _extremes(state)
        for i, c in enumerate(counts):
            images.extend(((i, o),) for o in range(1, c))
            if len(images) >= ctx.max_images:
                break
        unique = list(dict.fromkeys(images[: ctx.max_images]))
        return Plan(unique, total - len(unique))


class Lazy(Strategy):
    """Exact, branching only on what recovery reads (Jaaru's idea; see docs/explore.md):
    recovery runs on an image in which every unit not yet read holds one representative
    content; the alternatives of a unit are tried only when a run reads it. The engine runs
    it (:mod:`pmemsim.explore.lazy`); as a plan it is every image."""

    exact = True
    lazy = True
    name = "lazy"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return Plan(_every(_counts(state)), 0)


class Extremes(Strategy):
    """Nothing unguaranteed persisted, and everything persisted (always tried first)."""

    name = "extremes"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return Plan(_extremes(state))


class Persisted(Strategy):
    """Only the image with everything visible persisted (pmreorder's NoReorderDoCheck)."""

    name = "persisted"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return Plan([()])


class Nothing(Strategy):
    """No image at all (pmreorder's NoReorderNoCheck; a marker's "don't crash here")."""

    name = "none"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        return Plan([])


class Bounded(Strategy):
    """The extremes, and every image in which at most ``k`` lines deviate from the
    all-persisted image (Chipmunk uses k = 2), produced one at a time: never more than the
    point has."""

    def __init__(self, k: int = 2) -> None:
        if k < 1:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"bounded needs k >= 1, not {k}")
        self.k = k
        self.name = f"bounded:{k}"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        counts = _counts(state)
        return Plan(_capped(_distinct(self._images(state, counts)), ctx.max_images))

    def _images(self, state: CrashState, counts: list[int]) -> Iterator[Deviations]:
        yield from _extremes(state)
        live = [i for i, c in enumerate(counts) if c > 1]
        for j in range(1, min(self.k, len(live)) + 1):
            for units in itertools.combinations(live, j):
                for alts in itertools.product(*[range(1, counts[i]) for i in units]):
                    yield tuple(zip(units, alts, strict=True))


class RandomSample(Strategy):
    """The extremes and ``n`` seeded random images per point: each line independently keeps
    everything with probability 1/2, otherwise a uniformly chosen alternative. A point with
    no more than ``n + 2`` images gets every one of them instead (so a plan never exceeds
    the point's images)."""

    def __init__(self, n: int = 100) -> None:
        if n < 1:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"random needs n >= 1, not {n}")
        self.n = n
        self.name = f"random:{n}"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        counts = _counts(state)
        if self.n + 2 >= state.image_count():
            return Plan(_capped(_every(counts), ctx.max_images), None)
        return Plan(_capped(_distinct(self._images(state, counts, ctx)), ctx.max_images))

    def _images(
        self, state: CrashState, counts: list[int], ctx: PointContext
    ) -> Iterator[Deviations]:
        rng = ctx.rng()
        yield from _extremes(state)
        for _ in range(self.n):
            dev = []
            for i, c in enumerate(counts):
                if c > 1 and rng.random() < 0.5:
                    dev.append((i, rng.randrange(1, c)))
            yield tuple(dev)


class ReadGuided(Strategy):
    """Vinter's pruning: run recovery on the all-persisted image, note the lines it reads,
    and branch only on those (every other line persisted everything), plus the extremes."""

    name = "read-guided"

    def plan(self, state: CrashState, ctx: PointContext) -> Plan:
        if ctx.probe is None:
            raise InvalidArgumentError(ErrorCode.EINVAL, "read-guided exploration needs a recovery")
        counts = _counts(state)
        read = sorted(i for i in ctx.probe(state) if counts[i] > 1)

        def images() -> Iterator[Deviations]:
            yield from _extremes(state)
            for alts in itertools.product(*[range(counts[i]) for i in read]):
                yield tuple((i, o) for i, o in zip(read, alts, strict=True) if o)

        return Plan(_capped(_distinct(images()), ctx.max_images))


def _alternative_of(state: CrashState, i: int, kept: int, picks: tuple[int, ...]) -> int:
    """The alternative index of unit ``i`` whose content keeps ``kept`` write-back atoms and
    the given non-temporal picks (alternatives are deduplicated by content)."""
    from pmemsim_backends.sim import Option

    u, base = state.units[i], state.base(i)
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
        return Plan(list(dict.fromkeys(images[::-1])))


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
        return Plan(list(dict.fromkeys([(), *images])))

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

        def images() -> Iterator[Deviations]:
            for combo in itertools.product(*per_unit):
                yield tuple((i, o) for i, o in enumerate(combo) if o)

        return Plan(_capped(images(), ctx.max_images))


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
    "lazy",
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
    # (A name is no Strategy: asking the ABC would walk every strategy class, the first time
    # a process asks about a str: 81,000 instructions of a tiny log's check.)
    if type(spec) is not str and isinstance(spec, Strategy):
        return spec
    name = _PMREORDER.get(spec, spec)
    base, _, arg = name.partition(":")
    simple: dict[str, Callable[[], Strategy]] = {
        "exhaustive": Exhaustive,
        "lazy": Lazy,
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


def strategy_for(
    point: CrashPoint, default: Strategy, by_marker: Mapping[str, Strategy]
) -> Strategy:
    """The strategy of the innermost marker around ``point`` that has one, else ``default``."""
    for name in reversed(point.markers):
        s = by_marker.get(name)
        if s is not None:
            return s
    return default
