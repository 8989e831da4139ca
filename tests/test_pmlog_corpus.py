"""check-log on the corpus of real pmemcheck logs (tests/data/pmemcheck, recorded from the C
programs of tests/c): the verdict of the x86 rules with the library checker and with the
checker program, and the C line of the lost store."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pmemsim.pmlog import LibChecker, ProgramChecker, Replay, check_log, read_log
from pmemsim.pmlog.check import source_of

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "data" / "pmemcheck"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "MANIFEST.json").read_text())
#: One bug and one fixed log per program (every log reads: tests/test_pmlog_reader.py and
#: tests/test_c_programs.py), and the two-file logs' whole-pool checker.
CHOSEN = [
    e
    for e in MANIFEST["logs"]
    if e["log"].endswith(("-bug-q.log", "-fixed-q.log", "-bug-cacheline-q.log"))
    or e["log"].startswith("raw_tail-bug-")  # the unaligned-flush trap in every mode
]


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the corpus checkers cannot be built")
    sys.path.insert(0, str(ROOT / "c"))
    try:
        from build import build  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "c"))
    made: dict[str, Path] = build(tmp_path_factory.mktemp("corpus-bin"), programs=())
    return made


@pytest.mark.parametrize("entry", CHOSEN, ids=[e["log"] for e in CHOSEN])
def test_corpus_verdicts_with_the_library_checker(
    bins: dict[str, Path], entry: dict[str, Any]
) -> None:
    replay = Replay.of(read_log(str(CORPUS / entry["log"])))
    for c in entry["checkers"]:
        if c["kind"] == "library":
            checker: Any = LibChecker.parse(f"{bins[c['library']]}:{c['function']}")
        elif "--pair" in c["argv"]:  # the whole pool: both files at once
            checker = ProgramChecker((str(bins[c["argv"][0]]), "--pair"), all_files=True)
        else:
            continue
        r = check_log(replay, checker)
        assert r.verdict.upper() == c["expected"], (entry["log"], c)
        assert r.exact
        if r.minimal is not None and entry.get("stack_depth", 0) > 1:
            named = {s.source.rsplit(" in ", 1)[0] for s in r.minimal.lost if s.source}
            assert named and named <= set(entry["lost_lines"]), (entry["log"], named)


def test_a_store_made_by_memcpy_is_named_by_its_caller() -> None:
    frames = (
        "0x484F7F6: __memcpy_avx_unaligned_erms (memmove-vec-unaligned-erms.S:387)",
        "0x10926B: publish (raw_flag.c:39)",
        "0x1093AF: main (raw_flag.c:70)",
    )
    assert source_of(frames) == "raw_flag.c:39 in publish"
    assert (
        source_of(frames[:1]) == "memmove-vec-unaligned-erms.S:387 in __memcpy_avx_unaligned_erms"
    )
    lib = ("0x484F7F6: ??? (in /usr/lib/x86_64-linux-gnu/libpmem2.so.1.0.0)", frames[1])
    assert source_of(lib) == "raw_flag.c:39 in publish"
    assert source_of(lib[:1]) is None
