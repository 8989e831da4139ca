"""Random operation sequences run on two backends side by side, compared step by step.

Each side has its own files (ext4 and tmpfs), anonymous memory and a set placing part maps
first-fit into a reservation of its own, so that an address is comparable as its offset from
the reservation's start ("logical" below). Every step runs the same call on both sides and
compares what came back (a value, or the error's class, PMEMSET code and libpmem2 code), the
events fired (addresses made logical, sources named) and, after the step, the part maps and
their whole content. Misuse is drawn on purpose: unaligned offsets and lengths, addresses
outside the part maps, invalid flags, a handle still alive at removal.

The machine runs the simulator against libpmem2 (skipped without it); the simulator against
itself as a control, and against two deliberately broken simulators to show that it notices.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from differential import (
    PAGE,
    error_key,
    event_key,
    make_backend,
    real_unavailable_reason,
)
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim.backend import Pmem2Failure

F = pm.MemFlag
G = pm.Granularity
RESERVATION = 8 * PAGE
SOURCES = ("ext4", "tmpfs", "fixed", "temporary", "anon")
FLAGS = [
    F.NONE,
    F.NODRAIN,
    F.NONTEMPORAL | F.NODRAIN,
    F.TEMPORAL,
    F.WC,
    F.NOFLUSH,
    F.NOFLUSH | F.NONTEMPORAL,
    1 << 6,  # not a flag: EINVAL
]
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: An address: mostly (index of a part map, offset from its start, which may run off either
#: end), sometimes any logical address in or around the reservation.
Place = tuple[int, int]
addresses = st.one_of(
    st.tuples(st.integers(0, 3), st.integers(0, PAGE - 1)),
    st.tuples(st.integers(0, 3), st.integers(0, 300)),
    st.tuples(st.integers(0, 3), st.integers(-64, 2 * PAGE + 64)),
    st.tuples(st.just(-1), st.integers(-PAGE, RESERVATION + PAGE)),
)
lengths = st.one_of(
    st.integers(0, 64), st.integers(0, 300), st.sampled_from([PAGE - 1, PAGE, 2 * PAGE + 5])
)
flags = st.sampled_from(FLAGS)

Outcome = tuple[Any, ...]


class Side:
    """One backend's set, reservation and sources; addresses are logical in its API."""

    def __init__(self, backend: pm.Backend, granularity: pm.Granularity) -> None:
        self.backend = backend
        self.dirs = [
            Path(tempfile.mkdtemp(prefix="pmemsim-machine-")),
            Path(tempfile.mkdtemp(prefix="pmemsim-machine-", dir=_shm())),
        ]
        ext4, tmpfs = self.dirs
        (tmpfs / "pool").write_bytes(bytes(range(256)) * (2 * PAGE // 256))
        with open(ext4 / "fixed", "wb") as f:
            f.truncate(2 * PAGE)
        self.sources = {
            "ext4": pm.Source.from_file(ext4 / "pool", pm.SourceFlag.CREATE_ALWAYS),
            "tmpfs": pm.Source.from_file(tmpfs / "pool"),
            "fixed": pm.Source.from_file(ext4 / "fixed", pm.SourceFlag.DO_NOT_GROW),
            "temporary": pm.Source.temporary(tmpfs),
            "anon": pm.Source.anonymous(2 * PAGE),
        }
        self.names = {id(s): name for name, s in self.sources.items()}
        self.reservation = pm.Reservation(RESERVATION, backend=backend)
        self.base = self.reservation.address
        self.events: list[Any] = []
        self.set = pm.Set(
            pm.Config(
                granularity=granularity,
                backend=backend,
                reservation=self.reservation,
                event_callback=lambda s, e, a: self.events.append(e),
            )
        )

    def at(self, logical: int) -> int:
        return self.base + logical

    def logical(self, address: int) -> int:
        return address - self.base

    def take_events(self) -> list[tuple[Any, ...]]:
        out = [event_key(e, self.logical, lambda s: self.names[id(s)]) for e in self.events]
        self.events.clear()
        return out

    def layout(self) -> list[tuple[int, int]]:
        return [(self.logical(d.address), d.size) for d in self.set.part_maps()]

    def contents(self) -> list[bytes]:
        return [self.set.read(d.address, d.size) for d in self.set.part_maps()]

    def close(self) -> None:
        self.set.close()
        for s in self.sources.values():
            s.close()
        self.reservation.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def _shm() -> str | None:
    import os

    return "/dev/shm" if os.path.isdir("/dev/shm") else None


class DifferentialMachine(RuleBasedStateMachine):
    """The reference side (a simulator like this machine) against ``other``."""

    #: Makes the backend compared with the simulator (set by each test).
    other: ClassVar[Callable[[], pm.Backend]]

    def __init__(self) -> None:
        super().__init__()
        self.sides: list[Side] = []

    @initialize(
        # PAGE (what every source offers here) most often; the finer ones make files fail.
        granularity=st.sampled_from([G.PAGE] * 6 + [G.CACHE_LINE, G.BYTE]),
        first=st.sampled_from(SOURCES),
        second=st.sampled_from(SOURCES),
        length=st.sampled_from([PAGE, 2 * PAGE]),
    )
    def start(self, granularity: pm.Granularity, first: str, second: str, length: int) -> None:
        self.sides = [Side(make_backend("sim"), granularity), Side(type(self).other(), granularity)]
        self._map(first, 0, length, pm.Coalescing.NONE)
        self._map(second, 0, PAGE, pm.Coalescing.NONE)

    def teardown(self) -> None:
        for side in self.sides:
            side.close()

    def both(self, call: Callable[[Side], Any]) -> Any:
        """Run ``call`` on both sides; their results (or failures) and events must match."""
        outcomes: list[Outcome] = []
        for side in self.sides:
            try:
                outcomes.append(("ok", call(side)))
            except Exception as exc:
                outcomes.append(("error", *error_key(exc)))
        ref, other = outcomes
        assert ref == other, f"reference {ref} but other {other}"
        ref_events, other_events = (side.take_events() for side in self.sides)
        assert ref_events == other_events
        return ref

    def place(self, where: Place) -> int:
        """The logical address of a drawn place (the layouts are equal on both sides)."""
        index, offset = where
        layout = self.sides[0].layout()
        if index < 0 or not layout:
            return offset
        return layout[index % len(layout)][0] + offset

    # -- rules -------------------------------------------------------------------------

    @rule(
        source=st.sampled_from(SOURCES),
        offset=st.sampled_from([0, PAGE]),
        length=st.sampled_from([PAGE, 2 * PAGE, 0]),
        coalescing=st.sampled_from(list(pm.Coalescing)),
    )
    def map_part(self, source: str, offset: int, length: int, coalescing: pm.Coalescing) -> None:
        self._map(source, offset, length, coalescing)

    @rule(
        source=st.sampled_from(SOURCES),
        offset=st.sampled_from([100, PAGE + 1, 2 * PAGE, 3 * PAGE]),
        length=st.sampled_from([0, 100, PAGE, 3 * PAGE]),
        coalescing=st.sampled_from(list(pm.Coalescing)),
    )
    def map_misuse(self, source: str, offset: int, length: int, coalescing: pm.Coalescing) -> None:
        """Unaligned, past the end, or beyond a file that must not grow."""
        self._map(source, offset, length, coalescing)

    def _map(self, source: str, offset: int, length: int, coalescing: pm.Coalescing) -> None:
        def call(side: Side) -> tuple[int, int]:
            side.set.coalescing = coalescing
            d = side.set.map(pm.Part(side.sources[source], offset, length))
            return side.logical(d.address), d.size

        self.both(call)

    # Removal needs two part maps, so that a set is seldom left empty for long.
    @precondition(lambda self: len(self.sides[0].layout()) > 1)
    @rule(index=st.integers(0, 4), hold_another=st.booleans())
    def remove_part_map(self, index: int, hold_another: bool) -> None:
        def call(side: Side) -> tuple[int, int] | None:
            s = side.set
            pmap = s.first_part_map()
            for _ in range(index):
                if pmap is None:
                    break
                nxt = s.next_part_map(pmap)
                pmap.drop()
                pmap = nxt
            if pmap is None:
                return None
            other = s.part_map_by_address(pmap.address) if hold_another else None
            try:
                where = (side.logical(pmap.address), pmap.size)
                s.remove_part_map(pmap)
                return where
            finally:
                pmap.drop()
                if other is not None:
                    other.drop()

        self.both(call)

    @rule(addr=addresses, length=lengths)
    def remove_range(self, addr: Place, length: int) -> None:
        a = self.place(addr)
        self.both(lambda side: side.set.remove_range(side.at(a), length))

    @rule(addr=addresses, data=st.binary(max_size=300))
    def store(self, addr: Place, data: bytes) -> None:
        a = self.place(addr)
        self.both(lambda side: side.set.store(side.at(a), data))

    @rule(addr=addresses, data=st.binary(max_size=600), f=flags)
    def memcpy(self, addr: Place, data: bytes, f: int) -> None:
        a = self.place(addr)
        self.both(lambda side: side.set.memcpy(side.at(a), data, flags=f))

    @rule(dest=addresses, src=addresses, length=lengths, f=flags, copy=st.booleans())
    def move(self, dest: Place, src: Place, length: int, f: int, copy: bool) -> None:
        d, s = self.place(dest), self.place(src)

        def call(side: Side) -> None:
            op = side.set.memcpy if copy else side.set.memmove
            op(side.at(d), side.at(s), length, f)

        self.both(call)

    @rule(addr=addresses, value=st.integers(0, 256), length=lengths, f=flags)
    def memset(self, addr: Place, value: int, length: int, f: int) -> None:
        a = self.place(addr)
        self.both(lambda side: side.set.memset(side.at(a), value, length, f))

    @rule(op=st.sampled_from(["flush", "persist", "deep_flush"]), addr=addresses, length=lengths)
    def flush(self, op: str, addr: Place, length: int) -> None:
        a = self.place(addr)
        self.both(lambda side: getattr(side.set, op)(side.at(a), length))

    @rule()
    def drain(self) -> None:
        self.both(lambda side: side.set.drain())

    @rule(addr=addresses, length=lengths)
    def read(self, addr: Place, length: int) -> None:
        a = self.place(addr)
        self.both(lambda side: side.set.read(side.at(a), length))

    @rule(addr=addresses)
    def part_map_by_address(self, addr: Place) -> None:
        a = self.place(addr)

        def call(side: Side) -> tuple[int, int]:
            with side.set.part_map_by_address(side.at(a)) as pmap:
                return side.logical(pmap.address), pmap.size

        self.both(call)

    # -- after every step --------------------------------------------------------------

    @invariant()
    def same_part_maps_and_content(self) -> None:
        if self.sides:
            self.both(lambda side: (side.layout(), side.contents()))
            self.both(lambda side: side.set.granularity)


def run_against(other: Callable[[], pm.Backend], shrink: bool = True) -> None:
    machine = type("Machine", (DifferentialMachine,), {"other": staticmethod(other)})
    chosen = SETTINGS if shrink else settings(SETTINGS, phases=[Phase.generate])
    run_state_machine_as_test(machine, settings=chosen)  # type: ignore[arg-type]


def test_simulator_against_libpmem2() -> None:
    reason = real_unavailable_reason()
    if reason:
        pytest.skip(f"real backend unavailable: {reason}")
    run_against(lambda: make_backend("real"))


def test_simulator_against_itself() -> None:
    """The control: with nothing different, no sequence may tell the two sides apart."""
    run_against(lambda: make_backend("sim"))


# -- the machine notices differences (mutants of the simulator) ------------------------


class _WrongCopy(SimBackend):
    """memmove (what memcpy, memmove and memset come down to) loses its last byte."""

    def map(self, *args: Any, **kw: Any) -> Any:
        m = super().map(*args, **kw)
        inner = m.memmove
        m.memmove = (
            lambda dest, src, flags, caller: inner(  # type: ignore[method-assign]
                dest, src[:-1], flags, caller
            )
        )
        return m


class _WrongCode(SimBackend):
    """An unaligned offset is reported as a range beyond the source."""

    def map(self, source: Any, offset: int, *args: Any, **kw: Any) -> Any:
        if offset % PAGE:
            raise Pmem2Failure(pm.Pmem2Code.MAP_RANGE, "wrong code on purpose")
        return super().map(source, offset, *args, **kw)


@pytest.mark.parametrize("mutant", [_WrongCopy, _WrongCode])
def test_machine_finds_a_broken_backend(mutant: type[SimBackend]) -> None:
    def other() -> pm.Backend:
        sim = make_backend("sim")
        assert isinstance(sim, SimBackend)
        return mutant(sim.granularity, anonymous_granularity=sim.anonymous_granularity)

    with pytest.raises(AssertionError, match="reference"):
        run_against(other, shrink=False)  # finding it is the point; shrinking takes seconds
