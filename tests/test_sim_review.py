"""Review tests: fast paths of the simulator against the general path and the rules.

The record extension of ``store_wb`` (a run of contiguous stores from one instruction is one
pending record) must change neither the crash images nor what the lint says about the bytes.
"""

from __future__ import annotations

import itertools
import random

import pytest
from helpers import u64
from pmemsim_backends.sim import FindingKind, SimBackend

import pmemsim as pm

PAGE = 4096
CL = pm.Granularity.CACHE_LINE
NT_NODRAIN = pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN


def view_on(sim: SimBackend, granularity: pm.Granularity = CL) -> pm.View:
    s = pm.Set(pm.Config(granularity=granularity, backend=sim))
    return s.view(s.map(pm.Part(pm.Source.anonymous(4 * PAGE))))


def findings(sim: SimBackend) -> dict[FindingKind, set[int]]:
    """The bytes each kind of finding covers."""
    out: dict[FindingKind, set[int]] = {}
    for f in sim.lint():
        out.setdefault(f.kind, set()).update(range(f.offset, f.offset + f.length))
    return out


class TestExtendedRecordLint:
    def test_flushed_half_of_a_loop_is_not_reported_unflushed(self, sim: SimBackend) -> None:
        v = view_on(sim)
        for i in range(6, 10):
            v.u64[i] = i  # one instruction, contiguous: lines 0 and 1, one record
        v.flush(0, 64)  # only line 0
        # Bytes 48..64 were flushed (not fenced); bytes 64..80 were never flushed.
        assert findings(sim) == {
            FindingKind.UNFENCED_STORE: set(range(48, 64)),
            FindingKind.UNFLUSHED_STORE: set(range(64, 80)),
        }

    def test_same_as_separate_stores(self, sim: SimBackend) -> None:
        v = view_on(sim)
        v.u64[6] = 6  # separate instructions: separate records
        v.u64[7] = 7
        v.u64[8] = 8
        v.u64[9] = 9
        v.flush(0, 64)
        assert findings(sim) == {
            FindingKind.UNFENCED_STORE: set(range(48, 64)),
            FindingKind.UNFLUSHED_STORE: set(range(64, 80)),
        }

    def test_overwrite_reports_the_overwritten_bytes(self, sim: SimBackend) -> None:
        v = view_on(sim)
        v.u64[2] = 1  # bytes 16..24, not durable
        for i in range(4):
            v.u64[i] = 2  # one record 0..32: only its third store overwrites
        v.persist(0, 64)
        got = findings(sim)
        assert got[FindingKind.OVERWRITTEN_STORE] == set(range(16, 24))

    def test_overwrite_of_two_earlier_stores_names_both(self, sim: SimBackend) -> None:
        v = view_on(sim)
        v.u64[0] = 1  # P
        v.u64[1] = 1  # Q
        for i in range(2):
            v.u64[i] = 2  # one record 0..16 over P and Q
        v.persist(0, 64)
        over = [f for f in sim.lint() if f.kind == FindingKind.OVERWRITTEN_STORE]
        assert sorted((f.offset, f.length) for f in over) == [(0, 8), (8, 8)]
        assert len({f.other for f in over}) == 2


# -- random workloads against a brute-force model of the rules ------------------------------

Op = tuple[str, int, bytes]


def _workload(rng: random.Random) -> list[Op]:
    ops: list[Op] = []
    pos = rng.randrange(0, 160)
    for _ in range(rng.randint(1, 9)):
        r = rng.random()
        if r < 0.5:
            off = pos if rng.random() < 0.6 else rng.randrange(0, 160)
            data = bytes(rng.randrange(1, 256) for _ in range(rng.choice([1, 3, 4, 8, 8, 12, 16])))
            ops.append(("wb", off, data))
            pos = off + len(data)
        elif r < 0.62:
            off = rng.randrange(0, 160)
            ops.append(("nt", off, bytes(rng.randrange(1, 256) for _ in range(rng.choice([4, 8])))))
        elif r < 0.85:
            ops.append(("flush", rng.randrange(0, 200), b""))
        else:
            ops.append(("fence", 0, b""))
    return ops


def _sim_images(ops: list[Op], clflush: bool, extend: bool) -> tuple[list[bytes], object]:
    sim = SimBackend(flush_instruction="clflush" if clflush else "clwb")
    v = view_on(sim)
    for kind, off, data in ops:
        if kind == "wb":
            v.write(off, data)  # one instruction: contiguous runs become one record
            if not extend:
                for m in sim.media:
                    m._tail_seq = -10  # what a store from another instruction would see
        elif kind == "nt":
            v.memcpy(off, data, NT_NODRAIN)
        elif kind == "flush":
            v.flush(off, 1)  # one line
        else:
            v.drain()
    imgs = sorted({img.read(0, 256) for img in sim.crash_state().images()})
    return imgs, findings(sim)


def _atoms(seq: int, off: int, data: bytes, nt: bool) -> list[tuple[int, int, bytes, bool]]:
    out = []
    pos = 0
    while pos < len(data):
        take = min(8 - (off + pos) % 8, len(data) - pos)
        out.append((seq, off + pos, data[pos : pos + take], nt))
        pos += take
    return out


def _model_images(ops: list[Op], clflush: bool) -> list[bytes]:
    """persistency.md, CACHE_LINE, write-back stores only: each line independently keeps its
    durable content plus any prefix, in program order, of its pending 8-byte atoms."""
    media = bytearray(256)
    pending: list[tuple[int, int, bytes, bool]] = []
    flushes: list[tuple[int, int]] = []  # (seq, line)
    for seq, (kind, off, data) in enumerate(ops, 1):
        if kind == "wb":
            pending += _atoms(seq, off, data, False)
            continue
        if kind == "flush" and not clflush:
            flushes.append((seq, off // 64))
            continue
        if kind == "flush":  # clflush: guaranteed at its own position
            done = [a for a in pending if a[1] // 64 == off // 64]
        else:  # a fence: what a flush issued after it covers
            done = [a for a in pending if any(s > a[0] and ln == a[1] // 64 for s, ln in flushes)]
            flushes.clear()
        pending = [a for a in pending if a not in done]
        for a in sorted(done):
            media[a[1] : a[1] + len(a[2])] = a[2]
    per_line: list[tuple[int, set[bytes]]] = []
    for line in sorted({a[1] // 64 for a in pending}):
        buf = bytearray(media[line * 64 : line * 64 + 64])
        contents = {bytes(buf)}
        for a in sorted(a for a in pending if a[1] // 64 == line):
            o = a[1] - line * 64
            buf[o : o + len(a[2])] = a[2]
            contents.add(bytes(buf))
        per_line.append((line, contents))
    out = set()
    for combo in itertools.product(*[c for _, c in per_line]):
        img = bytearray(media)
        for (line, _), c in zip(per_line, combo, strict=True):
            img[line * 64 : line * 64 + 64] = c
        out.add(bytes(img))
    return sorted(out)


@pytest.mark.parametrize("clflush", [False, True])
@pytest.mark.parametrize("seed", range(150))
def test_record_extension_changes_no_image_and_no_finding(seed: int, clflush: bool) -> None:
    ops = _workload(random.Random(seed))
    assert _sim_images(ops, clflush, True) == _sim_images(ops, clflush, False)


@pytest.mark.parametrize("clflush", [False, True])
@pytest.mark.parametrize("seed", range(150))
def test_images_match_the_prefix_rule(seed: int, clflush: bool) -> None:
    ops = [op for op in _workload(random.Random(seed)) if op[0] != "nt"]
    assert _sim_images(ops, clflush, True)[0] == _model_images(ops, clflush)


def test_extension_across_a_fence_keeps_the_images() -> None:
    # The fence between the two halves of the run takes no sequence number.
    for extend in (True, False):
        sim = SimBackend()
        v = view_on(sim)
        v.memcpy(128, u64(9), NT_NODRAIN)  # gives the fence something to do
        for i in range(2):
            v.u64[i] = i + 1
            if i == 0:
                v.drain()
            if not extend:
                sim.media[0]._tail_seq = -10
        assert words_at(sim, 0, 8) == {(1, 2), (1, 0), (0, 0)}


def words_at(sim: SimBackend, *offsets: int) -> set[tuple[int, ...]]:
    return {
        tuple(int.from_bytes(img.read(o, 8), "little") for o in offsets)
        for img in sim.crash_state().images()
    }
