"""Reading a store log as pmemcheck writes it (valgrind's ``==PID==`` prefix, its 512-character
chunks, a program's lines between them) against reading the same records unprefixed.

Run from the repository root (with pmemsim installed)::

    python bench/bench_read.py write DIR [--shape 3000x2@4K]   # the logs, see below
    python bench/bench_read.py time DIR [--runs 20]             # wall time, best of N
    python bench/bench_read.py read LOG...                      # one read each (callgrind)

``write`` makes, from ``bench_scale.write_log``'s log of the shape (one line of records):
``plain.log``; ``q.log``, the same line as ``valgrind --tool=pmemcheck -q --log-file``
writes it (the prefix, its chunks back to back); ``stderr.log``, a ``2>&1`` capture of a
program that wrote a line of its own after every chunk valgrind handed over (the reader
takes each out again, and resumes the record line after it: its worst case).

Each read is what check-log does before its replay: ``read_log`` (both checking passes)
and one pass over the operations' texts (``Log.iter_texts``). ``read`` starts by reading a
one-record log, so that with no LOG it counts the start-up and compiling alone: instructions
are ``valgrind --tool=callgrind python bench/bench_read.py read LOG`` less the same without
LOG (``PYTHONHASHSEED=0``; bench/README.md, "Reading a prefixed log"). ``time`` prints a
table and, last, a line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: valgrind hands its output over whenever this many characters have piled up.
CHUNK = 512
PREFIX = "==1234== "
LOGS = ("plain", "q", "stderr")


def as_valgrind_writes(text: str, program: bool) -> str:
    """``text`` (lines of pmemcheck's messages) as valgrind writes it: the prefix at every
    line start, in chunks of CHUNK characters; with ``program``, a line of the program's
    after every chunk handed over in the middle of a line."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        line = PREFIX + line
        for k, at in enumerate(range(0, len(line), CHUNK)):
            part = line[at : at + CHUNK]
            out.append(part)
            if program and not part.endswith("\n"):
                out.append(f"program line {k}\n")
    return "".join(out)


def write(folder: Path, shape_text: str) -> None:
    import bench_scale

    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "plain.log"
    bench_scale.write_log(plain, folder / "p.pool", bench_scale.parse_shape(shape_text))
    text = plain.read_text()
    (folder / "q.log").write_text(as_valgrind_writes(text, program=False))
    (folder / "stderr.log").write_text(as_valgrind_writes(text, program=True))
    for name in LOGS:
        print(f"{folder / name}.log: {(folder / f'{name}.log').stat().st_size:,} bytes")


def read_once(path: str) -> int:
    from pmemsim.pmlog import read_log

    log = read_log(path)
    return sum(len(texts) for texts in log.iter_texts())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    w = sub.add_parser("write")
    w.add_argument("folder", type=Path)
    w.add_argument("--shape", default="3000x2@4K")
    t = sub.add_parser("time")
    t.add_argument("folder", type=Path)
    t.add_argument("--runs", type=int, default=20)
    r = sub.add_parser("read")
    r.add_argument("logs", nargs="*")
    args = ap.parse_args()
    if args.what == "write":
        write(args.folder, args.shape)
    elif args.what == "read":
        from pmemsim.pmlog import parse_log

        parse_log("==1== START|STOP\n")
        for path in args.logs:
            print(path, read_once(path), "operations")
    else:
        paths = {name: str(args.folder / f"{name}.log") for name in LOGS}
        counts = {name: read_once(p) for name, p in paths.items()}
        assert len(set(counts.values())) == 1, counts  # the same records in each
        best = dict.fromkeys(LOGS, float("inf"))
        for _ in range(args.runs):  # (interleaved: the VM's noise falls on each alike)
            for name, p in paths.items():
                began = time.perf_counter()
                read_once(p)
                best[name] = min(best[name], time.perf_counter() - began)
        print(f"{'log':<8} {'best ms':>8} {'/ plain':>8}")
        for name in LOGS:
            print(f"{name:<8} {1000 * best[name]:>8.2f} {best[name] / best['plain']:>8.2f}")
        result = {name: round(1000 * s, 3) for name, s in best.items()}
        print("BENCH_JSON " + json.dumps({"read_ms": result, "runs": args.runs}))


if __name__ == "__main__":
    main()
