"""Exact exploration that branches only on what recovery reads (Jaaru's idea).

A crash state is a product: each unit (line) in flight independently takes one of its
alternatives, so a point with 20 lines of 3 alternatives has 3^20 images. A recovery
reads a few of them. This explorer runs recovery on an image in which every unit not yet
read holds one *representative* alternative, records what the run observed (the bytes it
read, unit by unit, in order), and branches on a unit's alternatives only where a run read
it: the other alternatives of that unit, grouped by the bytes the read saw, are each tried
in a later run *from the start*, with every unit read before it held at what that run saw.

**Why that is exact.** Recovery is deterministic and learns about the image only through
its reads (the assumptions, checked where possible, below). Two images that agree on every
byte a run read, up to any moment, make recovery do the same thing up to that moment; so
images that agree on everything one run read give that run, whole. A *read path* is such a
run together with the class of images it stands for: for every unit the run read, the
alternatives that show the bytes it saw (in every byte it read), and every alternative of
each unit it never read. Branching at a read splits the class at hand by the bytes that
read sees; re-running from the start is what makes the later reads of each part its own
(they may differ: what a run reads next depends on what it saw). The parts partition the
class, so the read paths of a crash point partition its images: their image counts sum to
the point's image count, which the explorer checks on every point it completes.

Units that no run along a path read are never branched on; reads of bytes recovery itself
wrote earlier in the run observe nothing of the image and never branch.

**The decision tree is kept across crash points.** Runs are stored as paths of a tree whose
nodes are observations (a unit's bytes read, or a field of :func:`pmemsim.current_crash`)
and whose edges are the values observed. At a crash point the explorer walks the tree with
that point's images, splitting classes at each node, and runs recovery only where the tree
has no edge yet for what an image shows: consecutive crash points that differ in a few
lines share every run that did not read those lines. The tree is the memo of a
deterministic function, so a walk that reaches a leaf needs no run.

**Detecting a broken assumption.** Inserting a run into the tree re-walks the observations
earlier runs made on the same bytes: if the same bytes lead to a different next
observation, or to a different verdict, recovery is not a function of what it read (it
reads persistent data behind pmemsim's back, or depends on time, randomness or state kept
between runs), and the explorer raises :class:`NondeterministicRecovery` with both
accounts. The first image of a check is run twice for the same reason.

The explorer is independent of how recovery is run: it needs a crash state's alternatives
(:class:`Alternatives`) and a function that runs recovery on a choice of alternatives and
reports the verdict and the observations (:class:`Outcome`). The in-process runner is
:class:`Observation` plus :func:`pmemsim.explore.recovery.run_recovery`; check-log can plug in
its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass, field
from ..digest import blake2b
from ..errors import ErrorCode, InvalidArgumentError
from ..markers import CrashInfo
from ..snapshot import Snapshot

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = [
    "Alternatives",
    "LazyExplorer",
    "NondeterministicRecovery",
    "Observation",
    "ObservedInfo",
    "Outcome",
    "Path",
    "StateAlternatives",
    "Verdict",
]

Deviations = tuple[tuple[int, int], ...]
#: A read of one unit: (medium, unit index, first byte in the unit, length, own) where bit k
#: of ``own`` says byte k of the read was written by recovery earlier in the run.
Segment = tuple[int, int, int, int, int]
#: A field of the crash info recovery looked at: ("info", field name).
InfoRead = tuple[str, str]
Event = Segment | InfoRead


class OpaqueRecovery(Exception):
    """A run read the image where the explorer cannot see (:attr:`Outcome.opaque`)."""


class NondeterministicRecovery(InvalidArgumentError):
    """Recovery gave two different accounts of the same bytes (see the module docs)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.EINVAL, message)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a run concluded, in a form that can be compared and shipped between processes.

    ``kind`` is "consistent", "inconsistent" or "hang"; ``signature`` tells distinct bugs
    apart (the exception's type and where it was raised); ``message`` is its first line.
    """

    kind: str
    signature: tuple[str, str] = ("", "")
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.kind != "consistent"

    @classmethod
    def of(cls, error: BaseException | None) -> Verdict:
        if error is None:
            return CONSISTENT
        from .report import HANG_ERRORS, signature_of

        kind = "hang" if isinstance(error, HANG_ERRORS) else "inconsistent"
        return cls(kind, signature_of(error), str(error).split("\n", 1)[0])


CONSISTENT = Verdict("consistent")


@dataclass(slots=True)
class Outcome:
    """One run of recovery: its verdict, its observations in order, and (in the process
    that ran it) the live exception."""

    verdict: Verdict
    events: list[Event]
    values: list[object]
    error: BaseException | None = None
    #: Recovery read the image some way the observation could not see (e.g. a file of the
    #: image opened with plain file I/O): the run cannot be explored lazily.
    opaque: bool = False


class Alternatives:
    """One crash state's images as the explorer sees them: units, their alternatives, and
    the bytes of units that nothing in flight touches (the same in every image)."""

    def unit_size(self, medium: int) -> int:
        raise NotImplementedError

    def unit_at(self, medium: int, index: int) -> int | None:
        """The state's unit for unit ``index`` of ``medium``, None if nothing is in flight."""
        raise NotImplementedError

    def count(self, unit: int) -> int:
        raise NotImplementedError

    def content(self, unit: int, option: int) -> bytes:
        raise NotImplementedError

    def fixed(self, medium: int, index: int) -> bytes:
        """Unit ``index`` of ``medium`` where nothing is in flight (zeros past the end)."""
        raise NotImplementedError

    def total(self) -> int:
        raise NotImplementedError


class StateAlternatives(Alternatives):
    """:class:`Alternatives` of a simulator :class:`CrashState`, and its images: built from
    the state's all-persisted pages with each unit's content computed once."""

    def __init__(self, state: CrashState) -> None:
        self.state = state
        self._units = {(u.medium_index, u.offset // u.size): i for i, u in enumerate(state.units)}
        self._counts = [len(state.units[i].options(state.base(i))) for i in range(len(state.units))]
        self._contents: dict[tuple[int, int], bytes] = {}
        self._fixed: dict[tuple[int, int], bytes] = {}
        self._bases: dict[int, Snapshot] = {}
        #: Per unit: (medium, page, offset in the page, size).
        self._where = [
            (u.medium_index, u.offset >> 12, u.offset & 4095, u.size) for u in state.units
        ]
        self._last: tuple[tuple[Deviations, int], dict[int, bytearray]] | None = None

    def unit_size(self, medium: int) -> int:
        return int(self.state.media[medium].unit)

    def unit_at(self, medium: int, index: int) -> int | None:
        return self._units.get((medium, index))

    def count(self, unit: int) -> int:
        return self._counts[unit]

    def content(self, unit: int, option: int) -> bytes:
        got = self._contents.get((unit, option))
        if got is None:
            st = self.state
            u = st.units[unit]
            got = self._contents[(unit, option)] = u.content(st.base(unit), st.option(unit, option))
        return got

    def fixed(self, medium: int, index: int) -> bytes:
        got = self._fixed.get((medium, index))
        if got is None:
            snap = self.state.snapshots[medium]
            size = self.unit_size(medium)
            off = index * size
            n = max(0, min(size, snap.size - off))
            got = snap.read(off, n) + bytes(size - n) if n else bytes(size)
            self._fixed[(medium, index)] = got
        return got

    def total(self) -> int:
        return int(self.state.image_count())

    # -- images ------------------------------------------------------------------------

    def persisted(self, medium: int = 0) -> Snapshot:
        """The all-persisted image of one medium."""
        got = self._bases.get(medium)
        if got is None:
            got = self._bases[medium] = self.state.image(()).snapshot(self.state.media[medium])
        return got

    def patched(self, deviations: Deviations, medium: int = 0) -> dict[int, bytearray]:
        """The pages of ``medium`` that the deviations change, as they are in the image
        (the last answer is kept: an image's snapshot and its key ask for the same)."""
        if self._last is not None and self._last[0] == (deviations, medium):
            return self._last[1]
        st = self.state
        where = self._where
        out: dict[int, bytearray] = {}
        for i, o in deviations:
            m, p, at, size = where[i]
            if m != medium:
                continue
            page = out.get(p)
            if page is None:
                start = st.persisted_page(p, medium)
                page = out[p] = bytearray(st.snapshots[medium].page(p) if start is None else start)
            page[at : at + size] = self.content(i, o)
        self._last = ((deviations, medium), out)
        return out

    def snapshot(self, deviations: Deviations, medium: int = 0) -> Snapshot:
        """The image with those deviations, as a snapshot a fresh set can map."""
        base = self.persisted(medium)
        if not deviations:
            return base
        pages = base.pages
        changes = self.patched(deviations, medium)
        updated = getattr(pages, "updated", None)
        new = updated(changes) if updated is not None else {**pages, **changes}
        return Snapshot(
            base.label,
            base.size,
            new,
            base.loader,
            base.source_ident,
            base.device_id,
            base.usc,
            base.badblocks,
            base.unsafe_shutdown,
        )


def _masked(data: bytes, own: int) -> bytes:
    """The bytes of a read that came from the image (recovery's own bytes blanked)."""
    if not own:
        return data
    return bytes(0 if own >> k & 1 else b for k, b in enumerate(data))


# -- observing a run ---------------------------------------------------------------------------


class Observation:
    """What one run of recovery observed, fed by the simulator's taps.

    ``medium_of`` maps a simulator medium to the crash state's medium index (None: not part
    of the image, not observed). Reads are cut into unit segments; bytes recovery stored
    earlier in the run are marked as its own. ``track_writes=False`` treats every byte read
    as the image's (more branching, never less: used where writes cannot be followed, e.g.
    when recovery itself is crashed). ``steps`` bounds the reads and stores of a run.
    """

    __slots__ = ("_medium_of", "_sizes", "_written", "events", "steps", "track_writes", "values")

    def __init__(
        self,
        sizes: Sequence[int],
        medium_of: Callable[[Any], int | None],
        *,
        track_writes: bool = True,
        steps: int | None = None,
    ) -> None:
        self._sizes = sizes
        self._medium_of = medium_of
        self._written: dict[tuple[int, int], int] = {}
        self.track_writes = track_writes
        self.steps = steps
        self.events: list[Event] = []
        self.values: list[object] = []

    def _step(self) -> None:
        if self.steps is not None:
            self.steps -= 1
            if self.steps < 0:
                from .report import RecoveryHang

                raise RecoveryHang("recovery exceeded its step budget (reads and stores)")

    def on_read(self, medium: Any, off: int, n: int) -> None:
        self._step()
        m = self._medium_of(medium)
        if m is None or n <= 0:
            return
        size = self._sizes[m]
        end = off + n
        idx = off // size
        while off < end:
            start = off - idx * size
            take = min(size - start, end - off)
            own = self._written.get((m, idx), 0) >> start & ((1 << take) - 1)
            if own != (1 << take) - 1:  # a read of only its own bytes observes nothing
                self.events.append((m, idx, start, take, own))
            off += take
            idx += 1

    def on_op(self, op: Any) -> None:
        if op.kind != "store":
            return
        self._step()
        if not self.track_writes:
            return
        m = self._medium_of(op.medium)
        if m is None:
            return
        size = self._sizes[m]
        off, end = op.offset, op.offset + op.length
        while off < end:
            idx = off // size
            start = off - idx * size
            take = min(size - start, end - off)
            key = (m, idx)
            self._written[key] = self._written.get(key, 0) | (((1 << take) - 1) << start)
            off += take

    def on_info(self, name: str, value: object) -> None:
        self.events.append(("info", name))
        self.values.append(value)


class ObservedInfo(CrashInfo):
    """The crash info recovery sees during a lazy run: reading a field is an observation,
    so recovery that asks which crash point it is at is explored per point, and recovery
    that asks nothing shares runs across points."""

    __slots__ = ("_observation",)

    def __init__(self, info: CrashInfo, observation: Observation) -> None:
        super().__init__(info.point, info.kind, info.markers, info.faults)
        object.__setattr__(self, "_observation", observation)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name in _INFO_FIELDS:
            object.__getattribute__(self, "_observation").on_info(name, value)
        return value


_INFO_FIELDS = frozenset({"point", "kind", "markers", "faults"})


# -- the decision tree -------------------------------------------------------------------------


class _Node:
    __slots__ = ("children", "event", "leaf", "verdict")

    def __init__(self) -> None:
        #: What the runs that got here observed next (None: not known yet, or a leaf).
        self.event: Event | None = None
        self.children: dict[object, _Node] = {}
        #: The verdict of the runs that ended here.
        self.verdict: Verdict | None = None
        #: A leaf's identity: a digest of the values observed on the way (the same in any
        #: process that explores the same check).
        self.leaf = b""


@dataclass(slots=True)
class Path:
    """One read path at a crash point: the representative image (deviations), how many of
    the point's images it stands for, the verdict, and ``leaf``, the identity of the run (a
    read path reached at several points is one run). ``error`` is the live exception when
    the path was run just now in this process; ``ran`` says whether it needed a run."""

    deviations: Deviations
    images: int
    verdict: Verdict
    leaf: bytes
    ran: bool
    error: BaseException | None = None
    #: The class: for each unit the path read, the alternatives it stands for (ascending;
    #: the first is the representative's). Units not listed: every alternative.
    classes: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class Walk:
    """What exploring one crash state did."""

    paths: int = 0
    covered: int = 0
    total: int = 0
    runs: int = 0
    complete: bool = True
    #: Stopped by the limit on paths (not by the deadline).
    limited: bool = False


#: (parent node, edge value, constraints, images the class stands for). The constraints map
#: a unit to the alternatives still in the class, ascending; the first is the representative.
_Item = tuple[_Node, object, dict[int, tuple[int, ...]], int]
Run = Callable[[Deviations], Outcome]


@dataclass
class LazyExplorer:
    """Explores crash states lazily, keeping one decision tree per *context*: runs are
    shared between states of the same context (e.g. the power-failure states of one check;
    unsafe shutdowns, whose recovery sees other device counts, get their own)."""

    roots: dict[object, _Node] = field(default_factory=dict)
    #: Contexts whose first run was repeated to check determinism.
    _probed: set[object] = field(default_factory=set)

    def explore(
        self,
        alts: Alternatives,
        info: CrashInfo,
        run: Run,
        *,
        context: object = (),
        deadline: float | None = None,
        limit: int | None = None,
        walk: Walk | None = None,
    ) -> Iterator[Path]:
        """Every read path of the state, depth first, representative images first.

        ``run(deviations)`` runs recovery on that image. Stops early (``walk.complete`` is
        False) when ``deadline`` (``time.monotonic()``) passes, or after ``limit`` paths.
        """
        w = walk if walk is not None else Walk()
        total = alts.total()
        w.total = total
        root = self.roots.get(context)
        if root is None:
            root = self.roots[context] = _Node()
        start = _Node()
        start.children[None] = root
        stack: list[_Item] = [(start, None, {}, total)]
        while stack:
            parent, value, cons, images = stack.pop()
            node = parent.children.get(value)
            if node is None or (node.event is None and node.verdict is None):
                if deadline is not None and w.runs and time.monotonic() > deadline:
                    w.complete = False
                    return
                dev = _representative(cons)
                outcome = run(dev)
                w.runs += 1
                if outcome.opaque:
                    raise OpaqueRecovery(dev)
                self._insert(root, context, alts, dev, outcome)
                if context not in self._probed:
                    self._probed.add(context)
                    self._insert(root, context, alts, dev, run(dev))
                node = parent.children.get(value)
                if node is None:
                    raise NondeterministicRecovery(
                        "recovery did not read again what it read before on the same image: "
                        "it is not deterministic, or it reads persistent data outside pmemsim"
                    )
                fresh: Outcome | None = outcome
            else:
                fresh = None
            # Follow the class down the tree, splitting it where a read tells units apart.
            while node.event is not None:
                event = node.event
                if event[0] == "info":
                    value = getattr(info, event[1])
                    child = node.children.get(value)
                    if child is None:
                        stack.append((node, value, cons, images))
                        break
                    node = child
                    continue
                m, idx, begin, length, own = event  # type: ignore[misc]
                u = alts.unit_at(m, idx)
                if u is None:
                    value = _masked(alts.fixed(m, idx)[begin : begin + length], own)
                else:
                    options = cons.get(u)
                    if options is None:
                        options = tuple(range(alts.count(u)))
                    parts: dict[bytes, list[int]] = {}
                    for o in options:
                        key = _masked(alts.content(u, o)[begin : begin + length], own)
                        parts.setdefault(key, []).append(o)
                    first, *others = parts.items()
                    if others:
                        n = len(options)
                        for key, opts in reversed(others):
                            split = {**cons, u: tuple(opts)}
                            stack.append((node, key, split, images // n * len(opts)))
                        cons = {**cons, u: tuple(first[1])}
                        images = images // n * len(first[1])
                    value = first[0]
                child = node.children.get(value)
                if child is None:
                    stack.append((node, value, cons, images))
                    break
                node = child
            else:
                assert node.verdict is not None
                w.paths += 1
                w.covered += images
                yield Path(
                    _representative(cons),
                    images,
                    node.verdict,
                    node.leaf,
                    fresh is not None,
                    fresh.error if fresh is not None else None,
                    cons,
                )
                if stack and limit is not None and w.paths >= limit:
                    w.complete = False
                    w.limited = True
                    return
                if stack and deadline is not None and time.monotonic() > deadline:
                    w.complete = False
                    return
        if w.covered != total:  # pragma: no cover - a bug of the explorer, not the user's
            raise AssertionError(f"read paths cover {w.covered} of {total} images")

    def _insert(
        self,
        root: _Node,
        context: object,
        alts: Alternatives,
        dev: Deviations,
        out: Outcome,
    ) -> None:
        """File one run under the tree (checking it against what is already there)."""
        choice = dict(dev)
        node = root
        values = iter(out.values)
        raws = [repr(context).encode()]  # the leaf's digest input, hashed once at the end
        unit_at, fixed, content = alts.unit_at, alts.fixed, alts.content
        for k, event in enumerate(out.events):
            if node.verdict is not None:
                raise NondeterministicRecovery(
                    f"recovery read more than before on the same bytes (read {k + 1}, "
                    f"{_describe(event)}, after ending with {node.verdict.kind} before)"
                )
            if node.event is None:
                node.event = event
            elif node.event != event:
                raise NondeterministicRecovery(
                    f"recovery read differently on the same bytes: read {k + 1} was "
                    f"{_describe(node.event)} before, {_describe(event)} now"
                )
            if event[0] == "info":
                value: object = next(values)
                raw = value if isinstance(value, bytes) else repr(value).encode()
            else:
                m, idx, begin, length, own = event  # type: ignore[misc]
                u = unit_at(m, idx)
                data = fixed(m, idx) if u is None else content(u, choice.get(u, 0))
                raw = data[begin : begin + length]
                if own:
                    raw = _masked(raw, own)
                value = raw
            raws.append(len(raw).to_bytes(4, "little"))
            raws.append(raw)
            child = node.children.get(value)
            if child is None:
                child = node.children[value] = _Node()
            node = child
        if node.event is not None:
            raise NondeterministicRecovery(
                f"recovery read less than before on the same bytes: it ended with "
                f"{out.verdict.kind} where it read {_describe(node.event)} before"
            )
        if node.verdict is None:
            node.verdict = out.verdict
            node.leaf = blake2b(b"".join(raws), digest_size=16).digest()
        elif node.verdict != out.verdict:
            raise NondeterministicRecovery(
                f"recovery gave two verdicts on the same bytes: {_verdict(node.verdict)} "
                f"before, {_verdict(out.verdict)} now"
            )


def _representative(cons: Mapping[int, tuple[int, ...]]) -> Deviations:
    return tuple(sorted((u, opts[0]) for u, opts in cons.items() if opts[0]))


def _describe(event: Event) -> str:
    if event[0] == "info":
        return f"current_crash().{event[1]}"
    m, idx, begin, length, _ = event  # type: ignore[misc]
    return f"{length} byte(s) at +{begin} of unit {idx} of medium {m}"


def _verdict(v: Verdict) -> str:
    if not v.failed:
        return "consistent"
    return f"{v.kind} ({v.signature[0]} at {v.signature[1]}: {v.message})"
