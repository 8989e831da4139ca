"""A Hypothesis state machine over the set layer and the simulator, against a plain model.

The model keeps, per byte of a 256-byte window, the visible content and the guaranteed
(durable) content, written from the rules alone:

* a write-back store is visible at once and durable only when a flush of its line issued
  after it is followed by a fence (or at once for clflush, msync, or on eADR);
* a non-temporal store (and, on CACHE_LINE, the write-back stores it evicts from its lines)
  is durable at the next fence;
* at PAGE granularity a flush is an msync of whole pages and a drain does nothing.

It also keeps, per byte, every value stored there with the order it was stored in. Checks:

* loads return the last stores;
* the all-persisted image is exactly the visible content;
* the guaranteed image is exactly the model's durable content;
* in every crash image each byte holds its durable value or the value of a store issued
  after that value became durable: never a value that was never stored there, never one
  older than what is guaranteed;
* right after persist(range) returns, every crash image holds the range as it is visible.

Images are enumerated when there are at most 64 of them; a rule also picks a few images by
deviations (out-of-range option indexes are clamped, so any draw is valid).
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pmemsim_backends.sim import CrashImage, SimBackend

import pmemsim as pm

PAGE = 4096
LINE = 64
CL = pm.Granularity.CACHE_LINE
BYTE = pm.Granularity.BYTE
PG = pm.Granularity.PAGE
#: The window the machine works in: 256 bytes straddling a page boundary (4 lines, 2 pages).
BASE = PAGE - 128
N = 256
#: Copies at least this long are non-temporal (small, so short copies reach it).
THRESHOLD = 40
ENUMERATE_UP_TO = 64

NT_FLAGS = pm.MemFlag.NONTEMPORAL | pm.MemFlag.WC
WB_FLAGS = pm.MemFlag.TEMPORAL | pm.MemFlag.WB

#: memcpy flags: every kind of copy, with non-temporal ones a minority (a line full of
#: pending non-temporal atoms has 2**8 choices; enough of those make the checks slow).
MEM_FLAGS = [
    pm.MemFlag.NONE,
    pm.MemFlag.NODRAIN,
    pm.MemFlag.NODRAIN,
    pm.MemFlag.TEMPORAL | pm.MemFlag.NODRAIN,
    pm.MemFlag.WB,
    pm.MemFlag.NOFLUSH,
    pm.MemFlag.NOFLUSH | pm.MemFlag.NONTEMPORAL,
    pm.MemFlag.NONTEMPORAL,
    pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN,
    pm.MemFlag.WC | pm.MemFlag.NODRAIN,
    pm.MemFlag.NONTEMPORAL | pm.MemFlag.TEMPORAL | pm.MemFlag.NODRAIN,
]

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

assert BASE % LINE == 0  # window offsets and medium offsets share line boundaries

#: (sequence number, value) of one store to one byte.
Write = tuple[int, int]


@st.composite
def ranges(draw: st.DrawFn, max_len: int = N) -> tuple[int, int]:
    """``(offset, length)`` inside the window, biased toward line and atom boundaries."""
    anchor = draw(st.sampled_from([0, 56, 60, 64, 120, 124, 128, 184, 192, 248]))
    offset = draw(st.one_of(st.just(anchor), st.integers(0, N - 1)))
    length = draw(st.integers(1, min(max_len, N - offset)))
    return offset, length


@st.composite
def writes(draw: st.DrawFn, max_len: int = 80) -> tuple[int, bytes]:
    offset, length = draw(ranges(max_len=max_len))
    fill = draw(st.one_of(st.binary(min_size=length, max_size=length), st.integers(0, 255)))
    data = fill if isinstance(fill, bytes) else bytes([fill]) * length
    return offset, data


def lines_of(off: int, n: int) -> range:
    """Window bytes of every line that ``[off, off + n)`` touches."""
    return range(off - off % LINE, min(N, -(-(off + n) // LINE) * LINE))


def pages_of(off: int, n: int) -> range:
    """Window bytes of every page that ``[off, off + n)`` touches (an msync's reach)."""
    lo = (BASE + off) // PAGE * PAGE - BASE
    hi = -(-(BASE + off + n) // PAGE) * PAGE - BASE
    return range(max(0, lo), min(N, hi))


class SimModel(RuleBasedStateMachine):
    GRANULARITY: ClassVar[pm.Granularity] = CL
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.sim = SimBackend(
            granularity=self.GRANULARITY, movnt_threshold=THRESHOLD, **self.OPTIONS
        )
        self.clflush = self.OPTIONS.get("flush_instruction") == "clflush"
        self.set = pm.Set(pm.Config(granularity=self.GRANULARITY, backend=self.sim))
        whole = self.set.view(self.set.map(pm.Part(pm.Source.anonymous(2 * PAGE))))
        self.v = whole.view(BASE, N)
        self.seq = 0
        self.visible = bytearray(N)
        #: The guaranteed content and the store it came from (0: the initial zeros).
        self.durable = bytearray(N)
        self.durable_seq = [0] * N
        #: Every store to each byte, in program order.
        self.history: list[list[Write]] = [[(0, 0)] for _ in range(N)]
        #: The latest write-back store to each byte while it is not durable.
        self.wb: list[Write | None] = [None] * N
        #: What the next fence makes durable at each byte.
        self.cand: list[Write | None] = [None] * N

    def teardown(self) -> None:
        self.set.close()

    # -- the model --------------------------------------------------------------------------

    def _issue(self, off: int, data: bytes) -> int:
        self.seq += 1
        self.visible[off : off + len(data)] = data
        for i, b in enumerate(data, off):
            self.history[i].append((self.seq, b))
        return self.seq

    def _make_durable(self, i: int, w: Write) -> None:
        if w[0] >= self.durable_seq[i]:
            self.durable_seq[i], self.durable[i] = w
        wb = self.wb[i]
        if wb is not None and wb[0] <= w[0]:
            self.wb[i] = None
        cand = self.cand[i]
        if cand is not None and cand[0] <= w[0]:
            self.cand[i] = None

    def _cover(self, i: int) -> None:
        """A flush (to be fenced) covers byte ``i``: its latest write-back store."""
        wb, cand = self.wb[i], self.cand[i]
        if wb is not None and (cand is None or cand[0] < wb[0]):
            self.cand[i] = wb

    def _wb_store(self, off: int, data: bytes) -> None:
        seq = self._issue(off, data)
        for i, b in enumerate(data, off):
            if self.GRANULARITY == BYTE:
                self._make_durable(i, (seq, b))
                self.cand[i] = None  # eADR: an older pending non-temporal store is overwritten
            else:
                self.wb[i] = (seq, b)

    def _nt_store(self, off: int, data: bytes) -> None:
        if self.GRANULARITY == CL:
            # The store evicts its lines: earlier write-back stores there count as flushed.
            touched = lines_of(off, len(data))
            if any(self.wb[j] is not None for j in touched):
                for j in touched:
                    self._cover(j)
        seq = self._issue(off, data)
        for i, b in enumerate(data, off):
            self.cand[i] = (seq, b)

    def _flush(self, off: int, n: int) -> None:
        if self.GRANULARITY == BYTE:
            return
        if self.GRANULARITY == PG:
            for j in pages_of(off, n):
                wb = self.wb[j]
                if wb is not None:
                    self._make_durable(j, wb)
            return
        for j in lines_of(off, n):
            wb = self.wb[j]
            if self.clflush:
                if wb is not None:
                    self._make_durable(j, wb)
            else:
                self._cover(j)

    def _fence(self) -> None:
        if self.GRANULARITY == PG:
            return
        for i in range(N):
            cand = self.cand[i]
            if cand is not None:
                self._make_durable(i, cand)

    def _possible(self, i: int) -> set[int]:
        """Values byte ``i`` may hold in a crash image."""
        return {self.durable[i]} | {b for s, b in self.history[i] if s > self.durable_seq[i]}

    # -- rules ---------------------------------------------------------------------------

    @rule(w=writes())
    def store(self, w: tuple[int, bytes]) -> None:
        off, data = w
        self.v.write(off, data)
        self._wb_store(off, data)

    @rule(w=writes(max_len=48), flags=st.sampled_from(MEM_FLAGS))
    def memcpy(self, w: tuple[int, bytes], flags: pm.MemFlag) -> None:
        off, data = w
        self.v.memcpy(off, data, flags)
        if flags & pm.MemFlag.NOFLUSH:
            self._wb_store(off, data)
            return
        nt = bool(flags & NT_FLAGS) or (not flags & WB_FLAGS and len(data) >= THRESHOLD)
        if self.GRANULARITY == PG:
            nt = False  # libpmem2 copies, then msyncs
        elif self.GRANULARITY == BYTE:
            # libpmem2's eADR memmove: non-temporal for the NONTEMPORAL flag only, and a
            # temporal copy is not flushed.
            nt = bool(flags & pm.MemFlag.NONTEMPORAL)
        if nt:
            self._nt_store(off, data)
        else:
            self._wb_store(off, data)
            if self.GRANULARITY != BYTE:
                self._flush(off, len(data))
        if not flags & pm.MemFlag.NODRAIN:
            self._fence()

    @rule(r=ranges())
    def flush(self, r: tuple[int, int]) -> None:
        self.v.flush(*r)
        self._flush(*r)

    @rule()
    def drain(self) -> None:
        self.v.drain()
        self._fence()

    @rule(r=ranges())
    def persist(self, r: tuple[int, int]) -> None:
        off, n = r
        self.v.persist(off, n)
        self._flush(off, n)
        self._fence()
        self._check_range_everywhere(off, n)

    @rule(r=ranges())
    def deep_flush(self, r: tuple[int, int]) -> None:
        off, n = r
        self.v.deep_flush(off, n)
        if self.GRANULARITY == PG:
            self._flush(off, n)
        else:
            if self.GRANULARITY == CL:
                for j in lines_of(off, n):
                    self._cover(j)  # its own flush waits for its fence, even with clflush
            self._fence()
        self._check_range_everywhere(off, n)

    @rule(data=st.data())
    def check_some_images(self, data: st.DataObject) -> None:
        state = self.sim.crash_state()
        units = len(state.units)
        if not units:
            self._check_image(state.image([]))
            return
        for _ in range(3):
            deviations = data.draw(
                st.lists(st.tuples(st.integers(0, units - 1), st.integers(-1, 300)), max_size=6)
            )
            self._check_image(state.image(deviations))

    # -- checks ----------------------------------------------------------------------------

    def _check_image(self, img: CrashImage) -> None:
        content = img.read(BASE, N)
        for i, b in enumerate(content):
            allowed = self._possible(i)
            assert b in allowed, f"byte {i}: {b}, possible {sorted(allowed)}"

    def _check_range_everywhere(self, off: int, n: int) -> None:
        want = bytes(self.visible[off : off + n])
        assert bytes(self.durable[off : off + n]) == want  # the model agrees with the rule
        state = self.sim.crash_state()
        assert state.persisted_image().read(BASE + off, n) == want
        assert state.guaranteed_image().read(BASE + off, n) == want
        if state.image_count() <= ENUMERATE_UP_TO:
            for img in state.images():
                assert img.read(BASE + off, n) == want

    @invariant()
    def loads_see_the_last_stores(self) -> None:
        assert self.v.read(0, N) == bytes(self.visible)

    @invariant()
    def crash_images_agree_with_the_model(self) -> None:
        state = self.sim.crash_state()
        whole = state.persisted_image().read(0, 2 * PAGE)
        assert whole == bytes(BASE) + bytes(self.visible) + bytes(2 * PAGE - BASE - N)
        assert state.guaranteed_image().read(BASE, N) == bytes(self.durable)
        count = state.image_count()
        assert count >= 1
        if count <= ENUMERATE_UP_TO:
            seen = set()
            for img in state.images():
                self._check_image(img)
                seen.add(img.read(BASE, N))
            assert len(seen) == count  # distinct by content, and all of them


class ClflushModel(SimModel):
    OPTIONS: ClassVar[dict[str, Any]] = {"flush_instruction": "clflush"}


class ByteModel(SimModel):
    GRANULARITY = BYTE


class PageModel(SimModel):
    GRANULARITY = PG


class TornPageModel(SimModel):
    GRANULARITY = PG
    OPTIONS: ClassVar[dict[str, Any]] = {"page_tearing": True}


TestCacheLine = SimModel.TestCase
TestCacheLine.settings = SETTINGS
TestClflush = ClflushModel.TestCase
TestClflush.settings = SETTINGS
TestByte = ByteModel.TestCase
TestByte.settings = SETTINGS
TestPage = PageModel.TestCase
TestPage.settings = SETTINGS
TestTornPage = TornPageModel.TestCase
TestTornPage.settings = SETTINGS
