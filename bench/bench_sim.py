"""Benchmarks of pmemsim on the simulator backend, each next to a plain-Python reference.

Run from the repository root (with pmemsim installed, e.g. in a virtualenv)::

    python bench/bench_sim.py                 # best of 5
    python bench/bench_sim.py --quick         # best of 2, fewer iterations
    python bench/bench_sim.py --json-out bench/results/run.json
    python bench/bench_sim.py --baseline /path/to/old/checkout   # the store loop, both ways

What is measured (bench/README.md explains how to read it):

1. 8-byte stores per second through the public API: ``v.u64[i] = i`` over a 1 MiB anonymous
   CACHE_LINE map, with the default backend (lint on) and with ``SimBackend(lint=False)``, and
   ``s.store(addr, i.to_bytes(8, "little"))``. Target: >= 500,000 stores/s. The cost of the one
   ``persist`` that makes those stores durable afterwards is reported too (no target).
2. 1 MiB copy-and-persist throughput in GB/s (10**9 bytes/s): ``s.memcpy(addr, data)`` with
   flags 0 (non-temporal, then drain) and a 1 MiB slice store followed by ``v.persist``.
   Target: >= 1 GB/s.
3. Memory growth for a sparse map: a 64 GiB anonymous source, 256 scattered 4 KiB writes
   (1 MiB in all), each persisted. Reported as tracemalloc peak growth and as RSS growth
   (``/proc/self/statm``, after glibc's ``malloc_trim``), each in a fresh child process.
   Target: < 64 MiB.
4. For every number a reference measured in the same run: the equivalent plain-Python
   ``bytearray`` operation, and the ratio simulator / reference.
5. With ``--baseline CHECKOUT``, only this instead: the ``v.u64[i] = i`` pass of (1), lint on
   and off, with this checkout's pmemsim and with CHECKOUT's (the code before a change),
   each in child processes taking turns, and the ratio this / baseline of the store loop.

Time is ``time.perf_counter``; each timing is the best of N repetitions, each memory figure the
worst of N. A missed target is reported in the table and the JSON, never raised: the exit
status is 0 unless the benchmark itself breaks. The last line of output is ``BENCH_JSON``
followed by one JSON object holding every number.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim.provenance import clear_helpers

MIB = 1 << 20
GIB = 1 << 30
GB = 10**9

STORE_TARGET = 500_000  # 8-byte stores per second, at least
COPY_TARGET = 1.0  # GB/s, at least
MEMORY_TARGET = 64.0  # MiB, less than

STORE_MAP = MIB  # the map the store loops write over: 131072 u64 slots
SPARSE_SIZE = 64 * GIB
SPARSE_WRITES = 256
SPARSE_WRITE = 4096

SCHEMA = 1


# -- helpers -------------------------------------------------------------------------------


def new_set(size: int, *, lint: bool = True) -> tuple[pm.Set, pm.Descriptor, SimBackend]:
    """A fresh simulator, a set on it and one anonymous part map of ``size`` bytes."""
    sim = SimBackend(lint=lint)
    s = pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim))
    d = s.map(pm.Part(pm.Source.anonymous(size)))
    return s, d, sim


def best_of(repeat: int, run: Callable[[], float]) -> float:
    """The smallest of ``repeat`` timings; ``run`` does its own setup and returns seconds."""
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(run())
    return min(times)


# -- 1. 8-byte stores ----------------------------------------------------------------------


def _helper_store(u: Any, i: int, x: int) -> None:
    u[i] = x  # a user's small store helper (an accessor, a store_u64 wrapper)


def _store_pass(
    kind: str, lint: bool, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """One pass of 8-byte stores over a fresh 1 MiB map: (store seconds, persist seconds).

    ``kind``: "u64" (``v.u64[i] = i``), "store" (``s.store``), "marked" (``v.u64[i] = i``
    while some other function is marked as a helper), "helper" / "helper_marked"
    (``_helper_store(v.u64, i, i)``, unmarked / marked with pmemsim.helper)."""
    s, d, _ = new_set(STORE_MAP, lint=lint)
    v = s.view(d)
    n = STORE_MAP // 8
    if kind in ("marked", "helper_marked"):
        pm.helper(_helper_store if kind == "helper_marked" else _store_reference)
    try:
        if kind in ("u64", "marked"):
            u = v.u64
            t0 = clock()
            for i in range(n):
                u[i] = i
            t1 = clock()
        elif kind in ("helper", "helper_marked"):
            u, put = v.u64, _helper_store
            t0 = clock()
            for i in range(n):
                put(u, i, i)
            t1 = clock()
        else:
            store = s.store
            base = d.address
            t0 = clock()
            for i in range(n):
                store(base + (i << 3), i.to_bytes(8, "little"))
            t1 = clock()
    finally:
        clear_helpers()
    v.persist(0, STORE_MAP)
    t2 = clock()
    s.close()
    return t1 - t0, t2 - t1


def _store_reference() -> float:
    buf = bytearray(STORE_MAP)
    n = STORE_MAP // 8
    t0 = time.perf_counter()
    for i in range(n):
        o = i << 3
        buf[o : o + 8] = i.to_bytes(8, "little")
    return time.perf_counter() - t0


def bench_stores(repeat: int) -> dict[str, float]:
    n = STORE_MAP // 8
    out: dict[str, float] = {"stores_per_pass": n}
    kinds = (
        ("u64_lint", "u64", True),
        ("u64_nolint", "u64", False),
        ("set_store", "store", True),
        ("u64_marked", "marked", True),
        ("helper", "helper", True),
        ("helper_marked", "helper_marked", True),
    )
    # Round robin: a noisy neighbour slows every kind alike, not one block of them.
    passes: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in kinds}
    for _ in range(repeat):
        for name, kind, lint in kinds:
            gc.collect()
            passes[name].append(_store_pass(kind, lint))
    for name, _, _ in kinds:
        store_s = min(p[0] for p in passes[name])
        persist_s = min(p[1] for p in passes[name])
        both_s = min(p[0] + p[1] for p in passes[name])
        out[f"{name}_per_s"] = n / store_s
        out[f"{name}_persist_s"] = persist_s
        out[f"{name}_with_persist_per_s"] = n / both_s
    out["reference_per_s"] = n / best_of(repeat, _store_reference)
    return out


# -- 2. 1 MiB copy + persist ---------------------------------------------------------------


def _copy_run(kind: str, inner: int, data: bytes) -> float:
    s, d, _ = new_set(MIB)
    v = s.view(d)
    base = d.address
    memcpy = s.memcpy

    def once() -> None:
        if kind == "memcpy":
            memcpy(base, data)
        else:
            v[0:MIB] = data
            v.persist(0, MIB)

    once()  # warm up: the first copy creates the pages
    t0 = time.perf_counter()
    for _ in range(inner):
        once()
    dt = (time.perf_counter() - t0) / inner
    s.close()
    return dt


def _copy_reference(inner: int, data: bytes) -> float:
    buf = bytearray(MIB)
    buf[0:MIB] = data
    t0 = time.perf_counter()
    for _ in range(inner):
        buf[0:MIB] = data
    return (time.perf_counter() - t0) / inner


def bench_copy(repeat: int, inner: int) -> dict[str, float]:
    data = random.Random(1).randbytes(MIB)
    out: dict[str, float] = {"bytes": MIB, "copies_per_timing": inner}
    for name in ("memcpy", "slice_persist"):
        sec = best_of(repeat, lambda name=name: _copy_run(name, inner, data))
        out[f"{name}_s"] = sec
        out[f"{name}_gb_per_s"] = MIB / sec / GB
    sec = best_of(repeat, lambda: _copy_reference(inner, data))
    out["reference_s"] = sec
    out["reference_gb_per_s"] = MIB / sec / GB
    return out


# -- 3. sparse memory ----------------------------------------------------------------------


def _trim() -> None:
    """Give free heap memory back to the OS (glibc), so that growth shows up as new RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sparse_offsets() -> list[int]:
    """256 page-aligned offsets spread over the 64 GiB source, not on a regular stride."""
    step = SPARSE_SIZE // SPARSE_WRITES
    rng = random.Random(3)
    return [i * step + rng.randrange(step // SPARSE_WRITE) * SPARSE_WRITE for i in range(256)]


def _sparse_sim() -> None:
    s, d, _ = new_set(SPARSE_SIZE)
    v = s.view(d)
    rng = random.Random(2)
    for o in _sparse_offsets():
        v[o : o + SPARSE_WRITE] = rng.randbytes(SPARSE_WRITE)
        v.persist(o, SPARSE_WRITE)
    _keep.append((s, d, v))  # measured while the set is alive


def _sparse_reference() -> None:
    # The same content held the plain-Python way: a dict of touched 4 KiB pages.
    pages: dict[int, bytearray] = {}
    rng = random.Random(2)
    for o in _sparse_offsets():
        page = pages.setdefault(o // SPARSE_WRITE, bytearray(SPARSE_WRITE))
        page[0:SPARSE_WRITE] = rng.randbytes(SPARSE_WRITE)
    _keep.append(pages)


_keep: list[Any] = []


def memory_child(case: str, metric: str) -> dict[str, float]:
    """Run in a fresh interpreter: growth in bytes of ``metric`` while doing ``case``."""
    work = _sparse_sim if case == "sim" else _sparse_reference
    gc.collect()
    if metric == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        work()
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"bytes": peak - base, "seconds": dt}
    _trim()
    before = _rss()
    t0 = time.perf_counter()
    work()
    dt = time.perf_counter() - t0
    gc.collect()
    return {"bytes": _rss() - before, "seconds": dt}


def _run_child(case: str, metric: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", case, metric],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {case}/{metric} failed:\n{proc.stderr}")
    line = proc.stdout.strip().splitlines()[-1]
    result: dict[str, float] = json.loads(line)
    return result


def bench_memory(repeat: int) -> dict[str, float]:
    out: dict[str, float] = {
        "source_bytes": SPARSE_SIZE,
        "writes": SPARSE_WRITES,
        "write_bytes": SPARSE_WRITE,
    }
    for case in ("sim", "reference"):
        for metric in ("tracemalloc", "rss"):
            runs = [_run_child(case, metric) for _ in range(repeat)]
            out[f"{case}_{metric}_mib"] = max(r["bytes"] for r in runs) / MIB
            if case == "sim" and metric == "rss":
                out["sim_seconds"] = min(r["seconds"] for r in runs)
    return out


# -- 5. against a baseline checkout ----------------------------------------------------------


SIDES = ("this", "baseline")


def store_child(lint: bool, passes: int) -> dict[str, Any]:
    """Run in a fresh interpreter, with whichever pmemsim PYTHONPATH names: the best store and
    persist seconds of ``passes`` ``v.u64[i] = i`` passes, in wall time and in the process's
    CPU time, and where the backend came from."""
    import pmemsim_backends

    out: dict[str, Any] = {}
    for clock, name in ((time.perf_counter, "wall"), (time.process_time, "cpu")):
        runs = []
        for _ in range(passes):
            gc.collect()
            runs.append(_store_pass("u64", lint, clock))
        out[f"store_{name}_s"] = min(r[0] for r in runs)
        out[f"persist_{name}_s"] = min(r[1] for r in runs)
    out["backend"] = os.path.realpath(os.path.dirname(pmemsim_backends.__file__))
    return out


def bench_baseline(checkout: str, rounds: int, passes: int) -> dict[str, Any]:
    """The store pass of this checkout and of ``checkout``, lint on and off, each a child
    process per round, taking turns (a noisy neighbour slows both alike)."""
    from bench_scale import baseline_path

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = dict(zip(SIDES, (here, os.path.abspath(checkout)), strict=True))
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        paths = {}
        for side, root in sides.items():
            (Path(tmp) / side).mkdir()
            paths[side] = baseline_path(root, Path(tmp) / side)
        for _ in range(rounds):
            for lint in (False, True):
                for side, root in sides.items():
                    # cwd: a folder without pmemsim (the script's own folder, bench/, comes
                    # first on sys.path in the child, and holds none either).
                    cmd = [sys.executable, os.path.abspath(__file__), "--store-child"]
                    proc = subprocess.run(
                        [*cmd, str(int(lint)), str(passes)],
                        capture_output=True,
                        text=True,
                        check=False,
                        cwd=tmp,
                        env={**os.environ, "PYTHONPATH": paths[side]},
                    )
                    if proc.returncode != 0:
                        raise RuntimeError(f"store child ({side}) failed:\n{proc.stderr}")
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                    want = os.path.realpath(os.path.join(root, "backends"))
                    if got["backend"] != want:
                        raise RuntimeError(f"{side}: imported {got['backend']}, not {want}")
                    mine = best.setdefault(f"{side}_lint_{'on' if lint else 'off'}", {})
                    for name, sec in got.items():
                        if name.endswith("_s"):
                            mine[name] = min(mine.get(name, sec), sec)
    out: dict[str, Any] = {
        "baseline": sides["baseline"],
        "rounds": rounds,
        "passes_per_child": passes,
        "stores_per_pass": STORE_MAP // 8,
    }
    for key, v in best.items():
        out.update({f"{key}_{name}": sec for name, sec in v.items()})
    for lint in ("on", "off"):
        for clock in ("cpu", "wall"):
            this, base = (out[f"{side}_lint_{lint}_store_{clock}_s"] for side in sides)
            out[f"lint_{lint}_{clock}_ratio"] = this / base
    return out


def baseline_main(checkout: str, quick: bool) -> int:
    rounds, passes = (3, 2) if quick else (7, 3)
    print(
        f"the store loop, this checkout against {checkout} ({rounds} rounds of child processes, "
        f"best of {passes} passes each)",
        flush=True,
    )
    res = bench_baseline(checkout, rounds, passes)
    n = res["stores_per_pass"]
    print(f"seconds per {n:,} stores (the loop alone); CPU: the process's CPU time, which a")
    print("busy machine disturbs less than wall time (time spent waiting for a core)")
    print(f"{'':18}{'this':>10}{'baseline':>10}{'this/base':>11}")
    for lint in ("off", "on"):
        for clock in ("cpu", "wall"):
            this, base = (res[f"{side}_lint_{lint}_store_{clock}_s"] for side in SIDES)
            ratio = res[f"lint_{lint}_{clock}_ratio"]
            print(f"{f'lint {lint}, {clock}':18}{this:10.4f}{base:10.4f}{ratio:11.3f}")
    print("BENCH_JSON " + json.dumps({"schema": SCHEMA, "baseline_stores": res}, sort_keys=True))
    return 0


# -- report --------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: float
    unit: str
    target: str  # "" when there is none
    status: str  # "pass", "MISS" or "info"
    reference: float | None
    ratio: float | None  # simulator / reference (for memory: growth / reference growth)


def _check(value: float, op: str, target: float) -> str:
    ok = value >= target if op == ">=" else value < target
    return "pass" if ok else "MISS"


def build_rows(st: dict[str, float], cp: dict[str, float], mem: dict[str, float]) -> list[Row]:
    rows = []
    ref = st["reference_per_s"]
    for key, label in (
        ("u64_lint", "store: v.u64[i] = x (lint on)"),
        ("u64_nolint", "store: v.u64[i] = x (lint off)"),
        ("set_store", "store: s.store(addr, bytes8)"),
    ):
        v = st[f"{key}_per_s"]
        rows.append(
            Row(
                label,
                v,
                "stores/s",
                f">= {STORE_TARGET:,}",
                _check(v, ">=", STORE_TARGET),
                ref,
                v / ref,
            )
        )
    for key, label in (
        ("u64_marked", "store: v.u64[i] = x, a helper marked elsewhere"),
        ("helper", "store via helper(u, i, x), unmarked"),
        ("helper_marked", "store via helper(u, i, x), pmemsim.helper"),
    ):
        v = st[f"{key}_per_s"]
        rows.append(Row(label, v, "stores/s", "", "info", ref, v / ref))
    for key, label in (
        ("u64_lint", "  incl. persist after the pass (lint on)"),
        ("u64_nolint", "  incl. persist after the pass (lint off)"),
        ("set_store", "  incl. persist after the pass (s.store)"),
    ):
        v = st[f"{key}_with_persist_per_s"]
        rows.append(Row(label, v, "stores/s", "", "info", ref, v / ref))
    rows.append(Row("reference: bytearray 8-byte slice", ref, "stores/s", "", "info", None, None))
    cref = cp["reference_gb_per_s"]
    for key, label in (
        ("memcpy", "copy: s.memcpy(addr, 1 MiB)"),
        ("slice_persist", "copy: v[a:b] = 1 MiB; v.persist"),
    ):
        v = cp[f"{key}_gb_per_s"]
        rows.append(
            Row(
                label,
                v,
                "GB/s",
                f">= {COPY_TARGET:g}",
                _check(v, ">=", COPY_TARGET),
                cref,
                v / cref,
            )
        )
    rows.append(Row("reference: bytearray 1 MiB slice", cref, "GB/s", "", "info", None, None))
    for metric, label in (
        ("tracemalloc", "sparse 64 GiB: tracemalloc peak"),
        ("rss", "sparse 64 GiB: RSS growth"),
    ):
        v = mem[f"sim_{metric}_mib"]
        r = mem[f"reference_{metric}_mib"]
        rows.append(
            Row(
                label,
                v,
                "MiB",
                f"< {MEMORY_TARGET:g}",
                _check(v, "<", MEMORY_TARGET),
                r,
                v / r if r > 0 else None,
            )
        )
    return rows


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def print_table(rows: list[Row]) -> None:
    head = ("benchmark", "value", "unit", "target", "status", "reference", "ratio")
    cells = [head] + [
        (
            r.name,
            _fmt(r.value),
            r.unit,
            r.target or "-",
            r.status,
            _fmt(r.reference),
            "-" if r.ratio is None else f"{r.ratio:.3g}",
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for n, c in enumerate(cells):
        print(
            "  ".join(
                c[i].ljust(widths[i]) if i in (0, 2, 4) else c[i].rjust(widths[i])
                for i in range(len(head))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="best of 2 and fewer iterations")
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    ap.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="only the store loop, this checkout against CHECKOUT's pmemsim (e.g. the commit "
        "before a change, from git worktree add or git archive)",
    )
    ap.add_argument("--memory-child", nargs=2, metavar=("CASE", "METRIC"), help=argparse.SUPPRESS)
    ap.add_argument("--store-child", nargs=2, metavar=("LINT", "PASSES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    if args.store_child:
        print(json.dumps(store_child(args.store_child[0] == "1", int(args.store_child[1]))))
        return 0
    if args.baseline:
        if not os.path.isdir(os.path.join(args.baseline, "backends", "sim")):
            ap.error(f"--baseline {args.baseline}: not a pmemsim checkout (no backends/sim)")
        return baseline_main(args.baseline, args.quick)

    repeat = 2 if args.quick else 5
    inner = 4 if args.quick else 16
    mem_repeat = 1 if args.quick else 3
    started = time.perf_counter()
    print(f"pmemsim simulator benchmarks ({'quick, ' if args.quick else ''}best of {repeat})")
    print("1/3 8-byte stores ...", flush=True)
    st = bench_stores(repeat)
    print("2/3 1 MiB copy + persist ...", flush=True)
    cp = bench_copy(repeat, inner)
    print("3/3 sparse 64 GiB memory (child processes) ...", flush=True)
    mem = bench_memory(mem_repeat)
    rows = build_rows(st, cp, mem)
    print()
    print_table(rows)
    print()
    print(
        f"reference = the same operation on a plain bytearray in this run; ratio = "
        f"simulator / reference. Persist of one pass ({st['stores_per_pass']:,.0f} pending "
        f"stores): {st['u64_lint_persist_s']:.3f} s lint on, "
        f"{st['u64_nolint_persist_s']:.3f} s lint off. Sparse workload: "
        f"{mem['sim_seconds']:.3f} s."
    )
    checked = [r for r in rows if r.status != "info"]
    missed = [r.name for r in checked if r.status == "MISS"]
    print(
        f"{len(checked) - len(missed)}/{len(checked)} targets met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    result = {
        "schema": SCHEMA,
        "quick": args.quick,
        "repeat": repeat,
        "memory_repeat": mem_repeat,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "targets": {
            "stores_per_s_min": STORE_TARGET,
            "copy_gb_per_s_min": COPY_TARGET,
            "memory_mib_max": MEMORY_TARGET,
        },
        "stores": st,
        "copy": cp,
        "memory": mem,
        "rows": [asdict(r) for r in rows],
        "all_targets_met": not missed,
        "missed": missed,
        "wall_seconds": time.perf_counter() - started,
    }
    text = json.dumps(result, sort_keys=True)
    if args.json_out:
        folder = os.path.dirname(args.json_out)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(args.json_out, "w") as f:
            f.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("BENCH_JSON " + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
