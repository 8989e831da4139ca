"""How check-log's cost scales with the log's length, the epoch's width and the pool's size, next
to pmreorder on the same logs, in the same run.

Run from the repository root (with pmemsim installed)::

    python bench/bench_scale.py --quick     # about a minute
    python bench/bench_scale.py             # the full grid, about half an hour on 2 cores
    python bench/bench_scale.py --json-out bench/results/scale.json

Logs are generated in pmemcheck's format: ``epochs`` times, ``stores`` 8-byte stores each to
its own cache line, a FLUSH of each line and a FENCE. Three sweeps around one shape:

* epochs: 100 ... 100,000 (2 stores an epoch, 4 KiB pool);
* stores per epoch: 1 ... 16 (1,000 epochs, 4 KiB pool);
* pool: 4 KiB ... 1 GiB registered, the *same* log (its stores in the first 4 KiB), so the
  rest of the pool is never touched (sparse); and one shape with 2 stores an epoch spread
  over a 64 MiB pool (every page touched in the end).

Each configuration runs in a child process of its own (so its peak RSS is its own), timed
from reading the log to the verdict (interpreter start-up and imports excluded, for every
tool alike). Tools:

* ``py-exact`` / ``py-acc``: check-log's exhaustive / accumulative engine with a trivial
  in-process Python checker;
* ``lib-exact`` / ``lib-acc``: the same with a trivial C library checker (``--checker-lib``,
  in worker processes);
* ``prog-exact`` / ``prog-acc``: ``true`` as the checker program (small shapes only);
* ``record``: check-log's replay alone (pmemsim.pmlog.fastreplay), its crash points
  streamed and dropped (what the replay costs per crash point, whatever the consumer does);
* ``pmreorder-lib-full`` / ``pmreorder-lib-acc``: pmreorder's ReorderFull /
  ReorderAccumulative with an in-process C library checker (its ``-c lib`` mode passes a
  str where ctypes wants bytes on Python 3, so the child patches that one call; nothing
  else of pmreorder is changed), on a pool file in /dev/shm;
* ``pmreorder-prog-full`` / ``pmreorder-prog-acc``: the same with ``true`` as the checker
  program.

``--shape 30000x2@64M`` (repeatable) runs only the shapes given, ``--tools py-acc,lib-acc``
only those tools.

The scaling exponents are least-squares slopes in log-log space: time against epochs (1 is
linear), seconds per crash point against the pool size (0 is independent of it), and so on.
A missed target shows in the table and the JSON, never as an exception. The last line is
``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peak_rss import peak_rss_bytes

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BASE = 0x10000000
SCHEMA = 1

#: Done-when targets (issue 16) this benchmark checks.
POOL_RATIO_MAX = 2.0  # seconds per crash point, 1 GiB pool / 4 KiB pool, same log
RSS_MAX_MB = 200.0  # peak RSS on 100,000 epochs x 2 stores

PMREORDER_CANDIDATES = (
    os.environ.get("PMREORDER", ""),
    str(Path(__file__).resolve().parent.parent.parent / "shared/tools/pmreorder/pmreorder.py"),
    "/work/shared/tools/pmreorder/pmreorder.py",
)


@dataclass(frozen=True)
class Shape:
    sweep: str
    epochs: int
    stores: int
    pool: int
    #: The stores fall in the first ``spread`` bytes of the pool.
    spread: int

    @property
    def name(self) -> str:
        where = "" if self.spread >= self.pool else f", stores in {_size(self.spread)}"
        return f"{self.epochs:,} x {self.stores}, {_size(self.pool)}{where}"


@dataclass
class Result:
    sweep: str
    shape: str
    tool: str
    epochs: int
    stores: int
    pool: int
    status: str  # "ok", "timeout", "skipped: ...", "failed: ..."
    seconds: float = 0.0
    points: int = 0
    images: int = 0
    exact: bool | None = None
    verdict: str = ""
    rss_mb: float = 0.0
    rss_start_mb: float = 0.0

    @property
    def us_per_point(self) -> float:
        return 1e6 * self.seconds / self.points if self.points else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _size(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


# -- logs ----------------------------------------------------------------------------------


def write_log(path: Path, pool_path: Path, shape: Shape, seed: int = 1) -> None:
    """The shape's log in pmemcheck's format (deterministic for a seed)."""
    rng = random.Random(seed)
    lines = shape.spread // 64
    recs = ["START", f"REGISTER_FILE;{pool_path};0x{BASE:x};0x{shape.pool:x};0x0"]
    value = 1
    with open(path, "w") as f:
        f.write("|".join(recs))
        for _ in range(shape.epochs):
            chosen = rng.sample(range(lines), shape.stores)
            out = []
            for line in chosen:
                addr = BASE + line * 64 + 8 * rng.randrange(8)
                out.append(f"STORE;0x{addr:x};0x{value:x};0x8")
                value += 1
            out += [f"FLUSH;0x{BASE + line * 64:x};0x40" for line in chosen]
            out.append("FENCE")
            f.write("|" + "|".join(out))
        f.write("|STOP\n")


# -- children ------------------------------------------------------------------------------


def _rss_mb() -> float:
    return peak_rss_bytes() / MIB


#: Each tool: who runs it, its checker, and its engine ("exact": pmemsim's exhaustive,
#: pmreorder's ReorderFull; "acc": the accumulative engines). "record" is pmemsim's replay
#: recording alone.
TOOLS: dict[str, tuple[str, str, str]] = {
    "py-exact": ("pmemsim", "py", "exact"),
    "py-acc": ("pmemsim", "py", "acc"),
    "lib-exact": ("pmemsim", "lib", "exact"),
    "lib-acc": ("pmemsim", "lib", "acc"),
    "prog-exact": ("pmemsim", "prog", "exact"),
    "prog-acc": ("pmemsim", "prog", "acc"),
    "record": ("pmemsim", "", ""),
    "pmreorder-lib-full": ("pmreorder", "lib", "exact"),
    "pmreorder-lib-acc": ("pmreorder", "lib", "acc"),
    "pmreorder-prog-full": ("pmreorder", "prog", "exact"),
    "pmreorder-prog-acc": ("pmreorder", "prog", "acc"),
}
#: Like with like: each pmemsim tool against the pmreorder tool with the same kind of
#: checker and the matching engine (issue 16's done-when).
PAIRS = (
    ("lib-acc", "pmreorder-lib-acc"),
    ("lib-exact", "pmreorder-lib-full"),
    ("prog-acc", "pmreorder-prog-acc"),
    ("prog-exact", "pmreorder-prog-full"),
)
#: Python checkers have no pmreorder counterpart: reported against the library rows.
INFO_PAIRS = (("py-acc", "pmreorder-lib-acc"), ("py-exact", "pmreorder-lib-full"))
#: Tools also run from the --baseline checkout (the code before a change, same run).
BASELINE_TOOLS = ("py-exact", "py-acc", "lib-exact", "lib-acc", "record")


def tool_of(name: str) -> tuple[str, str, str]:
    return TOOLS[name.removeprefix("base:")]


def child_pmemsim(spec: dict[str, Any]) -> dict[str, Any]:
    from pmemsim.pmlog import (
        FunctionChecker,
        LibChecker,
        ProgramChecker,
        Replay,
        check_log,
        parse_log,
    )

    _, kind, engine = tool_of(spec["tool"])
    start_rss = _rss_mb()
    t0 = time.perf_counter()
    text = Path(spec["log"]).read_text()
    replay = Replay.of(parse_log(text))
    del text
    if not kind:  # the recording alone: check-log's replay, crash points counted
        from pmemsim.pmlog.check import _image
        from pmemsim.pmlog.fastreplay import record_log

        count = [0, 0]

        def on_point(point: Any) -> None:
            count[0] += 1
            count[1] += point.state.image_count()

        img = _image(replay)
        try:
            record_log(replay, img, "barriers", on_point)
        finally:
            img.close()
        seconds = time.perf_counter() - t0
        return {
            "seconds": seconds,
            "points": count[0],
            "images": count[1],
            "verdict": "-",
            "exact": None,
            "rss_mb": _rss_mb(),
            "rss_start_mb": start_rss,
        }
    checker: Any
    if kind == "prog":
        checker = ProgramChecker((shutil.which("true") or "/bin/true",))
    elif kind == "lib":
        checker = LibChecker.parse(f"{spec['library']}:ok")
    else:
        checker = FunctionChecker(lambda image: True, "trivial")
    r = check_log(replay, checker, engine="accumulative" if engine == "acc" else "exhaustive")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "points": r.crash_points,
        "images": r.images_checked,
        "verdict": r.verdict,
        "exact": r.exact,
        "rss_mb": _rss_mb(),
        "rss_start_mb": start_rss,
    }


def child_pmreorder(spec: dict[str, Any]) -> dict[str, Any]:
    tool = Path(spec["pmreorder"])
    sys.path.insert(0, str(tool.parent))
    import consistencycheckwrap  # type: ignore[import-not-found]
    import pmreorder  # type: ignore[import-not-found]

    _, kind, engine = tool_of(spec["tool"])
    calls = [0]
    lib_check = consistencycheckwrap.LibChecker.check_consistency
    prog_check = consistencycheckwrap.ProgChecker.check_consistency

    def lib(self: Any, filename: str) -> int:
        calls[0] += 1
        return int(self._lib_func(filename.encode()))  # the one Python 3 fix

    def prog(self: Any, filename: str) -> int:
        calls[0] += 1
        return int(prog_check(self, filename))

    assert lib_check is not None
    consistencycheckwrap.LibChecker.check_consistency = lib
    consistencycheckwrap.ProgChecker.check_consistency = prog
    order = "ReorderAccumulative" if engine == "acc" else "ReorderFull"
    argv = ["pmreorder", "-l", spec["log"], "-r", order, "-o", spec["out"]]
    if kind == "lib":
        # pmreorder documents 1 as consistent but compares the result with 0 (0: consistent).
        argv += ["-c", "lib", "-p", spec["library"], "-n", "check"]
    else:
        argv += ["-c", "prog", "-p", shutil.which("true") or "/bin/true"]
    sys.argv = argv
    start_rss = _rss_mb()
    t0 = time.perf_counter()
    verdict = "consistent"
    try:
        pmreorder.main()
    except SystemExit as exc:
        verdict = "consistent" if not exc.code else "inconsistent"
    seconds = time.perf_counter() - t0
    if not calls[0]:
        raise SystemExit(f"pmreorder checked nothing ({verdict})")
    return {
        "seconds": seconds,
        "points": 0,
        "images": calls[0],
        "verdict": verdict,
        "exact": None,
        "rss_mb": _rss_mb(),
        "rss_start_mb": start_rss,
    }


def run_child(
    spec: dict[str, Any], timeout: float, baseline: str | None = None
) -> dict[str, Any] | str:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    env = None
    if baseline is not None:
        env = {**os.environ, "PYTHONPATH": baseline}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout"
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed: {tail[:100]}"
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def baseline_path(checkout: str, folder: Path) -> str:
    """A PYTHONPATH that imports ``pmemsim`` and ``pmemsim_backends`` from another
    checkout (the editable install maps ``pmemsim_backends`` to this one's backends/)."""
    where = folder / "baseline-path"
    where.mkdir()
    (where / "pmemsim").symlink_to(Path(checkout, "pmemsim").resolve())
    (where / "pmemsim_backends").symlink_to(Path(checkout, "backends").resolve())
    return str(where)


# -- the grid ------------------------------------------------------------------------------


def shapes(quick: bool) -> list[Shape]:
    if quick:
        epochs, widths, pools = (100, 1_000, 3_000), (1, 4, 8), (4 * KIB, MIB, GIB)
        pool_epochs, width_epochs, spread = 1_000, 300, None
    else:
        epochs, widths = (100, 1_000, 10_000, 100_000), (1, 2, 4, 8, 16)
        pools = (4 * KIB, MIB, 64 * MIB, GIB)
        pool_epochs, width_epochs, spread = (
            10_000,
            1_000,
            Shape("spread", 30_000, 2, 64 * MIB, 64 * MIB),
        )
    out = [Shape("epochs", e, 2, 4 * KIB, 4 * KIB) for e in epochs]
    out += [Shape("stores", width_epochs, k, 4 * KIB, 4 * KIB) for k in widths]
    out += [Shape("pool", pool_epochs, 2, p, 4 * KIB) for p in pools]
    if spread is not None:
        out.append(spread)
    return out


def tools_for(shape: Shape, quick: bool, baseline: bool) -> list[str]:
    tools = ["py-exact", "py-acc", "lib-exact", "lib-acc", "record"]
    tools += ["pmreorder-lib-acc", "pmreorder-lib-full"]
    # Programs cost a process per image: only where that stays in minutes.
    if shape.epochs * (shape.stores + 1) <= (400 if quick else 4_000):
        tools += ["prog-exact", "prog-acc", "pmreorder-prog-acc", "pmreorder-prog-full"]
    if baseline:
        tools += [f"base:{t}" for t in BASELINE_TOOLS]
    return tools


def build_library(folder: Path) -> str | None:
    """Trivial checkers: ``check`` for pmreorder (which takes 0 as consistent) and ``ok``
    for pmemsim (1 is consistent, as pmreorder documents it)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = folder / "check.c"
    src.write_text(
        "int check(const char *path) { (void)path; return 0; }\n"
        "int ok(const char *path) { (void)path; return 1; }\n"
    )
    lib = folder / "libcheck.so"
    done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=False)
    return str(lib) if done.returncode == 0 else None


def parse_shape(text: str) -> Shape:
    """``EPOCHSxSTORES@POOL[/SPREAD]`` (sizes with K, M or G), e.g. ``30000x2@64M``."""

    def size(t: str) -> int:
        unit = {"K": KIB, "M": MIB, "G": GIB}.get(t[-1:].upper(), 1)
        return int(t[:-1] if unit > 1 else t) * unit

    try:
        counts, where = text.split("@")
        epochs, stores = (int(x) for x in counts.lower().split("x"))
        pool, _, spread = where.partition("/")
        return Shape("chosen", epochs, stores, size(pool), size(spread or pool))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not EPOCHSxSTORES@POOL[/SPREAD]: {text!r}") from None


def run_grid(
    quick: bool,
    timeout: float,
    full_timeout: float,
    baseline: str | None,
    chosen: list[Shape] | None = None,
    only: list[str] | None = None,
) -> list[Result]:
    pmreorder = next((p for p in PMREORDER_CANDIDATES if p and Path(p).is_file()), None)
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pmemsim-scale-", dir=scratch) as tmp:
        folder = Path(tmp)
        library = build_library(folder)
        base_path = None if baseline is None else baseline_path(baseline, folder)
        for n, shape in enumerate(chosen or shapes(quick)):
            log = folder / f"shape{n}.log"
            pool = folder / f"pool{n}.bin"  # absent: zeros (pmreorder gets its own file)
            write_log(log, pool, shape)
            tools = tools_for(shape, quick, baseline is not None)
            for tool in tools if only is None else [t for t in only if t in TOOLS]:
                side, kind, engine = tool_of(tool)
                res = Result(
                    shape.sweep, shape.name, tool, shape.epochs, shape.stores, shape.pool, "ok"
                )
                spec: dict[str, Any] = {"tool": tool, "log": str(log), "library": library}
                if kind == "lib" and library is None:
                    res.status = "skipped: no C compiler"
                elif side == "pmreorder" and pmreorder is None:
                    res.status = "skipped: pmreorder not found"
                if res.status != "ok":
                    results.append(res)
                    continue
                if side == "pmreorder":
                    copy = folder / f"pmreorder{n}.log"
                    target = folder / f"pmreorder-pool{n}.bin"
                    with open(target, "wb") as f:
                        f.truncate(shape.pool)  # sparse: pmreorder maps the whole file
                    copy.write_text(log.read_text().replace(str(pool), str(target), 1))
                    spec.update(log=str(copy), pmreorder=pmreorder, out=str(folder / "pm.out"))
                limit = full_timeout if side == "pmreorder" and engine == "exact" else timeout
                print(f"  {shape.name:<32} {tool:<20}", end="", flush=True)
                out = run_child(spec, limit, base_path if tool.startswith("base:") else None)
                if isinstance(out, str):
                    res.status = out
                else:
                    for key, value in out.items():
                        setattr(res, key, value)
                print(_summary(res), flush=True)
                results.append(res)
                for leftover in folder.glob("pmreorder*"):
                    leftover.unlink()
    return results


def _summary(r: Result) -> str:
    if r.status != "ok":
        return f" {r.status}"
    return f" {r.seconds:8.2f} s  {r.images:>9,} images  {r.rss_mb:6.0f} MB"


# -- analysis ------------------------------------------------------------------------------


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x)."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def exponents(results: list[Result]) -> list[dict[str, Any]]:
    out = []
    tools = sorted({r.tool for r in results})
    axes = (
        ("epochs", "epochs", "seconds", lambda r: r.seconds),
        ("epochs", "epochs", "peak RSS", lambda r: r.rss_mb),
        ("stores", "stores", "seconds", lambda r: r.seconds),
        ("pool", "pool", "seconds per crash point", lambda r: r.us_per_point),
        ("pool", "pool", "peak RSS", lambda r: r.rss_mb),
    )
    for tool in tools:
        for sweep, attr, what, value in axes:
            rows = [r for r in results if r.sweep == sweep and r.tool == tool and r.status == "ok"]
            s = slope([(float(getattr(r, attr)), float(value(r))) for r in rows])
            if s is not None:
                out.append({"tool": tool, "against": attr, "of": what, "exponent": s})
    return out


def compare(results: list[Result], pairs: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    """Per pair and shape: pmemsim's tool against pmreorder's, both run on that shape."""
    by_shape: dict[str, dict[str, Result]] = {}
    for r in results:
        by_shape.setdefault(r.sweep + r.shape, {})[r.tool] = r
    out = []
    for mine, theirs in pairs:
        rows = []
        for v in by_shape.values():
            a, b = v.get(mine), v.get(theirs)
            if (
                a is None
                or b is None
                or a.status.startswith("skipped")
                or b.status.startswith("skipped")
            ):
                continue
            # Faster, or finished where pmreorder did not (its timeout).
            won = a.status == "ok" and (
                b.status == "timeout" or (b.status == "ok" and a.seconds < b.seconds)
            )
            ratio = b.seconds / a.seconds if a.status == b.status == "ok" and a.seconds else None
            rows.append({"shape": a.shape, "won": won, "ratio": ratio, "theirs": b.status})
        if rows:
            out.append({"mine": mine, "theirs": theirs, "shapes": rows})
    return out


def targets(results: list[Result], quick: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ok = [r for r in results if r.status == "ok"]
    for tool in ("py-exact", "lib-exact", "record"):
        pool = {r.pool: r for r in ok if r.sweep == "pool" and r.tool == tool}
        if 4 * KIB in pool and GIB in pool and pool[4 * KIB].us_per_point:
            ratio = pool[GIB].us_per_point / pool[4 * KIB].us_per_point
            out.append(
                {
                    "target": f"{tool}: s/crash point, 1 GiB / 4 KiB pool, same log",
                    "value": ratio,
                    "limit": f"<= {POOL_RATIO_MAX:g}",
                    "met": ratio <= POOL_RATIO_MAX,
                }
            )
        big = [r for r in ok if r.tool == tool and r.epochs == 100_000 and r.stores == 2]
        for r in big:
            out.append(
                {
                    "target": f"{tool}: peak RSS, 100,000 x 2 stores, {_size(r.pool)}",
                    "value": r.rss_mb,
                    "limit": f"< {RSS_MAX_MB:g} MB",
                    "met": r.rss_mb < RSS_MAX_MB,
                }
            )
    for c in compare(results, PAIRS):
        won = sum(s["won"] for s in c["shapes"])
        lost = [s["shape"] for s in c["shapes"] if not s["won"]]
        out.append(
            {
                "target": f"{c['mine']} faster than {c['theirs']} (or finishes where it does not)",
                "value": f"{won}/{len(c['shapes'])} shapes"
                + (f"; not on {', '.join(lost)}" if lost else ""),
                "limit": "every shape",
                "met": won == len(c["shapes"]),
            }
        )
    return out


def print_table(results: list[Result]) -> None:
    head = (
        f"{'sweep':<7} {'shape':<32} {'tool':<20} {'seconds':>9} {'points':>8} "
        f"{'images':>10} {'images/s':>10} {'us/point':>9} {'RSS MB':>7}  verdict"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if r.status != "ok":
            print(f"{r.sweep:<7} {r.shape:<32} {r.tool:<20} {r.status}")
            continue
        exact = "" if r.exact is None else (" (exact)" if r.exact else " (heuristic)")
        points = f"{r.points:,}" if r.points else "-"
        per = f"{r.us_per_point:,.0f}" if r.points else "-"
        print(
            f"{r.sweep:<7} {r.shape:<32} {r.tool:<20} {r.seconds:9.2f} {points:>8} "
            f"{r.images:>10,} {r.images_per_s:>10,.0f} {per:>9} {r.rss_mb:7.0f}  "
            f"{r.verdict}{exact}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small grid, about a minute")
    ap.add_argument("--timeout", type=float, help="seconds per run (default 60 quick, 900)")
    ap.add_argument(
        "--full-timeout",
        type=float,
        help="seconds per pmreorder ReorderFull run (default 20 quick, 120); past it, the run "
        "counts as not finishing",
    )
    ap.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also run some pmemsim tools (as base:TOOL) from another checkout of pmemsim, "
        "e.g. the code before a change, in the same run",
    )
    ap.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        metavar="EPOCHSxSTORES@POOL[/SPREAD]",
        help="run only this shape (repeatable), e.g. 30000x2@64M (stores over the whole pool) "
        "or 1000x4@64M/4K (stores in the first 4 KiB)",
    )
    ap.add_argument(
        "--tools",
        metavar="T1,T2",
        help=f"run only these tools (of {', '.join(TOOLS)})",
    )
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        run = child_pmreorder if spec["tool"].startswith("pmreorder") else child_pmemsim
        print(json.dumps(run(spec)))
        return 0
    timeout = args.timeout or (60.0 if args.quick else 900.0)
    started = time.perf_counter()
    print(f"check-log scaling ({'quick' if args.quick else 'full'} grid; one child per run)")
    full_timeout = args.full_timeout or (20.0 if args.quick else 120.0)
    only = None if args.tools is None else args.tools.split(",")
    results = run_grid(args.quick, timeout, full_timeout, args.baseline, args.shape, only)
    print()
    print_table(results)
    exps = exponents(results)
    print()
    print("scaling exponents (log-log least squares; 1 = linear, 0 = independent):")
    for e in exps:
        print(f"  {e['tool']:<15} {e['of']:<24} ~ {e['against']}^{e['exponent']:.2f}")
    checks = targets(results, args.quick)
    info = compare(results, PAIRS + INFO_PAIRS)
    print()
    print("pmreorder's time / pmemsim's, per shape (> 1: pmemsim faster; '-': did not finish):")
    for c in info:
        cells = ", ".join(
            f"{s['ratio']:.2f}" if s["ratio"] is not None else f"- ({s['theirs']})"
            for s in c["shapes"]
        )
        print(f"  {c['mine']:<11} vs {c['theirs']:<20} {cells}")
    print()
    for t in checks:
        value = t["value"] if isinstance(t["value"], str) else f"{t['value']:.2f}"
        print(f"  {'pass' if t['met'] else 'MISS'}  {t['target']}: {value} ({t['limit']})")
    result = {
        "schema": SCHEMA,
        "quick": args.quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": [
            {**asdict(r), "us_per_point": r.us_per_point, "images_per_s": r.images_per_s}
            for r in results
        ],
        "exponents": exps,
        "targets": checks,
        "comparisons": info,
        "all_targets_met": all(t["met"] for t in checks),
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
