"""memcpy through a pmemsim set on real libpmem2, against the same copy from C.

Run from the repository root (with pmemsim installed and libpmem2 present)::

    python bench/bench_real.py                  # best of 5
    python bench/bench_real.py --quick          # best of 2, fewer iterations
    python bench/bench_real.py --api-mode       # also time a compiled (cffi API mode) call
    python bench/bench_real.py --json-out bench/results/real.json

What is measured (bench/README.md explains how to read it):

1. ``s.memcpy(addr, data)`` with flags 0 at 256 B, 4 KiB and 1 MiB, on two mappings:
   anonymous memory (libpmem2 gives BYTE: non-temporal stores or cached stores and flushes,
   then SFENCE) and a file on /dev/shm (tmpfs) with ``PMEM2_FORCE_GRANULARITY=BYTE`` (the
   same instructions on a file; the backend also checks the file's size before each copy).
2. The C reference: a small C program, compiled here against the installed libpmem2 (its own
   prototypes: no -dev package needed), doing the same copies through the function
   ``pmem2_get_memcpy_fn`` returns for the same kind of map. Skipped, with a note, when no C
   compiler is found.
3. Targets: at most 1.5 us added per call at 256 B (set minus C), and at least 90 % of the C
   bandwidth at 1 MiB.
4. Beside them: the simulator's cost for the same ``s.memcpy`` (default SimBackend, anonymous,
   CACHE_LINE), and where the Python time goes (the bare cffi call; the backend map's
   memmove; the set).

Each timing is the best of N repetitions of a loop, in ns per call. A missed target is
reported, never raised. The last line is ``BENCH_JSON`` followed by one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pmemsim as pm

SIZES = (256, 4096, 1 << 20)
MAP_SIZE = 4 << 20
ADDED_TARGET_US = 1.5  # at 256 B, at most
BANDWIDTH_TARGET = 0.90  # of C at 1 MiB, at least
SCHEMA = 1

C_SOURCE = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

/* The prototypes needed, declared here so that no -dev package is required. */
struct pmem2_source;
struct pmem2_config;
struct pmem2_map;
int pmem2_source_from_anon(struct pmem2_source **src, size_t size);
int pmem2_source_from_fd(struct pmem2_source **src, int fd);
int pmem2_config_new(struct pmem2_config **cfg);
int pmem2_config_set_required_store_granularity(struct pmem2_config *cfg, int g);
int pmem2_map_new(struct pmem2_map **map, const struct pmem2_config *cfg,
                  const struct pmem2_source *src);
void *pmem2_map_get_address(struct pmem2_map *map);
typedef void *(*memcpy_fn)(void *dest, const void *src, size_t len, unsigned flags);
memcpy_fn pmem2_get_memcpy_fn(struct pmem2_map *map);
const char *pmem2_errormsg(void);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* usage: ref PATH|- MAP_SIZE REPEATS FLAGS SIZE:ITERS... ; prints "SIZE NS" lines */
int main(int argc, char **argv) {
    if (argc < 6) return 2;
    size_t map_size = strtoull(argv[2], NULL, 10);
    int repeats = atoi(argv[3]);
    unsigned flags = (unsigned)atoi(argv[4]);
    struct pmem2_source *src;
    if (strcmp(argv[1], "-") == 0) {
        if (pmem2_source_from_anon(&src, map_size)) goto fail;
    } else {
        int fd = open(argv[1], O_RDWR);
        if (fd < 0 || pmem2_source_from_fd(&src, fd)) goto fail;
    }
    struct pmem2_config *cfg;
    struct pmem2_map *map;
    if (pmem2_config_new(&cfg) || pmem2_config_set_required_store_granularity(cfg, 2) ||
        pmem2_map_new(&map, cfg, src))
        goto fail;
    char *dest = pmem2_map_get_address(map);
    memcpy_fn copy = pmem2_get_memcpy_fn(map);
    for (int a = 5; a < argc; a++) {
        size_t size = strtoull(argv[a], NULL, 10);
        long iters = atol(strchr(argv[a], ':') + 1);
        char *buf = malloc(size);
        for (size_t i = 0; i < size; i++) buf[i] = (char)(i * 7 + 1);
        copy(dest, buf, size, flags); /* warm up: the first copy faults the pages in */
        double best = 1e300;
        for (int r = 0; r < repeats; r++) {
            double t0 = now();
            for (long i = 0; i < iters; i++) copy(dest, buf, size, flags);
            double per = (now() - t0) / iters;
            if (per < best) best = per;
        }
        printf("%zu %.3f\n", size, best);
        free(buf);
    }
    return 0;
fail:
    fprintf(stderr, "libpmem2: %s\n", pmem2_errormsg());
    return 1;
}
"""


# -- helpers -------------------------------------------------------------------------------


def iterations(size: int, quick: bool) -> int:
    base = {256: 20000, 4096: 10000, 1 << 20: 400}[size]
    return base // 4 if quick else base


def best_of(repeat: int, loop: Callable[[], float]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(loop())
    return min(times)


def time_calls(call: Callable[[], object], iters: int, repeat: int) -> float:
    """Best-of-``repeat`` nanoseconds per call of ``call``."""

    def loop() -> float:
        t0 = time.perf_counter()
        for _ in range(iters):
            call()
        return (time.perf_counter() - t0) / iters * 1e9

    call()  # warm up
    return best_of(repeat, loop)


class Mapping:
    """One set with one part map of MAP_SIZE bytes, anonymous or a tmpfs file."""

    def __init__(self, kind: str, backend: pm.Backend, folder: str) -> None:
        self.kind = kind
        self.path: str | None = None
        if kind == "anonymous":
            source = pm.Source.anonymous(MAP_SIZE)
            granularity = pm.Granularity.PAGE
        else:
            self.path = os.path.join(folder, "bench-pool")
            source = pm.Source.from_file(self.path, pm.SourceFlag.CREATE_ALWAYS)
            granularity = pm.Granularity.BYTE
        self.source = source
        self.set = pm.Set(pm.Config(granularity=granularity, backend=backend))
        self.desc = self.set.map(pm.Part(source, 0, MAP_SIZE))

    def close(self) -> None:
        self.set.close()
        self.source.close()


# -- the C reference -----------------------------------------------------------------------


def build_reference(folder: str, library: str) -> tuple[str | None, str]:
    """The compiled reference program, or None and why not."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler found (set CC): the C reference is skipped"
    source = os.path.join(folder, "ref.c")
    exe = os.path.join(folder, "ref")
    with open(source, "w") as f:
        f.write(C_SOURCE)
    proc = subprocess.run(
        [cc, "-O2", "-o", exe, source, library], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None, f"compiling the C reference failed: {proc.stderr.strip()[:300]}"
    return exe, f"{cc} -O2, linked against {library}"


def run_reference(exe: str, path: str | None, repeat: int, quick: bool) -> dict[int, float]:
    args = [exe, path or "-", str(MAP_SIZE), str(repeat), "0"]
    args += [f"{size}:{iterations(size, quick)}" for size in SIZES]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=os.environ)
    if proc.returncode != 0:
        raise RuntimeError(f"the C reference failed: {proc.stderr}")
    out = {}
    for line in proc.stdout.split("\n"):
        if line.strip():
            size, ns = line.split()
            out[int(size)] = float(ns)
    return out


# -- Python measurements -------------------------------------------------------------------


def measure_set(s: pm.Set, addr: int, repeat: int, quick: bool) -> dict[int, float]:
    """ns per ``s.memcpy(addr, data)`` call, for each size."""
    out = {}
    rng = random.Random(1)
    for size in SIZES:
        data = rng.randbytes(size)
        out[size] = time_calls(partial(s.memcpy, addr, data), iterations(size, quick), repeat)
    return out


def measure_layers(m: Mapping, repeat: int, quick: bool) -> dict[str, float]:
    """At 256 B: the bare cffi call, the file-size check (file maps), the backend map's
    memmove (both), and the set's memcpy."""
    data = random.Random(2).randbytes(256)
    addr = m.desc.address
    bmap: Any = m.set._parts[0].map
    raw = bmap._memmove
    caller = sys._getframe()
    n = iterations(256, quick)
    out = {"cffi_call_ns": time_calls(lambda: raw(addr, data, 256, 0), n, repeat)}
    size_check = getattr(bmap, "_size", None)
    if size_check is not None:
        out["size_check_ns"] = time_calls(size_check, n, repeat)
    out["backend_memmove_ns"] = time_calls(
        lambda: bmap.memmove(addr, data, pm.MemFlag.NONE, caller), n, repeat
    )
    out["set_memcpy_ns"] = time_calls(lambda: m.set.memcpy(addr, data), n, repeat)
    return out


def measure_api_mode(folder: str, repeat: int, quick: bool) -> dict[str, Any]:
    """The same 256-byte copy through a compiled cffi (API mode) trampoline, for comparison."""
    import cffi  # type: ignore[import-untyped]
    from pmemsim_backends.real import _ffi

    lib_path = _ffi.binding().info.path
    ffi = cffi.FFI()
    ffi.cdef(
        "struct pmem2_map;"
        "void pmemsim_call_memmove(uintptr_t fn, uintptr_t dest, const char *src, size_t n,"
        " unsigned flags);"
    )
    ffi.set_source(
        "_pmemsim_bench_api",
        "#include <stdint.h>\n#include <stddef.h>\n"
        "typedef void *(*fn_t)(void *, const void *, size_t, unsigned);\n"
        "static void pmemsim_call_memmove(uintptr_t fn, uintptr_t dest, const char *src,"
        " size_t n, unsigned flags) { ((fn_t)fn)((void *)dest, src, n, flags); }\n",
        extra_link_args=[lib_path],
    )
    try:
        built = ffi.compile(tmpdir=folder, verbose=False)
    except Exception as exc:  # any build failure: report it, do not fail the benchmark
        return {"skipped": f"API mode build failed: {type(exc).__name__}: {exc}"[:300]}
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pmemsim_bench_api", built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = Mapping("anonymous", _real_backend(), folder)
    try:
        bmap: Any = m.set._parts[0].map
        fn = int(_ffi.binding().ffi.cast("uintptr_t", bmap._memmove))
        call = module.lib.pmemsim_call_memmove
        data = random.Random(3).randbytes(256)
        addr = m.desc.address
        n = iterations(256, quick)
        return {"trampoline_call_ns": time_calls(lambda: call(fn, addr, data, 256, 0), n, repeat)}
    finally:
        m.close()


def _best(old: dict[int, float] | None, new: dict[int, float]) -> dict[int, float]:
    return new if old is None else {k: min(v, new[k]) for k, v in old.items()}


def _real_backend() -> pm.Backend:
    return pm.load_backend("real")()


# -- report --------------------------------------------------------------------------------


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("mapping", "size", "C", "set.memcpy", "added", "of C bw", "simulator", "status")
    cells = [head]
    for r in rows:
        cells.append(
            (
                r["mapping"],
                _size(r["size"]),
                _fmt_ns(r["c_ns"]),
                _fmt_ns(r["python_ns"]),
                "-" if r["added_us"] is None else f"{r['added_us']:.2f} us",
                "-" if r["bandwidth_ratio"] is None else f"{r['bandwidth_ratio']:.0%}",
                _fmt_ns(r["sim_ns"]),
                r["status"],
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for n, c in enumerate(cells):
        print("  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i]) for i in range(8)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1024 else f"{n} B"


def build_rows(
    python: dict[str, dict[int, float]],
    c: dict[str, dict[int, float]] | None,
    sim: dict[int, float],
) -> list[dict[str, Any]]:
    rows = []
    for mapping, times in python.items():
        for size in SIZES:
            py = times[size]
            cn = c[mapping][size] if c is not None else None
            added = (py - cn) / 1000 if cn is not None else None
            ratio = cn / py if cn is not None else None
            status = "info"
            if cn is not None and size == 256:
                status = "pass" if added is not None and added <= ADDED_TARGET_US else "MISS"
            elif cn is not None and size == 1 << 20:
                status = "pass" if ratio is not None and ratio >= BANDWIDTH_TARGET else "MISS"
            rows.append(
                {
                    "mapping": mapping,
                    "size": size,
                    "c_ns": cn,
                    "python_ns": py,
                    "added_us": added,
                    "bandwidth_ratio": ratio,
                    "python_gb_per_s": size / py,
                    "c_gb_per_s": size / cn if cn else None,
                    "sim_ns": sim[size],
                    "status": status,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="best of 2 and fewer iterations")
    ap.add_argument("--api-mode", action="store_true", help="also time a compiled cffi call")
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    ap.add_argument("--dir", default="/dev/shm", help="folder of the file mapping (tmpfs)")
    args = ap.parse_args(argv)
    repeat = 2 if args.quick else 5
    started = time.perf_counter()

    from pmemsim_backends.real import unavailable_reason
    from pmemsim_backends.sim import SimBackend

    reason = unavailable_reason()
    if reason is not None:
        print(f"libpmem2 is unavailable: {reason}")
        print("BENCH_JSON " + json.dumps({"schema": SCHEMA, "skipped": reason}))
        return 0
    from pmemsim_backends.real import _ffi

    library = _ffi.binding().info.path
    # Both the set and the C child map the file with the same pretended granularity.
    os.environ["PMEM2_FORCE_GRANULARITY"] = "BYTE"
    mode = "quick, " if args.quick else ""
    print(f"pmemsim real-backend memcpy benchmark ({mode}best of {repeat})")
    print(f"libpmem2: {library}; file mapping in {args.dir} with PMEM2_FORCE_GRANULARITY=BYTE")
    with tempfile.TemporaryDirectory(prefix="pmemsim-bench-") as build_dir:
        exe, note = build_reference(build_dir, library)
        backend = _real_backend()
        python: dict[str, dict[int, float]] = {}
        c: dict[str, dict[int, float]] | None = {} if exe else None
        layers: dict[str, dict[str, float]] = {}
        for kind in ("anonymous", "tmpfs file"):
            print(f"{kind}: set.memcpy and the C reference, in turns ...", flush=True)
            m = Mapping("anonymous" if kind == "anonymous" else "file", backend, args.dir)
            try:
                # Rounds alternate Python and C, so that a noisy neighbour hurts both alike;
                # each figure is the best round.
                for _ in range(repeat):
                    py = measure_set(m.set, m.desc.address, 1, args.quick)
                    python[kind] = _best(python.get(kind), py)
                    if exe is not None and c is not None:
                        c[kind] = _best(c.get(kind), run_reference(exe, m.path, 1, args.quick))
                layers[kind] = measure_layers(m, repeat, args.quick)
            finally:
                m.close()
                if m.path:
                    os.unlink(m.path)
        print("simulator: set.memcpy ...", flush=True)
        sm = pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=SimBackend()))
        sd = sm.map(pm.Part(pm.Source.anonymous(MAP_SIZE)))
        sim = measure_set(sm, sd.address, repeat, args.quick)
        sm.close()
        api: dict[str, Any] = {}
        if args.api_mode:
            print("API mode trampoline ...", flush=True)
            api = measure_api_mode(build_dir, repeat, args.quick)
    rows = build_rows(python, c, sim)
    print()
    print_table(rows)
    print()
    print(f"C reference: {note}")
    for kind, lay in layers.items():
        check = lay.get("size_check_ns")
        print(
            f"where 256 B goes ({kind}): bare cffi call {_fmt_ns(lay['cffi_call_ns'])}"
            + ("" if check is None else f", file-size check (lseek) {_fmt_ns(check)}")
            + f", backend map.memmove {_fmt_ns(lay['backend_memmove_ns'])}"
            + f", set.memcpy {_fmt_ns(lay['set_memcpy_ns'])}"
        )
    if api:
        print(f"API mode: {api}")
    checked = [r for r in rows if r["status"] != "info"]
    missed = [f"{r['mapping']} {_size(r['size'])}" for r in checked if r["status"] == "MISS"]
    print(
        f"{len(checked) - len(missed)}/{len(checked)} targets met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
        + ("" if checked else " (no C reference: targets not checked)")
    )
    result = {
        "schema": SCHEMA,
        "quick": args.quick,
        "repeat": repeat,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "library": library,
        "c_reference": note,
        "targets": {"added_us_max_256": ADDED_TARGET_US, "bandwidth_ratio_min_1mib": 0.9},
        "rows": rows,
        "layers_256": layers,
        "api_mode": api,
        "all_targets_met": bool(checked) and not missed,
        "missed": missed,
        "wall_seconds": time.perf_counter() - started,
    }
    if args.json_out:
        folder = os.path.dirname(args.json_out)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(args.json_out, "w") as f:
            f.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("BENCH_JSON " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
