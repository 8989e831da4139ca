"""How check-log's cost scales with the log's length, the epoch's width and the pool's size, next
to pmreorder on the same logs, in the same run.

Run from the repository root (with pmemsim installed)::

    python bench/bench_scale.py --quick     # a small grid, each run once: about 75 s
    python bench/bench_scale.py             # the full grid, best of 3: hours on 2 cores
    python bench/bench_scale.py --shape 1x4@64M --shape 1000x4@4K --tools lib-acc,pmreorder-lib-acc
    python bench/bench_scale.py --json-out bench/results/scale.json

Logs are generated in pmemcheck's format: ``epochs`` times, ``stores`` 8-byte stores each to
its own cache line, a FLUSH of each line and a FENCE. Three sweeps around one shape:

* epochs: 100 ... 100,000 (2 stores an epoch, 4 KiB pool);
* stores per epoch: 1 ... 16 (1,000 epochs, 4 KiB pool);
* pool: 4 KiB ... 1 GiB registered, the *same* log (its stores in the first 4 KiB), so the
  rest of the pool is never touched (sparse); and one shape with 2 stores an epoch spread
  over a 64 MiB pool (every page touched in the end).

Every tool is timed two ways, each run a fresh child process:

* **whole run**: what a user waits for, the wall time of the tool's own command line from
  exec to exit (interpreter start-up, imports, reading the log, the verdict), measured by
  this process around the child. pmemsim: ``python -m pmemsim check-log LOG --engine
  exhaustive|accumulative`` with ``--checker-py FILE.py:ok``, ``--checker-lib LIB.so:ok``
  or ``-- true``. pmreorder: ``python pmreorder.py -l LOG -r ReorderFull|ReorderAccumulative
  -o OUT -c prog -p /bin/true``, and for ``-c lib -p LIB.so -n check``
  ``python bench/pmreorder_lib.py pmreorder.py ...``: pmreorder's ``-c lib`` mode passes a
  str where ctypes wants bytes on Python 3, and that wrapper changes that one call, then
  runs pmreorder.py as ``__main__`` (nothing else of pmreorder is changed);
* **after start-up**: in a child of this script, from reading the log to the verdict (the
  interpreter's start-up and the tool's imports excluded, the same for every tool), which
  also counts crash points and checker calls and reads the child's peak RSS (VmHWM).
  pmemsim's check_log API with the same checkers; pmreorder's ``main()`` with the same
  arguments and the same one-call patch. pmemsim's imports include the modules its check
  imports on first use (:data:`LAZY`), and a library checker is loaded before the clock
  starts (its worker process started before the child's imports, as the command line
  starts it, and ``LibChecker.parse(...).loaded()``: the library loaded there, usually
  already); pmreorder loads its library in ``main()``, a ``dlopen`` of well under a
  millisecond.

Each configuration is measured ``--repeat N`` times (default 3, 1 with ``--quick``) and
the best time of each measure is kept, because this VM is shared and noisy. Children run
with bytecode cached in a scratch folder (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE
unset), as from an installed package, for every tool alike, and every tool runs once on a
one-store log before it is timed, so no timed run compiles a module (pmreorder.py itself, a
script, is compiled on every run, as a user's pmreorder is).

Tools:

* ``py-exact`` / ``py-acc``: check-log's exhaustive / accumulative engine with a trivial
  in-process Python checker (``lambda image: True``);
* ``lib-exact`` / ``lib-acc``: the same with a trivial C library checker (``--checker-lib``,
  in worker processes);
* ``prog-exact`` / ``prog-acc``: ``true`` as the checker program (small shapes only);
* ``record``: check-log's replay alone (pmemsim.pmlog.fastreplay), its crash points
  streamed and dropped (what the replay costs per crash point, whatever the consumer does);
  it has no command line, so no whole run;
* ``pmreorder-lib-full`` / ``pmreorder-lib-acc``: pmreorder's ReorderFull /
  ReorderAccumulative with an in-process C library checker, on a pool file in /dev/shm;
* ``pmreorder-prog-full`` / ``pmreorder-prog-acc``: the same with ``true`` as the checker
  program.

Counts: ``checks`` is how many times the checker ran, for both tools: pmreorder checks every
state it produces, duplicates included; pmemsim checks each distinct image once (with one
registered file, ``checks`` equals ``distinct``, the distinct images pmemsim judged).
``possible`` is pmemsim's images possible summed over crash points, duplicates across points
included (for ``record``, the only count: it checks nothing). pmreorder's distinct states
are not counted (hashing every state would slow its timed run).

``--shape 30000x2@64M`` (repeatable) runs only the shapes given, ``--tools py-acc,lib-acc``
only those tools (with ``--baseline CHECKOUT``, each pmemsim tool also as ``base:TOOL``
from that checkout, the code before a change, in the same run); ``--interleave`` runs a
shape's tools in turn, one run each per round, so that a burst of load on the shared VM
falls on every tool alike; with it, ``--budget SECONDS`` adds rounds past ``--repeat``
while a shape's rounds fit in SECONDS, so that a shape whose runs take milliseconds (which
this VM runs at either of two speeds) is measured dozens of times and a long one
``--repeat`` times.

The scaling exponents are least-squares slopes in log-log space of the after-start-up times:
time against epochs (1 is linear), seconds per crash point against the pool size (0 is
independent of it), and so on. A missed target shows in the table and the JSON, never as an
exception. The last line is ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peak_rss import peak_rss_bytes

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BASE = 0x10000000
SCHEMA = 2
HERE = Path(__file__).resolve().parent
TRUE = shutil.which("true") or "/bin/true"

#: Done-when targets (issue 16) this benchmark checks.
POOL_RATIO_MAX = 2.0  # seconds per crash point, 1 GiB pool / 4 KiB pool, same log
RSS_MAX_MB = 200.0  # peak RSS on 100,000 epochs x 2 stores

PMREORDER_CANDIDATES = (
    os.environ.get("PMREORDER", ""),
    str(HERE.parent.parent / "shared/tools/pmreorder/pmreorder.py"),
    "/work/shared/tools/pmreorder/pmreorder.py",
)

#: The two measures: Result's attribute for each, and how it is labelled.
MEASURES = (
    ("whole", "whole run (exec to exit, as a user waits)"),
    ("after", "after start-up (reading the log to the verdict)"),
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
    #: The after-start-up measure: "ok", "timeout", "skipped: ...", "failed: ...".
    status: str
    #: Best after-start-up seconds over the repeats.
    seconds: float = 0.0
    #: The whole-run measure: as ``status``, or "none" (``record`` has no command line).
    whole_status: str = "ok"
    #: Best whole-run seconds over the repeats.
    whole_seconds: float = 0.0
    #: Runs of each measure made (the best kept).
    repeats: int = 0
    points: int = 0
    #: Checker calls: pmreorder one per state (duplicates included), pmemsim one per
    #: distinct image and file.
    checks: int = 0
    #: pmemsim: distinct images judged; None for pmreorder (not counted) and ``record``.
    distinct: int | None = None
    #: pmemsim: images possible, summed over crash points (duplicates across points included).
    possible: int | None = None
    exact: bool | None = None
    verdict: str = ""
    rss_mb: float = 0.0
    rss_start_mb: float = 0.0

    def measured(self, measure: str) -> tuple[str, float]:
        return (
            (self.whole_status, self.whole_seconds)
            if measure == "whole"
            else (
                self.status,
                self.seconds,
            )
        )

    @property
    def us_per_point(self) -> float:
        return 1e6 * self.seconds / self.points if self.points else 0.0

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.seconds if self.seconds > 0 else 0.0


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


# -- children (after start-up) ---------------------------------------------------------------


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
#: Tools also run from the --baseline checkout (the code before a change, same run) in the
#: full grid; --tools adds base:TOOL for each pmemsim tool it names.
BASELINE_TOOLS = ("py-exact", "py-acc", "lib-exact", "lib-acc", "record")


def tool_of(name: str) -> tuple[str, str, str]:
    return TOOLS[name.removeprefix("base:")]


#: The modules pmemsim's check imports on first use (after ``pmemsim.pmlog``): imported by
#: the after-start-up child before it starts the clock, as pmreorder's child imports
#: pmreorder.
LAZY = (
    "pmemsim.explore.runtimer",
    "pmemsim.pmlog.slots",
    "pmemsim.pmlog.speculate",
    "pmemsim.pmlog.waiting",
    "pmemsim.pmlog.workers",
    "pmemsim.scratch",
    "pmemsim_backends.sim.images",
    "pmemsim_backends.sim.lint",
)


def child_pmemsim(spec: dict[str, Any]) -> dict[str, Any]:
    _, kind, engine = tool_of(spec["tool"])
    if kind == "lib":
        # As the command line does (pmemsim.cli.run): the library's worker started first
        # thing, so that it loads while this process imports. Started after the imports,
        # it kept this process waiting some 14 ms right before the clock, which left the
        # check to run on cold caches (its first 5 images 0.2 ms slower; no other tool
        # waits before its clock).
        from pmemsim.pmlog import forked

        if hasattr(forked, "start_early"):  # (a --baseline checkout may not have it)
            forked.start_early(f"{spec['library']}:ok")
    from pmemsim.pmlog import (
        FunctionChecker,
        LibChecker,
        ProgramChecker,
        Replay,
        check_log,
        parse_log,
    )

    # Start-up, as for pmreorder its imports: what a check imports on first use, and the
    # checker loaded (a library's worker started above, and taken by the checker here).
    for name in LAZY:
        with contextlib.suppress(ImportError):  # (a --baseline checkout may not have it)
            importlib.import_module(name)
    checker: Any
    if kind == "prog":
        checker = ProgramChecker((TRUE,))
    elif kind == "lib":
        checker = LibChecker.parse(f"{spec['library']}:ok")
        if hasattr(checker, "loaded"):
            checker.loaded()
    else:
        checker = FunctionChecker(lambda image: True, "trivial")
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
            "checks": 0,
            "distinct": None,
            "possible": count[1],
            "verdict": "-",
            "exact": None,
            "rss_mb": _rss_mb(),
            "rss_start_mb": start_rss,
        }
    r = check_log(replay, checker, engine="accumulative" if engine == "acc" else "exhaustive")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "points": r.crash_points,
        # A checkout from before checker_runs counted the distinct images' checks only.
        "checks": getattr(r, "checker_runs", 0) or r.images_checked,
        "distinct": r.images_checked,
        "possible": r.images_possible,
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
    from pmreorder_lib import patch_lib_checker

    patch_lib_checker(consistencycheckwrap)  # the same one call as the whole run's
    calls = [0]
    for cls in (consistencycheckwrap.LibChecker, consistencycheckwrap.ProgChecker):

        def counted(self: Any, filename: str, _check: Any = cls.check_consistency) -> Any:
            calls[0] += 1
            return _check(self, filename)

        cls.check_consistency = counted
    sys.argv = ["pmreorder.py", *spec["argv"]]
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
        "checks": calls[0],
        "distinct": None,
        "possible": None,
        "verdict": verdict,
        "exact": None,
        "rss_mb": _rss_mb(),
        "rss_start_mb": start_rss,
    }


# -- running children ------------------------------------------------------------------------


def _run(
    cmd: list[str], timeout: float, env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float] | None:
    """Run ``cmd`` in a session of its own (on timeout its whole group is killed, a checker
    worker included); None on timeout, else the process and its wall time, exec to exit.
    ``cwd``: a folder with no pmemsim in it (``python -m pmemsim`` imports from the current
    folder before PYTHONPATH: from a checkout, a baseline run would mix the two)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    seconds = time.perf_counter() - t0
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seconds


def _failure(done: subprocess.CompletedProcess[str]) -> str:
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed: exit {done.returncode}: {tail[:100]}"


@dataclass
class Job:
    """One tool on one log: the after-start-up child's spec and the whole run's command."""

    tool: str
    spec: dict[str, Any]
    #: The tool's own command line; None when it has none (``record``).
    command: list[str] | None
    env: dict[str, str]
    #: Where the tool runs: the run's scratch folder.
    cwd: Path
    #: pmreorder writes its states into the registered file and its report to ``-o``: the
    #: file is made afresh (zeros, sparse) and the report removed before every run.
    pool_file: Path | None = None
    pool_size: int = 0
    report: Path | None = None

    def reset(self) -> None:
        if self.pool_file is not None:
            with open(self.pool_file, "wb") as f:
                f.truncate(self.pool_size)
        if self.report is not None and self.report.exists():
            self.report.unlink()

    def after_startup(self, timeout: float) -> dict[str, Any] | str:
        self.reset()
        child = [sys.executable, __file__, "--child", json.dumps(self.spec)]
        ran = _run(child, timeout, self.env, self.cwd)
        if ran is None:
            return "timeout"
        done, _ = ran
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            return _failure(done)
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    def whole_run(self, timeout: float) -> float | str:
        assert self.command is not None
        self.reset()
        ran = _run(self.command, timeout, self.env, self.cwd)
        if ran is None:
            return "timeout"
        done, seconds = ran
        # Every log here is consistent for the trivial checkers: both tools exit 0.
        return seconds if done.returncode == 0 else _failure(done)


@dataclass
class Setup:
    """What every job of a run shares."""

    folder: Path
    library: str | None
    checker_py: Path
    pmreorder: str | None
    env: dict[str, str]
    baseline_env: dict[str, str] | None


def child_env(folder: Path, pythonpath: str | None = None) -> dict[str, str]:
    """Bytecode cached in ``folder`` (as an installed package has it), for every child alike:
    PYTHONDONTWRITEBYTECODE, set here, would make each child compile every module it imports."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return env


def make_job(setup: Setup, tool: str, log: Path, pool: Path, pool_size: int, n: int) -> Job:
    """``tool`` on ``log`` (which registers ``pool``, ``pool_size`` bytes)."""
    side, kind, engine = tool_of(tool)
    if side == "pmemsim":
        env = setup.baseline_env if tool.startswith("base:") else setup.env
        assert env is not None
        spec: dict[str, Any] = {"tool": tool, "log": str(log), "library": setup.library}
        if not kind:
            return Job(tool, spec, None, env, setup.folder)
        cmd = [sys.executable, "-m", "pmemsim", "check-log", str(log)]
        cmd += ["--engine", "accumulative" if engine == "acc" else "exhaustive"]
        if kind == "py":
            cmd += ["--checker-py", f"{setup.checker_py}:ok"]
        elif kind == "lib":
            cmd += ["--checker-lib", f"{setup.library}:ok"]
        else:
            cmd += ["--", TRUE]
        return Job(tool, spec, cmd, env, setup.folder)
    # pmreorder: its own copy of the log, registering a file of its own.
    assert setup.pmreorder is not None
    copy = setup.folder / f"pmreorder{n}.log"
    target = setup.folder / f"pmreorder-pool{n}.bin"
    report = setup.folder / f"pmreorder{n}.out"
    copy.write_text(log.read_text().replace(str(pool), str(target), 1))
    order = "ReorderAccumulative" if engine == "acc" else "ReorderFull"
    argv = ["-l", str(copy), "-r", order, "-o", str(report)]
    if kind == "lib":
        # pmreorder documents 1 as consistent but compares the result with 0 (0: consistent).
        argv += ["-c", "lib", "-p", str(setup.library), "-n", "check"]
        cmd = [sys.executable, str(HERE / "pmreorder_lib.py"), setup.pmreorder, *argv]
    else:
        argv += ["-c", "prog", "-p", TRUE]
        cmd = [sys.executable, setup.pmreorder, *argv]
    spec = {"tool": tool, "pmreorder": setup.pmreorder, "argv": argv}
    return Job(tool, spec, cmd, setup.env, setup.folder, target, pool_size, report)


def measure(job: Job, res: Result, repeat: int, timeout: float) -> None:
    """Best of ``repeat`` runs of each measure, alternating them; a run that fails or times
    out ends that measure (its status says why)."""
    if job.command is None:
        res.whole_status = "none"
    for _ in range(repeat):
        if res.status == "ok":
            out = job.after_startup(timeout)
            if isinstance(out, str):
                res.status = out
            elif res.repeats == 0 or out["seconds"] < res.seconds:
                for key, value in out.items():
                    setattr(res, key, value)
        if res.whole_status == "ok":
            got = job.whole_run(timeout)
            if isinstance(got, str):
                res.whole_status = got
            elif res.repeats == 0 or got < res.whole_seconds:
                res.whole_seconds = got
        res.repeats += 1


def another_round(done: int, least: int, spent: float, budget: float) -> bool:
    """Whether a shape's tools run another round: ``least`` rounds, then more while one
    more (as long as the rounds so far on average) ends within ``budget`` seconds of the
    first's start. Short shapes get many rounds: on this VM a run of a few milliseconds
    can come out at either of two speeds, and a best of few may catch one tool only at
    the slow one."""
    if done < least:
        return True
    return budget > 0 and done > 0 and spent * (done + 1) / done <= budget


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
    epochs: tuple[int, ...]
    widths: tuple[int, ...]
    pools: tuple[int, ...]
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


def chosen_tools(only: list[str], baseline: bool) -> list[str]:
    """``--tools``' names in order, each pmemsim tool followed by its ``base:`` twin when a
    baseline is given (a ``base:`` name may also be given itself)."""
    out: list[str] = []
    for name in only:
        twins = [name]
        if baseline and not name.startswith("base:") and TOOLS[name][0] == "pmemsim":
            twins.append(f"base:{name}")
        out += [t for t in twins if t not in out]
    return out


def check_tools(text: str, baseline: bool) -> list[str] | str:
    """The names of ``--tools``, or why they are refused."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        return "--tools: no tool named"
    for t in names:
        plain = t.removeprefix("base:")
        if plain not in TOOLS:
            return f"--tools: unknown tool {t!r} (of {', '.join(TOOLS)})"
        if t != plain and (not baseline or TOOLS[plain][0] != "pmemsim"):
            return f"--tools: {t!r} needs --baseline and a pmemsim tool"
    return names


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
    repeat: int = 1,
    interleave: bool = False,
    budget: float = 0.0,
) -> list[Result]:
    pmreorder = next((p for p in PMREORDER_CANDIDATES if p and Path(p).is_file()), None)
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pmemsim-scale-", dir=scratch) as tmp:
        folder = Path(tmp)
        checker_py = folder / "trivial_checker.py"
        checker_py.write_text("def ok(image):\n    return True\n")
        setup = Setup(
            folder,
            build_library(folder),
            checker_py,
            pmreorder,
            child_env(folder),
            None if baseline is None else child_env(folder, baseline_path(baseline, folder)),
        )
        warm_log, warm_pool = folder / "warm.log", folder / "warm.bin"
        write_log(warm_log, warm_pool, Shape("warm", 1, 1, 4 * KIB, 4 * KIB))
        warmed: set[str] = set()
        for n, shape in enumerate(chosen or shapes(quick)):
            log = folder / f"shape{n}.log"
            pool = folder / f"pool{n}.bin"  # absent: zeros (pmreorder gets its own file)
            write_log(log, pool, shape)
            tools = tools_for(shape, quick, baseline is not None)
            pending: list[tuple[Job, Result, float]] = []
            for tool in tools if only is None else chosen_tools(only, baseline is not None):
                side, kind, engine = tool_of(tool)
                res = Result(
                    shape.sweep, shape.name, tool, shape.epochs, shape.stores, shape.pool, "ok"
                )
                if kind == "lib" and setup.library is None:
                    res.status = res.whole_status = "skipped: no C compiler"
                elif side == "pmreorder" and pmreorder is None:
                    res.status = res.whole_status = "skipped: pmreorder not found"
                if res.status != "ok":
                    results.append(res)
                    continue
                if tool not in warmed:  # bytecode written, caches warm: results dropped
                    warm = make_job(setup, tool, warm_log, warm_pool, 4 * KIB, -1)
                    measure(warm, Result("", "", tool, 0, 0, 0, "ok"), 1, timeout)
                    warmed.add(tool)
                job = make_job(setup, tool, log, pool, shape.pool, n)
                limit = full_timeout if side == "pmreorder" and engine == "exact" else timeout
                pending.append((job, res, limit))
                results.append(res)
            # Interleaved, each round runs every tool once: a burst of load on this shared
            # VM then falls on all of them, not on one tool's runs.
            rounds, began = 0, time.perf_counter()
            while pending and another_round(
                rounds, repeat if interleave else 1, time.perf_counter() - began, budget
            ):
                for job, res, limit in pending:
                    measure(job, res, 1 if interleave else repeat, limit)
                rounds += 1
            for job, res, _ in pending:
                print(f"  {shape.name:<32} {job.tool:<20}{_summary(res)}", flush=True)
            for leftover in folder.glob("pmreorder*"):
                leftover.unlink()
    return results


def _cell(status: str, seconds: float, width: int = 8) -> str:
    if status == "ok":
        return f"{seconds:{width}.3f}"
    return f"{'-' if status == 'none' else status.split(':')[0]:>{width}}"


def _summary(r: Result) -> str:
    if r.status.startswith("skipped"):
        return f" {r.status}"
    text = (
        f" whole {_cell(r.whole_status, r.whole_seconds)} s, after start-up "
        f"{_cell(r.status, r.seconds)} s"
    )
    if r.status == "ok":
        text += f", {r.checks:>9,} checks, {r.rss_mb:4.0f} MB"
    for what, status in (("whole", r.whole_status), ("after start-up", r.status)):
        if status not in ("ok", "none", "timeout"):
            text += f"  [{what}: {status}]"
    return text


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
    axes: tuple[tuple[str, str, str, Callable[[Result], float]], ...] = (
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


def compare(
    results: list[Result], pairs: tuple[tuple[str, str], ...], measure: str
) -> list[dict[str, Any]]:
    """Per pair and shape: pmemsim's tool against pmreorder's, both run on that shape, by
    one measure ("whole" or "after")."""
    by_shape: dict[str, dict[str, Result]] = {}
    for r in results:
        by_shape.setdefault(r.sweep + r.shape, {})[r.tool] = r
    out = []
    for mine, theirs in pairs:
        rows = []
        for v in by_shape.values():
            a, b = v.get(mine), v.get(theirs)
            if a is None or b is None:
                continue
            (a_status, a_s), (b_status, b_s) = a.measured(measure), b.measured(measure)
            if a_status.startswith("skipped") or b_status.startswith("skipped"):
                continue
            # Faster, or finished where pmreorder did not (its timeout).
            won = a_status == "ok" and (b_status == "timeout" or (b_status == "ok" and a_s < b_s))
            ratio = b_s / a_s if a_status == b_status == "ok" and a_s else None
            rows.append(
                {
                    "sweep": a.sweep,
                    "shape": a.shape,
                    "won": won,
                    "ratio": ratio,
                    "mine_seconds": a_s if a_status == "ok" else None,
                    "theirs_seconds": b_s if b_status == "ok" else None,
                    "mine": a_status,
                    "theirs": b_status,
                }
            )
        if rows:
            out.append({"measure": measure, "mine": mine, "theirs": theirs, "shapes": rows})
    return out


def targets(results: list[Result]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ok = [r for r in results if r.status == "ok"]
    for tool in ("py-exact", "lib-exact", "record"):
        pool = {r.pool: r for r in ok if r.sweep == "pool" and r.tool == tool}
        if 4 * KIB in pool and GIB in pool and pool[4 * KIB].us_per_point:
            ratio = pool[GIB].us_per_point / pool[4 * KIB].us_per_point
            out.append(
                {
                    "measure": "after",
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
                    "measure": "after",
                    "target": f"{tool}: peak RSS, 100,000 x 2 stores, {_size(r.pool)}",
                    "value": r.rss_mb,
                    "limit": f"< {RSS_MAX_MB:g} MB",
                    "met": r.rss_mb < RSS_MAX_MB,
                }
            )
    for measure, _ in MEASURES:
        for c in compare(results, PAIRS, measure):
            won = sum(s["won"] for s in c["shapes"])
            lost = [f"{s['sweep']} {s['shape']}" for s in c["shapes"] if not s["won"]]
            wins = [f"{s['sweep']} {s['shape']}" for s in c["shapes"] if s["won"]]
            out.append(
                {
                    "measure": measure,
                    "target": f"{c['mine']} faster than {c['theirs']} "
                    "(or finishes where it does not)",
                    "value": f"{won}/{len(c['shapes'])} shapes"
                    + (
                        ""
                        if not lost
                        else f"; not on {'; '.join(lost)}"
                        if len(lost) <= len(wins)
                        else f"; only on {'; '.join(wins)}"
                        if wins
                        else ""
                    ),
                    "limit": "every shape",
                    "met": won == len(c["shapes"]),
                }
            )
    return out


def print_table(results: list[Result]) -> None:
    head = (
        f"{'sweep':<7} {'shape':<32} {'tool':<23} {'whole s':>8} {'after s':>8} {'points':>8} "
        f"{'checks':>9} {'distinct':>9} {'possible':>9} {'checks/s':>9} {'us/point':>8} "
        f"{'RSS MB':>6}  verdict"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if r.status.startswith("skipped"):
            print(f"{r.sweep:<7} {r.shape:<32} {r.tool:<23} {r.status}")
            continue
        whole = _cell(r.whole_status, r.whole_seconds)
        if r.status != "ok":
            print(f"{r.sweep:<7} {r.shape:<32} {r.tool:<23} {whole} {r.status}")
            continue
        exact = "" if r.exact is None else (" (exact)" if r.exact else " (heuristic)")

        def count(n: int | None) -> str:
            return f"{n:,}" if n else "-"

        rate = f"{r.checks_per_s:,.0f}" if r.checks else "-"
        per = f"{r.us_per_point:,.0f}" if r.points else "-"
        print(
            f"{r.sweep:<7} {r.shape:<32} {r.tool:<23} {whole} {r.seconds:8.3f} "
            f"{count(r.points):>8} {count(r.checks):>9} {count(r.distinct):>9} "
            f"{count(r.possible):>9} {rate:>9} {per:>8} {r.rss_mb:6.0f}  {r.verdict}{exact}"
        )
    print(
        "whole s: exec to exit of the tool's command line; after s: reading the log to the "
        "verdict;\nboth the best of the runs made. checks: checker calls (pmreorder: one per "
        "state, duplicates\nincluded; pmemsim: one per distinct image); distinct: images "
        "pmemsim judged; possible:\nimages possible summed over crash points (duplicates "
        "included); checks/s and us/point after\nstart-up; RSS MB: the after-start-up "
        "child's own peak (not its checker programs' or pmemsim's\nlibrary-checker workers')."
    )
    for r in results:
        if r.whole_status not in ("ok", "none") and not r.whole_status.startswith("skipped"):
            print(f"  {r.shape}, {r.tool}, whole run: {r.whole_status}")
        if r.status not in ("ok",) and not r.status.startswith("skipped"):
            print(f"  {r.shape}, {r.tool}, after start-up: {r.status}")


def print_comparisons(info: dict[str, list[dict[str, Any]]], runs: str) -> None:
    """One table per measure: a row per shape, a column per pmemsim tool (against its
    pmreorder counterpart), pmreorder's time over pmemsim's in each cell."""
    pairs = [
        p for p in PAIRS + INFO_PAIRS if any(c["mine"] == p[0] for m in info.values() for c in m)
    ]
    if not pairs:
        return
    print()
    print(
        f"pmreorder's time / pmemsim's, per shape (> 1: pmemsim faster; best of {runs}; "
        "'A/B': pmemsim's and\npmreorder's status where not both finished; blank: not run).\n"
        "columns: pmemsim's tools, against "
        + "; ".join(
            f"{theirs} ({', '.join(m for m, t in pairs if t == theirs)})"
            for theirs in dict.fromkeys(t for _, t in pairs)
        )
        + ":"
    )
    for measure, label in MEASURES:
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for c in info[measure]:
            for row in c["shapes"]:
                if row["ratio"] is not None:
                    text = f"{row['ratio']:.2f}"
                else:
                    text = f"{row['mine'].split(':')[0]}/{row['theirs'].split(':')[0]}"
                cells.setdefault((row["sweep"], row["shape"]), {})[c["mine"]] = text
        print(f" {label}:")
        print(f"  {'sweep':<7} {'shape':<33}" + "".join(f"{m:>11}" for m, _ in pairs))
        for (sweep, shape), row_cells in cells.items():
            print(
                f"  {sweep:<7} {shape:<33}"
                + "".join(f"{row_cells.get(m, ''):>11}" for m, _ in pairs)
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small grid, each run once")
    ap.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="runs of each measure per configuration, the best kept (default 3; 1 with --quick)",
    )
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
        help="also run pmemsim tools (as base:TOOL) from another checkout of pmemsim, "
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
        help=f"run only these tools (of {', '.join(TOOLS)}; with --baseline each pmemsim "
        "tool also as base:TOOL)",
    )
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="run each shape's tools in turn, once per round, --repeat rounds (instead of each "
        "tool's runs in a row): fairer comparisons on a loaded machine",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --interleave, more rounds than --repeat while they fit in SECONDS per "
        "shape: short shapes measured many times",
    )
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        run = child_pmreorder if spec["tool"].startswith("pmreorder") else child_pmemsim
        print(json.dumps(run(spec)))
        return 0
    only = None
    if args.tools is not None:
        checked = check_tools(args.tools, args.baseline is not None)
        if isinstance(checked, str):
            ap.error(checked)
        only = checked
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        ap.error("--repeat: at least 1")
    if args.budget < 0 or (args.budget and not args.interleave):
        ap.error("--budget: seconds >= 0, with --interleave")
    runs = f"{repeat}" + (f" or more within {args.budget:g} s a shape" if args.budget else "")
    timeout = args.timeout or (60.0 if args.quick else 900.0)
    full_timeout = args.full_timeout or (20.0 if args.quick else 120.0)
    started = time.perf_counter()
    print(
        f"check-log scaling ({'quick' if args.quick else 'full'} grid; a fresh child per run; "
        f"best of {runs} run(s) of each measure per configuration, as this shared VM is "
        "noisy)"
    )
    results = run_grid(
        args.quick,
        timeout,
        full_timeout,
        args.baseline,
        args.shape,
        only,
        repeat,
        args.interleave,
        args.budget,
    )
    print()
    print_table(results)
    exps = exponents(results)
    print()
    print("scaling exponents, after start-up (log-log least squares; 1 = linear, 0 = independent):")
    for e in exps:
        print(f"  {e['tool']:<15} {e['of']:<24} ~ {e['against']}^{e['exponent']:.2f}")
    checks = targets(results)
    info = {m: compare(results, PAIRS + INFO_PAIRS, m) for m, _ in MEASURES}
    print_comparisons(info, runs)
    print()
    labels = dict(MEASURES)
    for t in checks:
        value = t["value"] if isinstance(t["value"], str) else f"{t['value']:.2f}"
        where = labels[t["measure"]].split(" (")[0]
        print(
            f"  {'pass' if t['met'] else 'MISS'}  [{where}] {t['target']}: {value} ({t['limit']})"
        )
    result = {
        "schema": SCHEMA,
        "quick": args.quick,
        "repeat": repeat,
        "budget": args.budget,
        "measures": labels,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": [
            {**asdict(r), "us_per_point": r.us_per_point, "checks_per_s": r.checks_per_s}
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
