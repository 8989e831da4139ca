"""A fuzz test of the API: random call sequences with hostile arguments, on both backends.

Each Hypothesis example starts from a set with part maps of anonymous memory and of a file,
then makes ``STEPS`` calls, each one chosen at random among every public call (making sets,
sources, parts, reservations and handles; mapping, removing, every data operation, tracks,
closing things), with arguments drawn from values that have broken things before (0, -1,
page edges, 2^47, 2^63, 2^64, wrong types) and from addresses around what is mapped.
After every call it checks:

- the call succeeded or raised a :class:`pmemsim.PmemError` (a typed error, nothing else);
- a call that raised changed nothing: the part maps, the bytes at their edges, the sizes of
  the files, the reservations, whether a part was consumed;
- a store that succeeded reads back;
- the process is alive: each backend's run happens in a child process, so a signal death
  (SIGSEGV, SIGBUS, an abort in libpmem2) is a failed test, with the child's output.

The budget is fixed and the run derandomized: CI makes the same calls every time.
``PMEMSIM_FUZZ_EXAMPLES`` sets the number of examples (default 40, of 40 calls each) for a
longer run, ``PMEMSIM_FUZZ_SEED`` other sequences (the same seed replays the same run). A
failing example is printed by Hypothesis in the child's output, each drawn
value with its label.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
EXAMPLES = int(os.environ.get("PMEMSIM_FUZZ_EXAMPLES", "40"))
#: Other sequences than CI's: ``PMEMSIM_FUZZ_SEED=N`` (replayable: the same N, the same run).
SEED = int(os.environ["PMEMSIM_FUZZ_SEED"]) if os.environ.get("PMEMSIM_FUZZ_SEED") else None
STEPS = 40
PAGE = 4096

#: Integers that broke something once, or sit on an edge.
NASTY_INTS = [
    -PAGE,
    -1,
    0,
    1,
    7,
    8,
    63,
    64,
    PAGE - 1,
    PAGE,
    PAGE + 1,
    2 * PAGE,
    16 * PAGE,
    1 << 31,
    1 << 32,
    1 << 47,
    (1 << 63) - PAGE,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - PAGE,
    (1 << 64) - 1,
    1 << 64,
    1 << 80,
]
NOT_INTS: list[Any] = [None, 1.5, "4096", b"x", True, False, [PAGE]]


class Fuzzer:
    """One example's world: what it made, and every call it can make, each drawing its own
    arguments from ``data``."""

    def __init__(self, backend: Any, workdir: str, st: Any) -> None:
        import pmemsim as pm

        self.pm = pm
        self.st = st
        self.backend = backend
        self.dir = tempfile.mkdtemp(dir=workdir)
        self.sets: list[Any] = []
        self.sources: list[Any] = [pm.Source.anonymous(4 * PAGE)]
        self.parts: list[Any] = []
        self.handles: list[Any] = []
        self.reservations: list[Any] = []
        self.files: list[Path] = []
        self.outcomes: collections.Counter[str] = collections.Counter()
        nasty = st.sampled_from(NASTY_INTS)
        self.anything = st.one_of(nasty, st.sampled_from(NOT_INTS))
        self.pages = st.integers(0, 4).map(lambda n: n * PAGE)
        self.small = st.one_of(st.integers(0, 64), st.integers(0, 3 * PAGE))
        self._start()

    def _start(self) -> None:
        pm = self.pm
        s = pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=self.backend))
        s.map(pm.Part(self.sources[0], 0, 2 * PAGE))
        s.map(pm.Part(self.sources[0], PAGE, 2 * PAGE))
        path = Path(self.dir) / "a"
        self.files.append(path)
        src = pm.Source.from_file(path, pm.SourceFlag.CREATE_ALWAYS)
        self.sources.append(src)
        t = pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=self.backend))
        t.map(pm.Part(src, 0, 2 * PAGE))
        self.sets += [s, t]
        self.reservations.append(pm.Reservation(4 * PAGE, backend=self.backend))

    def close(self) -> None:
        for h in self.handles:
            h.drop()
        for s in self.sets:
            s.close()
        for r in self.reservations:
            with contextlib.suppress(self.pm.PmemError):
                r.close()
        for src in self.sources:
            src.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- drawing -----------------------------------------------------------------------

    def mostly(self, data: Any, good: Any, label: str) -> Any:
        """A value of ``good`` seven times in eight, else a hostile one."""
        # The hostile branch is the one Hypothesis shrinks away from.
        hostile = data.draw(self.st.integers(0, 7), label=f"{label} hostile?") == 7
        return data.draw(self.anything if hostile else good, label=label)

    def busy_set(self, data: Any) -> Any:
        """A set, one with part maps three times in four (where data calls can succeed)."""
        mapped = [s for s in self.sets if not s.closed and list(s.part_maps())]
        if mapped and data.draw(self.st.integers(0, 3), label="a mapped set?") != 3:
            return self.pick(data, mapped, "set")
        return self.pick(data, self.sets, "set")

    def pick(self, data: Any, things: list[Any], label: str) -> Any:
        if not things:
            return None
        return things[data.draw(self.st.integers(0, len(things) - 1), label=label)]

    def address(self, data: Any, owner: Any = None) -> Any:
        """An address in or at the edge of a part map (of ``owner`` first), in a
        reservation, or 0; now and then a hostile value."""
        maps = [
            (d.address, d.size)
            for s in sorted(self.sets, key=lambda s: s is not owner)
            if not s.closed
            for d in s.part_maps()
        ]
        maps += [(r.address, r.size) for r in self.reservations if not r.closed]
        maps.append((0, PAGE))
        start, size = self.pick(data, maps, "around")
        st = self.st
        offset = data.draw(
            st.one_of(
                st.integers(0, size - 1),
                st.sampled_from([0, 8, 63, 64, size - 64, size - 8, size - 1, size, size + 1, -1]),
            ),
            label="offset",
        )
        return self.mostly(data, st.just(start + offset), "address")

    # -- the check around every call ---------------------------------------------------

    def snapshot(self) -> tuple[Any, ...]:
        sets = []
        for s in self.sets:
            maps = []
            if not s.closed:
                for d in s.part_maps():
                    maps.append((d.address, d.size, self._edges(s, d)))
            sets.append((s.closed, tuple(maps), s.coalescing))
        files = tuple(f.stat().st_size if f.exists() else -1 for f in self.files)
        res = tuple((r.closed, r.address, r.size) for r in self.reservations)
        return tuple(sets), files, res, tuple(p.consumed for p in self.parts)

    def _edges(self, s: Any, d: Any) -> str:
        """A digest of a part map's first two and last pages, or the error reading them
        gives (a file truncated by CREATE_ALWAYS under its mapping)."""
        try:
            head = s.read(d.address, min(d.size, 2 * PAGE))
            tail = s.read(d.end - min(d.size, PAGE), min(d.size, PAGE))
        except self.pm.PmemError as exc:
            return exc.code_name
        return hashlib.sha1(head + tail).hexdigest()

    def attempt(self, what: str, call: Callable[[], Any]) -> Any:
        before = self.snapshot()
        try:
            result = call()
        except self.pm.PmemError:
            after = self.snapshot()
            assert after == before, f"{what} failed and changed the state:\n{before}\n{after}"
            self.outcomes[f"{what} refused"] += 1
            return None
        self.outcomes[f"{what} done"] += 1
        return result

    # -- the calls ---------------------------------------------------------------------

    def new_set(self, data: Any) -> None:
        pm, st = self.pm, self.st
        granularity = self.mostly(data, st.sampled_from(list(pm.Granularity)), "granularity")
        states = self.mostly(data, st.just(pm.PartState.OK), "states")
        reservation = self.pick(data, [None, *self.reservations], "reservation")
        s = self.attempt(
            "new_set",
            lambda: pm.Set(
                pm.Config(
                    granularity=granularity,
                    backend=self.backend,
                    reservation=reservation,
                    acceptable_states=states,
                )
            ),
        )
        if s is not None and len(self.sets) < 6:
            self.sets.append(s)
        elif s is not None:
            s.close()

    def new_source(self, data: Any) -> None:
        pm, st = self.pm, self.st
        kind = data.draw(st.sampled_from(["anonymous", "file", "temporary"]), label="kind")
        if kind == "anonymous":
            size = self.mostly(data, self.pages.filter(bool), "size")
            src = self.attempt("new_source", lambda: pm.Source.anonymous(size))
        elif kind == "file":
            name = data.draw(st.sampled_from(["a", "b", "missing/c", ""]), label="name")
            path = Path(self.dir) / name if name else Path("")
            if name and path not in self.files:
                self.files.append(path)
            flags = self.mostly(data, st.sampled_from(list(pm.SourceFlag)), "flags")
            mode = self.mostly(data, st.just(0o600), "mode")
            src = self.attempt("new_source", lambda: pm.Source.from_file(path, flags, mode=mode))
        else:
            folder = data.draw(st.sampled_from([self.dir, f"{self.dir}/missing", f"{self.dir}/a"]))
            src = self.attempt("new_source", lambda: pm.Source.temporary(folder))
        if src is not None:
            self.sources.append(src)

    def new_part(self, data: Any) -> None:
        source = self.pick(data, self.sources, "source")
        offset = self.mostly(data, self.pages, "offset")
        length = self.mostly(data, self.pages, "length")
        part = self.attempt("new_part", lambda: self.pm.Part(source, offset, length))
        if part is not None:
            self.parts.append(part)

    def new_reservation(self, data: Any) -> None:
        size = self.mostly(data, self.pages.filter(bool), "size")
        at = self.address(data) if data.draw(self.st.booleans(), label="at?") else None
        r = self.attempt(
            "new_reservation",
            lambda: self.pm.Reservation(size, address=at, backend=self.backend),
        )
        if r is not None:
            self.reservations.append(r)

    def close_something(self, data: Any) -> None:
        what = data.draw(
            self.st.sampled_from(["nothing", "nothing", "set", "reservation", "source"]),
            label="close",
        )
        if what == "nothing":
            return
        things = {"set": self.sets, "reservation": self.reservations, "source": self.sources}
        thing = self.pick(data, things[what], what)
        if thing is not None:
            self.attempt(f"close_{what}", thing.close)

    def map(self, data: Any) -> None:
        s, part = self.pick(data, self.sets, "set"), self.pick(data, self.parts, "part")
        if s is not None:
            self.attempt("map", lambda: s.map(part))

    def coalescing(self, data: Any) -> None:
        s = self.pick(data, self.sets, "set")
        value = self.mostly(data, self.st.sampled_from(list(self.pm.Coalescing)), "coalescing")

        def switch() -> None:
            s.coalescing = value

        if s is not None:
            self.attempt("coalescing", switch)

    def handle(self, data: Any) -> None:
        s = self.busy_set(data)
        if s is None:
            return
        how = data.draw(self.st.sampled_from(["first", "next", "address"]), label="how")
        if how == "first":
            h = self.attempt("first_part_map", s.first_part_map)
        elif how == "next":
            other = self.pick(data, self.handles, "handle")
            h = self.attempt("next_part_map", lambda: s.next_part_map(other))
        else:
            address = self.address(data, s)
            h = self.attempt("part_map_by_address", lambda: s.part_map_by_address(address))
        if h is not None:
            self.handles.append(h)

    def drop_handle(self, data: Any) -> None:
        h = self.pick(data, self.handles, "handle")
        if h is not None:
            self.handles.remove(h)
            h.drop()

    def remove_part_map(self, data: Any) -> None:
        s, h = self.busy_set(data), self.pick(data, self.handles, "handle")
        if s is not None:
            self.attempt("remove_part_map", lambda: s.remove_part_map(h))

    def remove_range(self, data: Any) -> None:
        s = self.busy_set(data)
        if s is not None:
            address, length = self.address(data, s), self.mostly(data, self.small, "length")
            self.attempt("remove_range", lambda: s.remove_range(address, length))

    def data_op(self, data: Any) -> None:
        pm, st = self.pm, self.st
        s = self.busy_set(data)
        if s is None:
            return
        op = data.draw(
            st.sampled_from(
                [
                    "read",
                    "store",
                    "memcpy",
                    "memmove",
                    "memset",
                    "copy_within",
                    "flush",
                    "persist",
                    "deep_flush",
                    "read_mcsafe",
                    "drain",
                    "view",
                ]
            ),
            label="op",
        )
        a = self.address(data, s)
        length = self.mostly(data, self.small, "length")
        flags = self.mostly(
            data, st.one_of(st.sampled_from([0, *pm.MemFlag]), st.integers(0, 63)), "flags"
        )
        payload = self.mostly(data, st.binary(max_size=300), "payload")
        other = self.address(data, s) if op == "copy_within" else None
        calls: dict[str, Callable[[], Any]] = {
            "read": lambda: s.read(a, length),
            "store": lambda: s.store(a, payload),
            "memcpy": lambda: s.memcpy(a, payload, None, flags),
            "memmove": lambda: s.memmove(a, payload, None, flags),
            "memset": lambda: s.memset(a, 0x5A, length, flags),
            "copy_within": lambda: s.memmove(a, other, length, flags),
            "flush": lambda: s.flush(a, length),
            "persist": lambda: s.persist(a, length),
            "deep_flush": lambda: s.deep_flush(a, length),
            "read_mcsafe": lambda: s.read_mcsafe(a, length),
            "drain": s.drain,
            "view": lambda: s.view(a, length),
        }
        before = self.outcomes[f"{op} done"]
        self.attempt(op, calls[op])
        if op == "store" and self.outcomes[f"{op} done"] > before and payload:
            assert s.read(a, len(payload)) == payload

    def track(self, data: Any) -> None:
        s = self.busy_set(data)
        if s is None:
            return
        kinds = self.mostly(data, self.st.integers(1, (1 << 12) - 1), "kinds")
        address = self.address(data) if data.draw(self.st.booleans(), label="at?") else None
        length = self.mostly(data, self.st.one_of(self.st.none(), self.small), "length")
        self.attempt(
            "track", lambda: s.track(kinds, lambda *a: None, address=address, length=length)
        )

    def check_handles(self) -> None:
        for h in self.handles:
            if h.valid:
                assert any(h.descriptor == m for s in self.sets for m in s.part_maps())


CALLS = [
    "new_set",
    "new_source",
    "new_part",
    "new_part",
    "new_reservation",
    "close_something",
    "map",
    "map",
    "coalescing",
    "handle",
    "drop_handle",
    "remove_part_map",
    "remove_range",
    "data_op",
    "data_op",
    "data_op",
    "track",
]


def run(backend_name: str, workdir: str) -> collections.Counter[str]:
    """Run the fuzz test on ``backend_name`` (a ``differential.make_backend`` name); return
    how often each call was made and refused. Raises on the first broken promise."""
    from differential import make_backend
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    backend = make_backend(backend_name)
    total: collections.Counter[str] = collections.Counter()

    @seed(SEED if SEED is not None else 0)
    @settings(
        max_examples=EXAMPLES,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def example(data: Any) -> None:
        fuzzer = Fuzzer(backend, workdir, st)
        try:
            for _ in range(STEPS):
                getattr(fuzzer, data.draw(st.sampled_from(CALLS), label="call"))(data)
                fuzzer.check_handles()
        finally:
            fuzzer.close()
            total.update(fuzzer.outcomes)

    example()
    return total


CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_fuzz_api
outcomes = test_fuzz_api.run({backend!r}, {workdir!r})
print("FUZZ_OK", sum(outcomes.values()), "calls:", dict(sorted(outcomes.items())))
"""


@pytest.mark.parametrize("backend", ["sim", "real"])
def test_api_fuzz(backend: str, tmp_path: Path) -> None:
    """Random calls with hostile arguments: a typed error or success, nothing changed by a
    failure, and a living process (the run happens in a child)."""
    if backend == "real":
        from differential import real_unavailable_reason

        reason = real_unavailable_reason()
        if reason:
            pytest.skip(f"real backend unavailable: {reason}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    env.pop("PMEM2_FORCE_GRANULARITY", None)
    code = CHILD.format(tests=str(TESTS), backend=backend, workdir=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    output = f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-12000:]}"
    assert proc.returncode == 0 and "FUZZ_OK" in proc.stdout, output
    # The run reached the calls it is about, not only their refusals.
    for call in ("map done", "store done", "remove_range done", "memcpy done"):
        assert f"'{call}'" in proc.stdout, f"no {call!r} in the run:\n{proc.stdout}"
