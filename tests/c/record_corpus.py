"""Rebuild tests/data/pmemcheck/: the store logs pmemcheck records from the programs in
tests/c, and MANIFEST.json describing each one.

    .venv/bin/python tests/c/record_corpus.py [--valgrind PATH] [--pmreorder PMREORDER.py]

Every log is recorded with the same program, arguments, environment and pmemcheck flags
each time. Valgrind runs in a fresh PID namespace where ``unshare`` allows it, so the
``==PID==`` prefix is the same too; elsewhere the PIDs differ and nothing else does (the
mapping addresses valgrind hands out are fixed). The pool files live under
/tmp/pmemsim-corpus/ while a program runs and are deleted afterwards: the logs name them,
and check-log starts from zeros when a registered file does not exist, which is what every
program starts from (it creates its files empty).

The expected verdicts are NOT obtained by running pmemsim (a test comparing pmemsim with
itself could not fail): they are written below, per program variant, with the reasoning
under persistency.md's x86 rules. The C lines of the lost stores come from ``LOST:``
comments in the sources. pmreorder's verdicts (ReorderFull, where it finishes) are recorded
for comparison only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = ROOT / "tests" / "data" / "pmemcheck"
POOLS = Path("/tmp/pmemsim-corpus")
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from build import build  # noqa: E402

from pmemsim.pmlog.pmemcheck import find_pmemcheck, include_dir  # noqa: E402

CONSISTENT, INCONSISTENT = "CONSISTENT", "INCONSISTENT"


@dataclass(frozen=True)
class Variant:
    """One way to run a program, with what a crash can do to it under the x86 rules."""

    verdict: str
    why: str
    #: ``LOST:`` tags of the source lines whose stores the minimal crash loses
    lost: tuple[str, ...] = ()
    #: checker name -> verdict, where a checker's verdict differs from ``verdict``
    per_checker: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    name: str
    #: the program's files: (suffix, size in bytes); argv gets their paths in this order
    files: tuple[tuple[str, int], ...]
    variants: dict[str, Variant]

    def paths(self) -> list[str]:
        return [str(POOLS / f"{self.name}.{suffix}") for suffix, _ in self.files]


PROGRAMS = {
    p.name: p
    for p in [
        Program(
            "raw_tail",
            (("pool", 4096),),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "The record's line (line 1) is never flushed: the only flushes are "
                    "clwb(&h->tail) at offset 8 and clwb(&h->count) at offset 16, which write "
                    "back line 0 alone. At the crash point before the fence that publishes "
                    "count=1, line 0 may hold count=1 while line 1 lost the record's last "
                    "store (its checksum). A reader that flushes every line an unaligned "
                    "FLUSH;base+0x8;0x40 range touches treats line 1 as flushed and fenced "
                    "before count is stored, and finds nothing (the issue's trap).",
                    ("raw_tail record sum",),
                ),
                "fixed": Variant(
                    CONSISTENT,
                    "The record's line is flushed and fenced (with the tail) before count is "
                    "stored; every line's stores persist in order.",
                ),
            },
        ),
        Program(
            "raw_flag",
            (("pool", 4096),),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "Text (lines 1-2), length, checksum and flag (line 0) are stored and "
                    "then flushed under one fence: before it, line 0 may persist whole while "
                    "a text line lost its last store, so the flag is set over text that "
                    "does not match the checksum.",
                    ("raw_flag text",),
                ),
                "fixed": Variant(
                    CONSISTENT,
                    "Text and checksum are flushed and fenced before the flag is stored; "
                    "the flag's own line holds length and checksum stored before it.",
                ),
            },
        ),
        Program(
            "raw_deep",
            (("pool", 4096),),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "The records (lines 1-3) are never flushed; close stores nrec and clean "
                    "in line 0 and deep-flushes line 0 only. Before its fence line 0 may "
                    "persist (clean=1, nrec=6) while a record line lost its last store.",
                    ("raw_deep record sum",),
                ),
                "fixed": Variant(
                    CONSISTENT,
                    "The records are flushed, fenced and deep-synced before the header says "
                    "clean; nrec is stored before clean in the same line.",
                ),
            },
        ),
        Program(
            "undo_tx",
            (("pool", 4096),),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "The undo log is cleared (valid=0, persisted) while the new balances are "
                    "still unflushed in lines 2-5: before that fence one account's line may "
                    "lose its new balance while valid=0 persists, and with no log to roll "
                    "back the balances no longer sum to 400.",
                    ("undo_tx debit", "undo_tx credit"),
                ),
                "fixed": Variant(
                    CONSISTENT,
                    "Both balances are persisted while the log is still valid, and the log "
                    "entry's fields precede its valid flag in one line (and are persisted "
                    "before the balances change).",
                ),
            },
        ),
        Program(
            "two_files",
            (("data", 4096), ("meta", 4096)),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "The record in the data file is flushed but not fenced before the commit "
                    "count in the metadata file is stored and flushed: under the one fence "
                    "the count's line may persist while the record's line lost its last "
                    "store. Only a checker that sees both files can tell: each file alone "
                    "is fine (a data file's records are numbered or empty, the count is in "
                    "range).",
                    ("two_files record sum",),
                    {
                        "check_two_files": CONSISTENT,
                        "libcheck_two_files.so:check": CONSISTENT,
                    },
                ),
                "fixed": Variant(
                    CONSISTENT, "The record is flushed and fenced before the count is stored."
                ),
            },
        ),
        Program(
            "hashtab",
            (("pool", 8192),),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "A 128-byte slot spans two lines: key, checksum and flag in line A, the "
                    "value in line B. All are stored, then both lines flushed under one "
                    "fence: line A may persist (flag set) while line B lost its last store.",
                    ("hashtab value",),
                ),
                "fixed": Variant(
                    CONSISTENT,
                    "The slot is flushed and fenced before the flag is stored and persisted.",
                ),
                "oneline": Variant(
                    CONSISTENT,
                    "A 64-byte slot is one line and its flag is stored last: a line's stores "
                    "persist in program order, so the flag never persists without the key, "
                    "value and checksum stored before it. (pmreorder reorders stores within "
                    "a line and calls this a bug.)",
                ),
            },
        ),
        Program(
            "pmem2_kv",
            (("pool", 3 * 4096),),
            {
                "bug": Variant(
                    INCONSISTENT,
                    "Slots (pages 1-2) are copied with PMEM2_F_MEM_NOFLUSH and never "
                    "flushed; the count in page 0 is persisted over them. Before the "
                    "count's fence (CACHE_LINE) or after its msync (PAGE: the msync covers "
                    "page 0 only) count=1 may persist while the slot's lines did not.",
                    ("pmem2_kv slot copy",),
                ),
                "fixed": Variant(
                    CONSISTENT,
                    "memcpy with flags 0 flushes and drains the slot (msync of its pages at "
                    "PAGE, clflush and a fence at CACHE_LINE) before count is stored.",
                ),
            },
        ),
    ]
}

#: Output modes: (pmemcheck flags, where the log is captured: "log-file" or "stderr")
DEEP = ["--log-stores-stacktraces=yes", "--log-stores-stacktraces-depth=8"]
MODES: dict[str, tuple[list[str], str]] = {
    # -q, deep stacks, written with --log-file: what `pmemsim record` uses
    "q": (["-q", *DEEP], "log-file"),
    # no -q (banner, summary, a line break before |STOP), one frame, captured from stderr
    "verbose": (["--log-stores-stacktraces=yes", "--log-stores-stacktraces-depth=1"], "stderr"),
    # -q, no stack traces, captured from stderr
    "plain": (["-q"], "stderr"),
    # flushes aligned to the cache line by pmemcheck itself
    "align": (["-q", *DEEP, "--flush-align=yes"], "log-file"),
    # clflush not followed by an implied fence (two-phase flushing, like clflushopt)
    "fence": (["-q", *DEEP, "--expect-fence-after-clflush=yes"], "log-file"),
}
DEFAULTS = {"--flush-align": "no", "--expect-fence-after-clflush": "no"}

#: (program, variant, libpmem2 granularity or None, mode)
LOGS: list[tuple[str, str, str | None, str]] = [
    ("raw_tail", "bug", None, "q"),
    ("raw_tail", "bug", None, "verbose"),
    ("raw_tail", "bug", None, "plain"),
    ("raw_tail", "bug", None, "align"),
    ("raw_tail", "bug", None, "fence"),
    ("raw_tail", "fixed", None, "q"),
    ("raw_tail", "fixed", None, "align"),
    ("raw_flag", "bug", None, "q"),
    ("raw_flag", "bug", None, "verbose"),
    ("raw_flag", "fixed", None, "q"),
    ("raw_deep", "bug", None, "q"),
    ("raw_deep", "bug", None, "plain"),
    ("raw_deep", "fixed", None, "q"),
    ("undo_tx", "bug", None, "q"),
    ("undo_tx", "bug", None, "verbose"),
    ("undo_tx", "fixed", None, "q"),
    ("two_files", "bug", None, "q"),
    ("two_files", "fixed", None, "q"),
    ("hashtab", "bug", None, "q"),
    ("hashtab", "fixed", None, "q"),
    ("hashtab", "oneline", None, "q"),
    ("pmem2_kv", "bug", "PAGE", "q"),
    ("pmem2_kv", "bug", "PAGE", "verbose"),
    ("pmem2_kv", "fixed", "PAGE", "q"),
    ("pmem2_kv", "bug", "CACHE_LINE", "q"),
    ("pmem2_kv", "bug", "CACHE_LINE", "plain"),
    ("pmem2_kv", "fixed", "CACHE_LINE", "q"),
    ("pmem2_kv", "fixed", "CACHE_LINE", "fence"),
]


def log_name(program: str, variant: str, granularity: str | None, mode: str) -> str:
    gran = f"-{granularity.lower().replace('_', '')}" if granularity else ""
    return f"{program}-{variant}{gran}-{mode}.log"


def lost_lines(program: str, tags: tuple[str, ...]) -> list[str]:
    """``FILE.c:LINE`` of each ``/* LOST: tag */`` comment."""
    out = []
    src = HERE / f"{program}.c"
    for tag in tags:
        hits = [
            f"{src.name}:{n}"
            for n, text in enumerate(src.read_text().splitlines(), 1)
            if f"LOST: {tag} */" in text
        ]
        if len(hits) != 1:
            raise SystemExit(f"{src}: expected one 'LOST: {tag}' comment, found {len(hits)}")
        out += hits
    return out


def checkers(program: str) -> list[dict[str, object]]:
    """Each checker of a program: a program (image path last) and the same check as a
    library function; two_files has its whole-pool forms too."""
    out: list[dict[str, object]] = [
        {"name": f"check_{program}", "kind": "program", "argv": [f"check_{program}"]},
        {
            "name": f"libcheck_{program}.so:check",
            "kind": "library",
            "library": f"libcheck_{program}.so",
            "function": "check",
        },
    ]
    if program == "two_files":
        out.append(
            {
                "name": "check_two_files --pair",
                "kind": "program",
                "argv": ["check_two_files", "--pair"],
                # check-log --all-files: every file's image, in registration order, last
                "all_files": True,
            }
        )
    return out


def stack_depth(flags: list[str]) -> int:
    """Frames per STORE record: 0 without stack traces (pmemcheck's default depth is 1)."""
    if "--log-stores-stacktraces=yes" not in flags:
        return 0
    depths = [f.split("=")[1] for f in flags if f.startswith("--log-stores-stacktraces-depth=")]
    return int(depths[-1]) if depths else 1


def unshare_prefix() -> list[str]:
    cmd = ["unshare", "--user", "--pid", "--fork", "--map-root-user"]
    if shutil.which("unshare") is None:
        return []
    done = subprocess.run([*cmd, "true"], capture_output=True)
    return cmd if done.returncode == 0 else []


def record(
    valgrind: str, bindir: Path, entry: tuple[str, str, str | None, str], prefix: list[str]
) -> tuple[str, list[str], dict[str, str], str]:
    program, variant, granularity, mode = entry
    flags, capture = MODES[mode]
    flags = [*flags, "--log-stores=yes"]
    for opt, value in DEFAULTS.items():
        if not any(f.startswith(opt + "=") for f in flags):
            flags.append(f"{opt}={value}")
    env = {"PMREORDER_EMIT_LOG": "1"}
    if granularity == "CACHE_LINE":
        env["PMEM2_FORCE_GRANULARITY"] = "CACHE_LINE"
    prog = PROGRAMS[program]
    argv = [str(bindir / program), variant, *prog.paths()]
    name = log_name(*entry)
    out = CORPUS / name
    POOLS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logfile = Path(tmp) / "log"
        cmd = [valgrind, "--tool=pmemcheck", "--command-line-only=yes", *flags]
        if capture == "log-file":
            cmd.append(f"--log-file={logfile}")
        clean_env = {
            "PATH": "/usr/bin:/bin",
            "LC_ALL": "C",
            "HOME": tmp,
            **env,
        }
        with open(logfile if capture == "stderr" else os.devnull, "wb") as err:
            done = subprocess.run(
                [*prefix, *cmd, *argv], env=clean_env, stderr=err, stdout=subprocess.DEVNULL
            )
        if done.returncode != 0:
            raise SystemExit(f"{name}: the program exited {done.returncode}")
        shutil.copyfile(logfile, out)
    for path in prog.paths():
        os.unlink(path)
    shown_flags = [f for f in flags if not f.startswith("--log-file")]
    return name, shown_flags, env, capture


def manifest_entry(
    entry: tuple[str, str, str | None, str],
    name: str,
    flags: list[str],
    env: dict[str, str],
    capture: str,
) -> dict[str, object]:
    """What MANIFEST.json says about one log."""
    program, variant, granularity, _ = entry
    v = PROGRAMS[program].variants[variant]
    text = (CORPUS / name).read_text(errors="replace")
    return {
        "log": name,
        "program": program,
        "variant": variant,
        "argv": [program, variant, *PROGRAMS[program].paths()],
        "env": env,
        "pmemcheck_flags": flags,
        "capture": capture,
        "granularity": granularity or "none (raw mmap, flushed by the program)",
        "files": [
            {"path": p, "size": s}
            for p, (_, s) in zip(PROGRAMS[program].paths(), PROGRAMS[program].files, strict=True)
        ],
        "records": text.count("|") + 1,
        "stores": len(re.findall(r"\|STORE;", text)),
        "verdict": v.verdict,
        "checkers": [
            {**c, "expected": v.per_checker.get(str(c["name"]), v.verdict)}
            for c in checkers(program)
        ],
        "why": v.why,
        # The source lines of the stores the minimal crash loses; a log whose stack
        # traces are one frame deep names them only where the store is in the
        # program's own code (not in memcpy or libpmem2).
        "lost_lines": lost_lines(program, v.lost),
        "stack_depth": stack_depth(flags),
    }


def run_pmreorder(
    pmreorder: str, bindir: Path, name: str, program: str, timeout: float
) -> dict[str, object]:
    """pmreorder's ReorderFull verdict with the program checker, on zeroed pool files."""
    prog = PROGRAMS[program]
    for path, (_, size) in zip(prog.paths(), prog.files, strict=True):
        with open(path, "wb") as f:
            f.truncate(size)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            pmreorder,
            "-l",
            str(CORPUS / name),
            "-r",
            "ReorderFull",
            "-o",
            str(Path(tmp) / "out.log"),
            "-c",
            "prog",
            "-p",
            str(bindir / f"check_{program}"),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            verdict = f"no verdict within {timeout:.0f} s"
        else:
            if "Traceback" in done.stderr:
                last = done.stderr.strip().splitlines()[-1]
                verdict = f"crashed: {last}"
            else:
                verdict = CONSISTENT if done.returncode == 0 else INCONSISTENT
    for path in prog.paths():
        os.unlink(path)
    return {
        "engine": "ReorderFull",
        "checker": f"check_{program}",
        "verdict": verdict,
        "seconds": round(time.monotonic() - start, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--valgrind", help="valgrind with pmemcheck (else $PMEMSIM_VALGRIND, PATH)")
    ap.add_argument(
        "--pmreorder",
        default=str(ROOT.parent / "shared" / "tools" / "pmreorder" / "pmreorder.py"),
        help="pmreorder.py to compare with (skipped when absent)",
    )
    ap.add_argument("--pmreorder-timeout", type=float, default=30.0, metavar="SECONDS")
    ap.add_argument("--only", help="record only logs whose name contains this")
    args = ap.parse_args()
    valgrind = find_pmemcheck(args.valgrind)
    include = include_dir(valgrind)
    if include is None:
        raise SystemExit(f"{valgrind}: no include/valgrind/pmemcheck.h beside it")
    if not Path(args.pmreorder).is_file():
        alt = Path("/work/shared/tools/pmreorder/pmreorder.py")
        args.pmreorder = str(alt) if alt.is_file() else None
    prefix = unshare_prefix()
    CORPUS.mkdir(parents=True, exist_ok=True)
    manifest_path = CORPUS / "MANIFEST.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"logs": []}
    entries = {e["log"]: e for e in old["logs"]}
    version = subprocess.run(
        [valgrind, "--tool=pmemcheck", "--version"], capture_output=True, text=True
    ).stdout.strip()
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    # A fixed folder: the banner of a log recorded without -q names the program's path.
    bindir = POOLS / "bin"
    try:
        build(bindir, include)
        for entry in LOGS:
            program = entry[0]
            if args.only and args.only not in log_name(*entry):
                continue
            name, flags, env, capture = record(valgrind, bindir, entry, prefix)
            item = manifest_entry(entry, name, flags, env, capture)
            if args.pmreorder:
                item["pmreorder"] = run_pmreorder(
                    args.pmreorder, bindir, name, program, args.pmreorder_timeout
                )
            entries[name] = item
            print(
                f"{name}: {item['records']} records, {item['stores']} stores; "
                f"expected {item['verdict']}; pmreorder {item.get('pmreorder', {})}"
            )
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    order = {log_name(*e): i for i, e in enumerate(LOGS)}
    manifest = {
        "about": (
            "Store logs pmemcheck recorded from the programs in tests/c (rebuild: "
            "tests/c/record_corpus.py). Expected verdicts are derived by reasoning about "
            "each program under the x86 rules of shared/reference/persistency.md (ADR: a "
            "dirty line may persist any prefix of its stores at any time; a flush takes "
            "effect at the next fence), NOT by running pmemsim; 'why' gives the reasoning. "
            "'lost_lines' are the C lines of the stores the minimal inconsistent crash "
            "loses. Files are registered under /tmp/pmemsim-corpus and absent after "
            "recording: every program creates them empty, so the base image is zeros. "
            "'pmreorder' is pmreorder's own verdict (ReorderFull, program checker) for "
            "comparison: it is wrong in the ways shared/reference/pmreorder-log.md lists."
        ),
        "recorded_with": {"pmemcheck": version, "gcc": gcc.splitlines()[0]},
        "logs": sorted(entries.values(), key=lambda e: order.get(str(e["log"]), 1 << 30)),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
