"""The persistent page map crash states share their media through, and the page queries on
crash states built on it (changed_pages, persisted_page)."""

from __future__ import annotations

import itertools
import random

import pytest
from pmemsim_backends.sim import SimBackend
from pmemsim_backends.sim.pagemap import PageMap

import pmemsim as pm
from pmemsim.explore import record


def test_page_map_agrees_with_a_dict_and_shares_what_did_not_change() -> None:
    rng = random.Random(7)
    model: dict[int, bytes] = {}
    m: PageMap[bytes] = PageMap()
    history: list[tuple[PageMap[bytes], dict[int, bytes]]] = []
    for _ in range(300):
        changes: dict[int, bytes | None] = {}
        for _ in range(rng.randrange(1, 6)):
            key = rng.choice([rng.randrange(40), rng.randrange(1 << 20)])  # dense and sparse
            value = None if model and rng.random() < 0.2 else bytes([rng.randrange(256)]) * 4
            changes[key] = value
        before = m
        m = m.updated(changes)
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert dict(m) == model and len(m) == len(model) and list(m) == sorted(model)
        changed = {k for k, v in changes.items() if v is not None or k in dict(before)}
        assert set(m.diff(before)) == changed
        assert m.diff(m) == []
        history.append((m, dict(model)))
    for old, content in history:  # every earlier version is intact
        assert dict(old) == content
    assert m.get(-1) is None and (1 << 40) not in m and m.get(3, b"x") in (b"x", model.get(3))
    with pytest.raises(KeyError):
        PageMap()[0]
    with pytest.raises(ValueError):
        m.updated({-1: b""})


def test_diff_between_maps_of_different_heights_and_empty_maps() -> None:
    small = PageMap[bytes]().updated({1: b"a"})
    tall = small.updated({1 << 30: b"b"})
    assert tall.diff(small) == [1 << 30] and small.diff(tall) == [1 << 30]
    assert small.diff(None) == [1] and PageMap[bytes]().diff(small) == [1]
    assert small.updated({1: None}) == {} and len(small.updated({1: None})) == 0


def _workload(v: pm.View) -> None:
    for p in range(8):
        v.u64[p * 512] = p + 1
        v.persist(p * 4096, 8)
    v.u64[3 * 512 + 1] = 99  # in flight at the end
    v.u64[6 * 512 + 1] = 98
    v.persist(6 * 4096 + 8, 8)


def test_crash_states_share_unchanged_pages_and_say_which_changed() -> None:
    trace = record(_workload, size=8 * 4096)
    states = [p.state for p in trace.points]
    for before, after in itertools.pairwise(states):
        pages = after.changed_pages(before)
        # Media pages not in the answer are the very same objects in both states.
        for p in set(after.snapshots[0].pages) - set(pages):
            assert after.snapshots[0].pages[p] is before.snapshots[0].pages[p]
        # ... and every page whose all-persisted content differs is in it.
        for p in range(8):
            a = after.persisted_page(p) or bytes(4096)
            b = before.persisted_page(p) or bytes(4096)
            if a != b:
                assert p in pages
    last = states[-1]
    assert last.changed_pages(None) == list(range(8))
    # The last point has page 3's second store in flight: its all-persisted page has it,
    # the media does not, and its images' snapshots agree with persisted_page.
    assert int.from_bytes(last.persisted_page(3)[8:16], "little") == 99  # type: ignore[index]
    assert last.snapshots[0].pages[3][8:16] == bytes(8)
    assert last.persisted_image().snapshot().page(3) == last.persisted_page(3)
    assert last.persisted_page(3) is last.persisted_page(3)


def test_an_image_snapshot_shares_the_pool_and_copies_only_its_own_pages() -> None:
    trace = record(_workload, size=8 * 4096)
    state = trace.points[-1].state
    lost = state.image([(0, 1)])  # unit 0 loses its store
    snap = lost.snapshot()
    assert snap.page(3)[8:16] == bytes(8) and lost.page(3) == snap.page(3)
    base = state.snapshots[0].pages
    assert all(snap.pages[p] is base[p] for p in (0, 1, 2, 4, 5, 7))


def test_a_mapped_snapshot_is_not_copied_page_by_page() -> None:
    """Recovery maps an image: its medium starts from the image's pages as they are."""
    trace = record(_workload, size=8 * 4096)
    snap = trace.points[-1].state.persisted_image().snapshot()
    sim = SimBackend()
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim)) as s:
        v = s.view(s.map(pm.Part(pm.Source.from_image(snap))))
        assert v.u64[3 * 512 + 1] == 99
        v.u64[0] = 7  # copy-on-write: the image is left as it was
        assert snap.page(0)[:8] == (1).to_bytes(8, "little")
        (medium,) = sim.media
        assert medium._frozen is snap.pages
