"""``pmemsim record`` and ``pmemsim check-program``: run a C program under pmemcheck and check
the store log it leaves (see docs/c-programs.md)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import EXIT_USAGE, UsageProblem, count, writable_file

if TYPE_CHECKING:
    from ..pmlog import Log
    from ..pmlog.pmemcheck import Recording

__all__ = ["register"]

NO_FILE = (
    "{prog} registered no file with pmemcheck, so the log has nothing to check. Programs on "
    "libpmem2 or PMDK register their mappings themselves; a program that maps a file with "
    "mmap must say so: VALGRIND_PMC_REGISTER_PMEM_MAPPING(addr, len) and "
    "VALGRIND_PMC_REGISTER_PMEM_FILE(fd, addr, len, 0) from <valgrind/pmemcheck.h> "
    "(no-ops outside valgrind)."
)


def _program_inputs(program: list[str]) -> dict[str, str]:
    """The recorded program and the files among its arguments: a log written over one
    would destroy it."""
    found = {f"the program {program[0]}": shutil.which(program[0]) or program[0]}
    found.update({f"the program's argument {a}": a for a in program[1:] if os.path.isfile(a)})
    return found


def _program(argv: list[str]) -> list[str]:
    """The program to record, checked before valgrind is started (valgrind's own message
    for a missing program would end up in the log)."""
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageProblem("name the program to record after '--': -- PROG [ARGS...]")
    prog = argv[0]
    found = shutil.which(prog) if os.sep not in prog else prog
    if found is None or not os.path.isfile(found):
        raise UsageProblem(f"{prog}: no such program")
    if not os.access(found, os.X_OK):
        raise UsageProblem(f"{prog}: not executable")
    return argv


def _valgrind(args: argparse.Namespace) -> str:
    from ..pmlog.pmemcheck import PmemcheckNotFound, find_pmemcheck

    try:
        return find_pmemcheck(args.valgrind)
    except PmemcheckNotFound as exc:
        raise UsageProblem(exc.message) from None


def _record(args: argparse.Namespace, program: list[str], log: str) -> tuple[Recording, Log]:
    """Record ``program`` into ``log``; the recording and the log, with what they say
    printed."""
    from ..pmlog.grammar import read_log
    from ..pmlog.pmemcheck import (
        GRANULARITY_ENV,
        PMEM_FORCE_ENV,
        RECORD_DEPTH,
        RecordingFailed,
        record,
        record_env,
    )

    valgrind = _valgrind(args)
    env = record_env(granularity=args.granularity)
    forced = env.get(GRANULARITY_ENV, "")
    pmem = env.get(PMEM_FORCE_ENV)
    print(
        f"recording {shlex.join(program)} with {valgrind} --tool=pmemcheck"
        f"{f' (libpmem2 at {forced} granularity)' if forced else ''}"
        f"{f' ({PMEM_FORCE_ENV}={pmem} for libpmem)' if pmem is not None else ''}",
        file=sys.stderr,
    )
    try:
        rec = record(
            program,
            log,
            valgrind=valgrind,
            depth=args.depth or RECORD_DEPTH,
            clflush_needs_fence=args.clflush_needs_fence,
            granularity=args.granularity,
        )
    except RecordingFailed as exc:
        raise UsageProblem(str(exc)) from None
    parsed = read_log(log)
    c = parsed.counts
    # A file's extent is its furthest registered range: libpmemobj registers a pool's
    # 4 KiB header mapping as well as the whole pool, the header last.
    files: dict[str, int] = {}
    for r in parsed.files:
        files[r.path] = max(files.get(r.path, 0), r.offset + r.size)
    where = ", ".join(f"{p} ({s} bytes)" for p, s in files.items()) or "no file"
    print(
        f"{log}: {parsed.records} records ({c.get('STORE', 0)} stores, {c.get('FLUSH', 0)} "
        f"flushes, {c.get('FENCE', 0)} fences, {c.get('DEEP_SYNC', 0)} deep syncs, "
        f"{c.get('MARKER', 0)} markers) over {where}; {rec.seconds:.1f} s"
    )
    if rec.signal is not None:
        print(f"{program[0]} was killed by signal {rec.signal}", file=sys.stderr)
    elif rec.status:
        print(f"{program[0]} exited with status {rec.status}", file=sys.stderr)
    if not files:
        print(NO_FILE.format(prog=program[0]), file=sys.stderr)
    return rec, parsed


def _holding_data(paths: list[str]) -> set[str]:
    """The real paths of the files among ``paths`` that hold data, not only holes (a pool an
    earlier step made, where a file made with truncate holds none)."""
    held = set()
    for path in paths:
        if not os.path.isfile(path):
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.lseek(fd, 0, os.SEEK_DATA)
            held.add(os.path.realpath(path))
        except OSError:  # ENXIO: no data before the end, zeros only
            pass
        finally:
            os.close(fd)
    return held


def _cmd_record(args: argparse.Namespace) -> int:
    program = _program(args.program)
    writable_file(args.output, "-o", _program_inputs(program))
    held = _holding_data(program[1:])
    rec, parsed = _record(args, program, args.output)
    if parsed.files:
        # The files now hold the run's end, and check-log would start every crash image from
        # a registered file's content: name the start (zeros, for a file the program made;
        # a copy of what it held, for a pool named on the command line that held data).
        paths = [p for p in dict.fromkeys(r.path for r in parsed.files) if os.path.exists(p)]
        opened = [p for p in paths if os.path.realpath(p) in held]
        starts = [
            f"--base-image {shlex.quote(path + ('=COPY' if path in opened else '='))}"
            for path in paths
        ]
        print(
            f"check it: pmemsim check-log {shlex.quote(args.output)} "
            f"{' '.join([*starts, ''])}-- CHECKER [ARGS...]"
        )
        for path in opened:
            print(
                f"({path} held data before the run: unless the program truncated it, its "
                "crash images start from what it held then, which the run changed; COPY is a "
                "copy of that, which pmemsim check-program --pool PATH makes for you)"
            )
        if len(opened) < len(starts):
            print(
                "(--base-image PATH= starts a file from zeros, right for a file the program "
                "creates; for a pool it opened, give a copy of what it held before the run: "
                "--base-image PATH=COPY, or use pmemsim check-program --pool PATH)"
            )
    return int(rec.exit_code)


def _check_log_parser() -> argparse.ArgumentParser:
    """check-log's own parser (its options, defaults and handler), built the way the CLI
    builds it."""
    from . import log

    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    log.register(sub)
    parser: argparse.ArgumentParser = sub.choices["check-log"]
    return parser


#: check-log options that make no sense on a log recorded just now
_NOT_HERE = {"--replay", "--image-out", "--base-image"}


def _cmd_check_program(args: argparse.Namespace) -> int:
    from ..pmlog.pmemcheck import unexplained_offset

    program = _program(args.program)
    kinds = [
        k
        for k in ("checker_command", "checker_py", "recovery", "checker_lib")
        if getattr(args, k, None)
    ]
    if len(kinds) != 1:
        raise UsageProblem(
            'name one checker: --checker "CMD [ARGS...]" (gets the image path last), '
            "--checker-lib LIB.so:FUNCTION, --checker-py MODULE:FUNCTION or --recovery "
            "PATH::CHECK"
        )
    checker = shlex.split(args.checker_command) if args.checker_command else []
    if args.checker_command and not checker:
        raise UsageProblem("--checker: empty command")
    log = args.output or f"{Path(program[0]).name}.pmemcheck.log"
    inputs = _program_inputs(program)
    inputs.update({f"the pool {pool}": pool for pool in args.pool or ()})
    writable_file(log, "-o", inputs)
    for pool in args.pool or ():
        if not os.path.isfile(pool):
            raise UsageProblem(f"--pool {pool}: no such file")
    bases: dict[str, str] = {}
    for pool in args.pool or ():
        # What the pool held before the run is where its crash images start from; kept
        # beside the log so that the replay line printed below still works.
        copy = f"{log}.base-{Path(pool).name}"
        shutil.copyfile(pool, copy)
        bases[os.path.realpath(pool)] = copy
    try:
        rec, parsed = _record(args, program, log)
    except BaseException:
        for copy in bases.values():
            Path(copy).unlink(missing_ok=True)
        raise
    if not parsed.files:
        return EXIT_USAGE
    if rec.exit_code:
        print(f"checking the log of the run up to its end (status {rec.exit_code})")
    starts = []
    for path in dict.fromkeys(r.path for r in parsed.files):
        # A file the program made started empty ("PATH=": zeros); a --pool file, as it was.
        base = bases.get(os.path.realpath(path))
        starts.append(f"{path}={base or ''}")
        bad = unexplained_offset(parsed, path, base)
        if bad is not None:
            print(
                f"warning: {path} at +{bad:#x} holds bytes that the starting image with the "
                "logged stores does not explain (written with write(), or before the program "
                "registered it?): the images may not be ones the program could leave. (A "
                "library may also write memory it told pmemcheck not to track: libpmemobj "
                "does, in its pool's run-time fields, which it sets again at every open; "
                "that is harmless.)",
                file=sys.stderr,
            )
    handler = _check_log_parser().get_default("func")
    args.log, args.checker, args.base_image = log, checker, starts
    args.replay = args.image_out = None
    return int(handler(args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def recording_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--valgrind",
            metavar="PATH",
            help="valgrind with pmemcheck (a binary or a build's prefix; else "
            "$PMEMSIM_VALGRIND, else valgrind on PATH)",
        )
        p.add_argument(
            "--depth",
            type=count(1),
            default=None,
            metavar="N",
            help="stack frames per store (12: enough to name the caller of libpmem2 or memcpy)",
        )
        p.add_argument(
            "--clflush-needs-fence",
            action="store_true",
            help="treat clflush like clflushopt, durable only at the next fence (AMD's "
            "ordering; default: Intel's, ordered at its own position)",
        )
        p.add_argument(
            "--granularity",
            choices=("cache_line", "byte", "page", "native"),
            default=None,
            help="libpmem2's store granularity while recording (PMEM2_FORCE_GRANULARITY): "
            "cache_line by default (unless the environment forces one), as on persistent "
            "memory: on a plain file libpmem2 would msync pages, whose page-wide flushes hide "
            "missing ones (docs/c-programs.md); byte for eADR; native: what the file gives. "
            "libpmem (under libpmemobj) follows: PMEM_IS_PMEM_FORCE=1 with cache_line, 0 with "
            "page",
        )
        p.add_argument("program", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    r = sub.add_parser(
        "record",
        help="run a program under pmemcheck and write its store log",
        usage="pmemsim record -o LOG [--valgrind PATH] [options] -- PROG [ARGS...]",
        description=(
            "Runs PROG under valgrind's pmemcheck with the flags that make a complete, exact "
            "store log: every store with the stack frames that name its C line, flushes at "
            "their operand's address, clflush ordering stated, and PMREORDER_EMIT_LOG=1 so "
            "that libpmem2 marks its calls. The program's output stays on the terminal. "
            "Exit status: the program's (128 + N if signal N ended it); 2 when PROG or "
            "pmemcheck cannot be found."
        ),
    )
    r.add_argument("-o", "--output", required=True, metavar="LOG", help="where to write the log")
    recording_options(r)
    r.set_defaults(func=_cmd_record)

    c = sub.add_parser(
        "check-program",
        help="record a program with pmemcheck, then check every crash image of its log",
        usage='pmemsim check-program (--checker "CMD [ARGS...]" | --checker-lib LIB.so:FUNCTION'
        " | --checker-py MODULE:FUNCTION | --recovery PATH::CHECK) [-o LOG] [--pool FILE] "
        "[check-log options] -- PROG [ARGS...]",
        description=(
            "pmemsim record, then pmemsim check-log on the log it wrote, in one command. Crash "
            "images start from zeros for every file the program registered (the program "
            "creates it), or from what a file held before the run when it is named with "
            "--pool (the program opens an existing pool). The log is kept (default "
            "PROG.pmemcheck.log) for check-log --replay. Exit status as check-log's."
        ),
    )
    c.add_argument(
        "--checker",
        dest="checker_command",
        metavar='"CMD [ARGS...]"',
        help="checker program (one shell-quoted string); the image path is appended",
    )
    c.add_argument("-o", "--output", metavar="LOG", help="where to keep the log")
    c.add_argument(
        "--pool",
        action="append",
        metavar="FILE",
        help="a file the program opens: its content before the run is the starting image",
    )
    seen = {s for a in c._actions for s in a.option_strings}
    for action in _check_log_parser()._actions:
        strings = set(action.option_strings)
        if strings and not strings & (seen | _NOT_HERE | {"-h", "--help"}):
            c._add_action(action)
    recording_options(c)
    c.set_defaults(func=_cmd_check_program)
