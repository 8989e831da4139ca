"""The durability self-check compares only what changed since the previous crash point; these
tests plant simulator bugs and check that it catches each one exactly where comparing every
durable byte at every point does, at every granularity."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pmemsim_backends.sim.medium import Medium

import pmemsim as pm
import pmemsim.explore.trace as trace_mod
from pmemsim.explore import record
from pmemsim.explore.durability import DurabilityModel, DurabilityViolation

SIZE = 16384  # four pages: a bug can hit a page the current epoch never touched
FLAG_SETS = [0, pm.MemFlag.NONTEMPORAL, pm.MemFlag.TEMPORAL, pm.MemFlag.NOFLUSH]


class WholePoolModel(DurabilityModel):
    """The reference: every page either side holds compared at every crash point, through
    the public guaranteed image (what the self-check did before it became incremental)."""

    def verify(self, state: Any, where: str, *, before_barrier: bool) -> None:
        if not before_barrier:
            self.settle()
        image = state.guaranteed_image()
        for mi, medium in enumerate(state.media):
            hit = self.media.get(id(medium))
            pages = set(state.snapshots[mi].pages)
            if hit is not None and hit.medium is medium:
                pages.update(hit.pages)
            snap = image.snapshot(medium)
            for page in sorted(pages):
                if snap.page(page) != self.expected_page(medium, page):
                    raise DurabilityViolation(
                        f"{where}: page {page} differs; this is a pmemsim bug"
                    )


class PagesOnly(DurabilityModel):
    """The incremental page comparison alone (no comparison of the stores in flight)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.check_in_flight = False


def program(seed: int) -> Callable[[pm.View], None]:
    """A seeded random program; each third of it starts with overlapping non-temporal and
    write-back stores, so that every kind of fold happens at every granularity."""
    rng = random.Random(seed)
    steps = [
        (rng.randrange(6), rng.randrange(SIZE - 300), rng.randrange(1, 256), rng.choice(FLAG_SETS))
        for _ in range(30)
    ]

    def workload(v: pm.View) -> None:
        for i, (op, off, n, flags) in enumerate(steps):
            if i % 10 == 0:
                nt = pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN
                v.memcpy(off, bytes([n]) * 16, nt)
                v.memcpy(off + 8, bytes([n ^ 0xFF]) * 16, nt)
                v.write(off + 100, bytes([n]) * 16)
                v.write(off + 104, bytes([n ^ 0xFF]) * 16)
                v.persist(off, 256)
            if op == 0:
                v.write(off, bytes([n]) * (n % 20 + 1))
            elif op == 1:
                v.memcpy(off, bytes([n]) * n, flags | (pm.MemFlag.NODRAIN if n % 2 else 0))
            elif op == 2:
                v.flush(off, n)
            elif op == 3:
                v.drain()
            elif op == 4:
                v.deep_flush(off, n)
            else:
                v.persist(off, n)

    return workload


# -- planted bugs: each breaks the simulator once, at its ``when``-th chance ---------------------


def _drop(when: int) -> Iterator[None]:
    """Forgets one write to the media: a guaranteed store is lost."""
    real = Medium.write_media
    calls = [0]

    def write_media(self: Medium, off: int, data: Any) -> None:
        calls[0] += 1
        if calls[0] != when:
            real(self, off, data)

    return _patched("write_media", write_media)


def _misplace(when: int) -> Iterator[None]:
    """Folds one store into the media a line further on than it belongs."""
    real = Medium.write_media
    calls = [0]

    def write_media(self: Medium, off: int, data: Any) -> None:
        calls[0] += 1
        real(self, min(off + 64, self.size - len(data)) if calls[0] == when else off, data)

    return _patched("write_media", write_media)


def _corrupt_far(when: int) -> Iterator[None]:
    """With one fold into another page than the first fold's, also garbles what the first
    fold wrote (durable long ago, in a page the current epoch does not touch)."""
    real = Medium.write_media
    first: list[tuple[int, int]] = []
    calls = [0]

    def write_media(self: Medium, off: int, data: Any) -> None:
        real(self, off, data)
        if not first:
            first.append((off, len(data)))
            return
        start, n = first[0]
        if off >> 12 != start >> 12 and (off + len(data) - 1) >> 12 != start >> 12:
            calls[0] += 1
            if calls[0] == when:
                real(self, start, bytes(~b & 0xFF for b in self.read_media(start, n)))

    return _patched("write_media", write_media)


def _forget(when: int) -> Iterator[None]:
    """Loses one write-back store as it is issued: loads see it, but it is neither in flight
    nor in the media (at BYTE: it never reaches the media it is durable in)."""
    real_wb, real_store = Medium.store_wb, Medium.store
    calls = [0]

    def store_wb(self: Medium, off: int, data: bytes, code: Any, lasti: int) -> None:
        real_wb(self, off, data, code, lasti)
        calls[0] += 1
        if calls[0] == when:
            self.pending.pop()

    def store(self: Medium, off: int, data: bytes, frame: Any, nontemporal: bool) -> None:
        if not self.wb_durable or nontemporal:
            real_store(self, off, data, frame, nontemporal)
            return
        calls[0] += 1
        if calls[0] == when:
            self._write_visible(off, data)
        else:
            real_store(self, off, data, frame, nontemporal)

    @contextmanager
    def both() -> Iterator[None]:
        with _patched("store_wb", store_wb), _patched("store", store):
            yield

    return both()


def _unfold(when: int) -> Iterator[None]:
    """One fence (or msync, clflush) makes nothing durable: flushed stores stay in flight."""
    real = Medium.resolve
    calls = [0]

    def resolve(self: Medium, flushes: Any, fence_nt: bool, lint: Any) -> None:
        calls[0] += 1
        if calls[0] != when:
            real(self, flushes, fence_nt, lint)

    return _patched("resolve", resolve)


def _wrong_order(when: int) -> Iterator[None]:
    """One fold writes its records to the media in reverse program order (older over newer)."""
    real_resolve, real_write = Medium.resolve, Medium.write_media
    calls = [0]
    held: list[tuple[int, bytes]] | None = None

    def write_media(self: Medium, off: int, data: Any) -> None:
        if held is None:
            real_write(self, off, data)
        else:
            held.append((off, bytes(data)))

    def resolve(self: Medium, flushes: Any, fence_nt: bool, lint: Any) -> None:
        nonlocal held
        calls[0] += 1
        if calls[0] != when:
            real_resolve(self, flushes, fence_nt, lint)
            return
        held = []
        try:
            real_resolve(self, flushes, fence_nt, lint)
        finally:
            writes, held = held, None
        for off, data in reversed(writes):
            real_write(self, off, data)

    @contextmanager
    def both() -> Iterator[None]:
        with _patched("resolve", resolve), _patched("write_media", write_media):
            yield

    return both()


@contextmanager
def _patched(name: str, fn: Any) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setattr(Medium, name, fn)
    try:
        yield
    finally:
        mp.undo()


BUGS = {
    "drop": _drop,
    "misplace": _misplace,
    "corrupt_far": _corrupt_far,
    "forget": _forget,
    "unfold": _unfold,
    "wrong_order": _wrong_order,
}


def first_violation(
    workload: Callable[[pm.View], None],
    granularity: pm.Granularity,
    model: type[DurabilityModel],
    bug: Callable[[int], Any],
    when: int,
    monkeypatch: pytest.MonkeyPatch,
) -> int | None:
    monkeypatch.setattr(trace_mod, "DurabilityModel", model)
    try:
        with bug(when):
            record(workload, size=SIZE, granularity=granularity, crash_points="barriers")
    except DurabilityViolation as exc:
        found = re.search(r"crash point (\d+)", str(exc))
        assert found is not None
        return int(found.group(1))
    finally:
        monkeypatch.undo()
    return None


@pytest.mark.parametrize("granularity", list(pm.Granularity))
@pytest.mark.parametrize("bug", list(BUGS))
def test_incremental_check_catches_planted_bugs_where_the_whole_pool_check_does(
    granularity: pm.Granularity, bug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    caught = 0
    for seed in range(12):
        when = 1 + seed % 3
        workload = program(seed)
        full = first_violation(workload, granularity, WholePoolModel, BUGS[bug], when, monkeypatch)
        fast = first_violation(workload, granularity, PagesOnly, BUGS[bug], when, monkeypatch)
        assert fast == full, f"seed {seed}: whole-pool check at {full}, incremental at {fast}"
        both = first_violation(workload, granularity, DurabilityModel, BUGS[bug], when, monkeypatch)
        # Comparing the stores in flight too only ever finds a bug sooner.
        assert full is None or (both is not None and both <= full)
        caught += fast is not None
    # The planted bug must actually be caught (a check that never fires would pass above).
    assert caught >= 3, f"{bug} caught only {caught} times at {granularity.name}"


def _two_pages(v: pm.View) -> None:
    v.u64[0] = 1  # page 0
    v.persist(0, 8)
    v.u64[1024] = 2  # page 2
    v.persist(8192, 8)
    v.u64[1025] = 3
    v.persist(8200, 8)


@pytest.mark.parametrize("granularity", list(pm.Granularity))
@pytest.mark.parametrize("bug", ["forget", "corrupt_far"])
def test_a_bug_in_a_page_only_one_side_changed_is_caught(
    granularity: pm.Granularity, bug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "forget": only the model changed page 2 (the simulator never kept the store);
    "corrupt_far": only the simulator changed page 0 (the model touched page 2)."""
    for when in (1, 2) if bug == "corrupt_far" else (2, 3):
        full = first_violation(
            _two_pages, granularity, WholePoolModel, BUGS[bug], when, monkeypatch
        )
        fast = first_violation(_two_pages, granularity, PagesOnly, BUGS[bug], when, monkeypatch)
        assert full is not None and fast == full


@pytest.mark.parametrize("granularity", list(pm.Granularity))
@pytest.mark.parametrize("flush", ["clwb", "clflush"])
def test_a_correct_simulator_passes_both_checks(
    granularity: pm.Granularity, flush: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pmemsim_backends.sim import SimBackend

    for seed in range(12):
        for model in (WholePoolModel, DurabilityModel, PagesOnly):
            monkeypatch.setattr(trace_mod, "DurabilityModel", model)
            sim = SimBackend(granularity, flush_instruction=flush)
            record(program(seed), size=SIZE, granularity=granularity, backend=sim)
            monkeypatch.undo()


def test_frozen_pages_cannot_change_in_place() -> None:
    """The incremental check relies on the simulator replacing, never editing, a page a crash
    state holds: the pages are frozen into bytes, so an edit in place fails loudly."""

    def workload(v: pm.View) -> None:
        v.u64[0] = 1
        v.persist(0, 8)
        v.u64[1] = 2
        v.persist(8, 8)

    trace = record(workload)
    page = trace.points[0].state.snapshots[0].pages[0]
    assert type(page) is bytes


def test_the_check_compares_only_pages_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work per crash point follows what changed: one page per epoch, however many the pool
    holds durable data in."""
    from pmemsim.explore import durability

    compared: list[int] = []
    real = durability._Medium.expected

    def counting(self: Any, p: int) -> Any:
        compared.append(p)
        return real(self, p)

    monkeypatch.setattr(durability._Medium, "expected", counting)

    def workload(v: pm.View) -> None:
        for p in range(64):  # durable data in 64 pages
            v.u64[p * 512] = p + 1
            v.persist(p * 4096, 8)
        for i in range(100):  # then 100 epochs in page 5 only
            v.u64[5 * 512 + 1] = i
            v.persist(5 * 4096 + 8, 8)

    points = record(workload, size=64 * 4096).point_count
    # Per point: the page its epoch wrote (in flight), that page again once durable, and
    # the model's copy of it to write: a few, never the 64 pages holding durable data.
    assert 64 <= len(compared) <= 3 * points
    assert points == 64 + 100 + 1


def test_a_cleared_bad_block_is_followed_by_the_model(tmp_path: Any) -> None:
    """Clearing a bad block zeroes durable data without any store: the model hears of it (an
    "erase" from the medium), so a correct simulator passes and the operations exclude it."""
    from pmemsim_backends.sim import SimBackend

    from pmemsim.explore.trace import record_run

    pool = tmp_path / "pool"
    pool.write_bytes(b"\x11" * 8192)

    def run(sim: SimBackend, end: Callable[[], None]) -> None:
        src = pm.Source.from_file(pool)
        with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim)) as s:
            v = s.view(s.map(pm.Part(src, 0, 8192)))
            v.u64[64] = 7
            v.persist(512, 8)
            src.clear_badblock(sim.inject_badblock(src, 512, 512))
            v.u64[0] = 1
            v.persist(0, 8)
            end()
        src.close()

    trace = record_run(run, SimBackend(), keep_ops=True)
    assert "erase" not in {op.kind for op in trace.ops}
    assert trace.points[-1].state.snapshots[0].page(0)[512:1024] == bytes(512)


# -- the stores in flight ----------------------------------------------------------------------


def _reorder_atoms(when: int) -> Iterator[None]:
    """Crash states list a unit's write-back atoms newest first: an image may keep a later
    store of a line without an earlier one (the guaranteed image is still right)."""
    from pmemsim_backends.sim import images

    real = images.collect_units

    def collect_units(machine: Any, medium: Any, mi: int) -> Any:
        units = real(machine, medium, mi)
        for u in units.values():
            u.wb.reverse()
        return units

    mp = pytest.MonkeyPatch()
    mp.setattr(images, "collect_units", collect_units)

    @contextmanager
    def patched() -> Iterator[None]:
        try:
            yield
        finally:
            mp.undo()

    return patched()


def _drop_atom(when: int) -> Iterator[None]:
    """Crash states forget the last atom in flight of each unit: no image holds it."""
    from pmemsim_backends.sim import images

    real = images.collect_units

    def collect_units(machine: Any, medium: Any, mi: int) -> Any:
        units = real(machine, medium, mi)
        for u in units.values():
            if u.wb:
                u.wb.pop()
        return units

    mp = pytest.MonkeyPatch()
    mp.setattr(images, "collect_units", collect_units)

    @contextmanager
    def patched() -> Iterator[None]:
        try:
            yield
        finally:
            mp.undo()

    return patched()


def _two_stores(v: pm.View) -> None:
    v.u64[0] = 1
    v.u64[1] = 2
    v.persist(0, 16)


@pytest.mark.parametrize("granularity", [pm.Granularity.CACHE_LINE, pm.Granularity.PAGE])
@pytest.mark.parametrize("bug", [_reorder_atoms, _drop_atom])
def test_wrong_stores_in_flight_are_caught_though_the_media_is_right(
    granularity: pm.Granularity, bug: Callable[[int], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = first_violation(_two_stores, granularity, PagesOnly, bug, 1, monkeypatch)
    both = first_violation(_two_stores, granularity, DurabilityModel, bug, 1, monkeypatch)
    assert pages is None and both == 0


def test_an_older_non_temporal_store_never_lands_over_a_newer_durable_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With clflush (Intel), a write-back store is durable at its clflush while an older
    non-temporal store to the same bytes is still in flight; the simulator drops those
    bytes from the older store, and the model agrees (planted: the simulator keeps them)."""
    from pmemsim_backends.sim import SimBackend, medium

    def workload(v: pm.View) -> None:
        v.memcpy(0, b"\x01" * 16, pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN)
        v.u64[0] = 2
        v.flush(0, 8)  # clflush: durable now
        v.u64[64] = 3  # another line, so the next fence is a crash point
        v.persist(512, 8)

    def run() -> None:
        record(workload, backend=SimBackend(flush_instruction="clflush"))

    run()  # a correct simulator passes
    monkeypatch.setattr(medium, "_drop_older_nt", lambda keep, fold: keep)
    with pytest.raises(DurabilityViolation, match="in flight"):
        run()
