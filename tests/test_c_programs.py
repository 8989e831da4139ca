"""Real C programs and the store logs pmemcheck recorded from them (tests/c, tests/data/pmemcheck).

The corpus is checked for what it claims to be (every output mode the issue lists, files and
lost-store lines as the manifest says), the checkers are shown to tell a whole pool from a
damaged one (so a CONSISTENT verdict means something), and, where pmemcheck is installed,
freshly recorded logs are compared with the committed ones.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pmemsim.pmlog.pmemcheck import (
    PmemcheckNotFound,
    find_pmemcheck,
    include_dir,
    pmemcheck_available,
)

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "tests" / "c"
CORPUS = ROOT / "tests" / "data" / "pmemcheck"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "MANIFEST.json").read_text())
LOGS: list[dict[str, Any]] = MANIFEST["logs"]


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, C_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


build_mod = _module("build")

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


@pytest.fixture(scope="session")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every program and checker, built once; with pmemcheck's client requests where it is
    installed (outside valgrind they do nothing)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    valgrind = pmemcheck_available()
    include = include_dir(valgrind) if valgrind else None
    made: dict[str, Path] = build_mod.build(tmp_path_factory.mktemp("cbin"), include)
    return made


def _lib_check(lib: Path, function: str = "check") -> Callable[..., int]:
    fn = getattr(ctypes.CDLL(str(lib)), function)
    fn.restype = ctypes.c_int
    return lambda *paths: int(fn(*(os.fsencode(p) for p in paths)))


# --- finding pmemcheck ---------------------------------------------------------------------


def _fake_valgrind(folder: Path, has_pmemcheck: bool) -> Path:
    """A stand-in valgrind: succeeds for ``--tool=pmemcheck --version`` or refuses it."""
    folder.mkdir(parents=True)
    fake = folder / "valgrind"
    fake.write_text(f"#!/bin/sh\nexit {0 if has_pmemcheck else 1}\n")
    fake.chmod(0o755)
    return fake


def test_pmemcheck_lookup_order(tmp_path: Path) -> None:
    good = _fake_valgrind(tmp_path / "good" / "bin", True)
    plain = _fake_valgrind(tmp_path / "plain", False)
    env = {"PATH": str(plain.parent), "PMEMSIM_VALGRIND": str(good)}
    assert find_pmemcheck(None, env) == str(good)
    # a build's prefix folder names its bin/valgrind
    assert find_pmemcheck(str(tmp_path / "good"), {}) == str(good)
    # PATH only when nothing is given, and a valgrind without pmemcheck does not count
    with pytest.raises(PmemcheckNotFound, match="without the pmemcheck tool") as info:
        find_pmemcheck(None, {"PATH": str(plain.parent)})
    assert "github.com/pmem/valgrind" in info.value.message
    assert pmemcheck_available({"PATH": str(plain.parent)}) is None
    assert find_pmemcheck(None, {"PATH": str(good.parent)}) == str(good)
    # what the user named is not passed over for another
    with pytest.raises(PmemcheckNotFound, match="no such file"):
        find_pmemcheck(str(tmp_path / "missing"), env)
    with pytest.raises(PmemcheckNotFound, match="PMEMSIM_VALGRIND"):
        find_pmemcheck(None, {"PATH": str(good.parent), "PMEMSIM_VALGRIND": str(plain)})
    with pytest.raises(PmemcheckNotFound, match="PATH: no valgrind"):
        find_pmemcheck(None, {"PATH": str(tmp_path / "empty")})


# --- the corpus is what it says ----------------------------------------------------------


def test_manifest_and_logs_match_one_for_one() -> None:
    on_disk = {p.name for p in CORPUS.glob("*.log")}
    assert on_disk == {e["log"] for e in LOGS}
    for e in LOGS:
        assert e["verdict"] in ("CONSISTENT", "INCONSISTENT")
        assert (e["verdict"] == "INCONSISTENT") == bool(e["lost_lines"]), e["log"]
        assert {c["kind"] for c in e["checkers"]} == {"program", "library"}


def test_expected_verdicts_are_the_record_scripts_reasoning() -> None:
    """The manifest is written by record_corpus.py from its hand-derived table: an edit to
    one without the other fails here."""
    rec = _module("record_corpus")
    for e in LOGS:
        variant = rec.PROGRAMS[e["program"]].variants[e["variant"]]
        assert e["verdict"] == variant.verdict, e["log"]
        assert e["why"] == variant.why, e["log"]
        assert e["checkers"] == [
            {**c, "expected": variant.per_checker.get(c["name"], variant.verdict)}
            for c in rec.checkers(e["program"])
        ]


def test_lost_lines_point_at_the_tagged_stores() -> None:
    for e in LOGS:
        for where in e["lost_lines"]:
            src, line = where.split(":")
            text = (C_DIR / src).read_text().splitlines()[int(line) - 1]
            assert "/* LOST: " in text, f"{e['log']}: {where} is {text!r}"
    # the report test below has lines to look for
    assert sum(_log_names_lost_lines(e) for e in LOGS) >= 10


def _records(text: str) -> list[str]:
    """The records between START and STOP, with valgrind's prefixes and line breaks gone
    (a test helper for facts about the corpus, not a log reader)."""
    body = re.sub(r"(?m)^==\d+== ?", "", text)
    body = body[body.index("START") : body.rindex("STOP") + 4]
    return [r for r in body.replace("\n", "").split("|")]


def test_corpus_covers_every_output_mode_the_issue_lists() -> None:
    flags = [set(e["pmemcheck_flags"]) for e in LOGS]
    assert any("-q" in f for f in flags) and any("-q" not in f for f in flags)
    assert {e["stack_depth"] for e in LOGS} >= {0, 1, 8}
    for opt in ("--flush-align", "--expect-fence-after-clflush"):
        assert {f"{opt}=yes", f"{opt}=no"} <= set().union(*flags)
    assert {e["capture"] for e in LOGS} == {"log-file", "stderr"}
    assert {e["granularity"] for e in LOGS} >= {"PAGE", "CACHE_LINE"}
    texts = {e["log"]: (CORPUS / e["log"]).read_text() for e in LOGS}
    records = {name: _records(t) for name, t in texts.items()}
    every = [r for rs in records.values() for r in rs]
    assert any(r.startswith("DEEP_SYNC;") for r in every)
    assert any(r == "pmem2_memmove.BEGIN" for r in every)
    assert any(r == "transfer.BEGIN" for r in every)
    assert sum(r.startswith("STORE;") for r in records["hashtab-bug-q.log"]) >= 200
    assert sum(r.startswith("REGISTER_FILE;") for r in records["two_files-bug-q.log"]) == 2
    for name, text in texts.items():
        assert re.match(r"==\d+== ", text), name  # every line carries valgrind's prefix
        assert "|FENCE|FENCE|FENCE" in text, name  # start-up CPUIDs, logged as fences
    verbose = [e["log"] for e in LOGS if "-q" not in e["pmemcheck_flags"]]
    assert verbose and all("Copyright" in texts[n] for n in verbose)
    assert all(re.search(r"\n==\d+== \|STOP", texts[n]) for n in verbose)


def test_unaligned_flush_trap_is_in_the_corpus() -> None:
    """raw_tail's clwb(&h->tail) is logged at its operand (offset 8) reaching into the
    records' line, unless --flush-align=yes."""
    for name, offsets in (("raw_tail-bug-q.log", {0, 0x8, 0x10}), ("raw_tail-bug-align.log", {0})):
        recs = _records((CORPUS / name).read_text())
        base = int(next(r for r in recs if r.startswith("REGISTER_FILE;")).split(";")[2], 16)
        flushes = {int(r.split(";")[1], 16) - base for r in recs if r.startswith("FLUSH;")}
        assert flushes == offsets, name


def test_logged_files_are_the_manifests() -> None:
    for e in LOGS:
        recs = _records((CORPUS / e["log"]).read_text())
        regs = [r.split(";") for r in recs if r.startswith("REGISTER_FILE;")]
        assert [(r[1], int(r[3], 16)) for r in regs] == [
            (f["path"], f["size"]) for f in e["files"]
        ], e["log"]


# --- the checkers tell a whole pool from a damaged one ------------------------------------

#: program -> (variant args, file offset to damage so that the invariant breaks)
DAMAGE = {
    "raw_tail": 0x50,  # record 0's checksum
    "raw_flag": 0x40,  # the first byte of the text
    "raw_deep": 0x58,  # record 0's checksum
    "undo_tx": 0x80,  # account 0's balance
    "pmem2_kv": 0x1010,  # slot 0's checksum
}


def _run_native(bins: dict[str, Path], program: str, variant: str, paths: list[Path]) -> None:
    done = subprocess.run(
        [str(bins[program]), variant, *map(str, paths)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PMEM2_FORCE_GRANULARITY"},
    )
    assert done.returncode == 0, done.stderr


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.parametrize("variant", ["bug", "fixed"])
@pytest.mark.parametrize("program", sorted(DAMAGE))
def test_checkers_accept_a_finished_run_and_reject_damage(
    bins: dict[str, Path], tmp_path: Path, program: str, variant: str
) -> None:
    if program not in bins:
        pytest.skip("libpmem2-dev is not installed (the program links libpmem2)")
    pool = tmp_path / "pool"
    _run_native(bins, program, variant, [pool])
    lib = _lib_check(bins[f"libcheck_{program}.so"])
    exe = [str(bins[f"check_{program}"]), "some-arg"]  # the image is the last argument
    assert subprocess.run([*exe, str(pool)]).returncode == 0
    assert lib(pool) == 1
    _flip(pool, DAMAGE[program])
    assert subprocess.run([*exe, str(pool)], capture_output=True).returncode == 1
    assert lib(pool) == 0


def test_hashtab_checker_rejects_a_valid_slot_that_is_not_whole(
    bins: dict[str, Path], tmp_path: Path
) -> None:
    lib = _lib_check(bins["libcheck_hashtab.so"])
    for variant, slot in (("bug", 128), ("oneline", 64)):
        pool = tmp_path / variant
        _run_native(bins, "hashtab", variant, [pool])
        assert lib(pool) == 1
        image = bytearray(pool.read_bytes())
        flag = 0 if slot == 128 else 56
        valid = next(
            i
            for i in range(64, 8192 - slot + 1, slot)
            if image[i + flag : i + flag + 8] == b"\x01" + bytes(7)
        )
        image[valid + 8 * (8 if slot == 128 else 1)] ^= 0xFF  # a value word
        pool.write_bytes(bytes(image))
        assert lib(pool) == 0
        assert subprocess.run([str(bins["check_hashtab"]), str(pool)]).returncode == 1


def test_two_files_checkers_see_one_file_or_the_pool(bins: dict[str, Path], tmp_path: Path) -> None:
    data, meta = tmp_path / "data", tmp_path / "meta"
    _run_native(bins, "two_files", "bug", [data, meta])
    exe = str(bins["check_two_files"])
    pair = _lib_check(bins["libcheck_two_files.so"], "check_pair")
    one = _lib_check(bins["libcheck_two_files.so"])
    assert pair(data, meta) == pair(meta, data) == 1
    assert one(data) == one(meta) == 1
    assert subprocess.run([exe, "--pair", str(meta), str(data)]).returncode == 0
    _flip(data, 0x10)  # record 0's checksum: committed but torn
    assert pair(data, meta) == 0
    assert subprocess.run([exe, "--pair", str(data), str(meta)], capture_output=True).returncode
    assert one(data) == 1  # alone, the data file cannot tell a torn record from an unfinished one
    with open(meta, "r+b") as f:
        f.seek(8)
        f.write((99).to_bytes(8, "little"))  # a count out of range: wrong on its own
    assert one(meta) == 0


# --- fresh recordings agree with the corpus -----------------------------------------------


def _normalised(text: str) -> list[str]:
    """Records with addresses made relative to the first registered file and frames cut to
    the test programs' own ``function (file.c:line)``: what must not change between two
    recordings of the same source."""
    recs = _records(text)
    base = int(next(r for r in recs if r.startswith("REGISTER_FILE;")).split(";")[2], 16)
    out = []
    for r in recs:
        fields = r.split(";")
        if fields[0] in ("STORE", "FLUSH", "DEEP_SYNC"):
            fields[1] = hex(int(fields[1], 16) - base)
            if fields[0] == "STORE":
                frames = [re.sub(r"^0x[0-9A-Fa-f]+: ", "", f) for f in fields[4:]]
                fields[4:] = [f for f in frames if re.search(r"\(\w+\.c:\d+\)$", f)]
        elif fields[0] == "REGISTER_FILE":
            fields[2] = hex(int(fields[2], 16) - base)
        out.append(";".join(fields))
    return out


@pytest.mark.parametrize("log", ["raw_tail-bug-q.log", "undo_tx-bug-verbose.log"])
def test_fresh_recording_matches_the_corpus(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path, log: str
) -> None:
    valgrind, made = recorded_bins
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    if gcc.splitlines()[0] != MANIFEST["recorded_with"]["gcc"]:
        pytest.skip("another gcc than the corpus was recorded with: line numbers may differ")
    e = next(e for e in LOGS if e["log"] == log)
    pools = tmp_path / "pools"
    pools.mkdir()
    paths = [str(pools / Path(f["path"]).name) for f in e["files"]]
    out = tmp_path / "fresh.log"
    flags = [f for f in e["pmemcheck_flags"]]
    cmd = [valgrind, "--tool=pmemcheck", *flags, str(made[e["program"]]), e["variant"], *paths]
    with open(out, "wb") as err:
        if e["capture"] == "log-file":
            cmd.insert(2, f"--log-file={out}")
            err = None  # type: ignore[assignment]
        done = subprocess.run(cmd, env={**os.environ, **e["env"]}, stderr=err, timeout=120)
    assert done.returncode == 0
    fresh, committed = out.read_text(), (CORPUS / log).read_text()
    for f in e["files"]:  # the files live elsewhere this time
        committed = committed.replace(f["path"], str(pools / Path(f["path"]).name))
    assert _normalised(fresh) == _normalised(committed)


# --- check-log gives the x86 verdict on every real log -------------------------------------


def _lost_store_lines(report: str) -> set[str]:
    """``file.c:LINE`` named in the report's "stores lost:" block."""
    block = report.split("stores lost:", 1)[1].split("checker:", 1)[0]
    return set(re.findall(r"\b(\w+\.c:\d+)\b", block))


def _check_log(log: str, checker: list[str], tmp_path: Path, capsys: Any) -> tuple[dict, str]:
    from pmemsim.cli import main

    out = tmp_path / "result.json"
    status = main(["check-log", str(CORPUS / log), "--json", str(out), *checker])
    report = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert status == (1 if result["verdict"] == "inconsistent" else 0)
    return result, report


def _checker_options(c: dict[str, Any], bins: dict[str, Path]) -> list[str]:
    """check-log's options for a manifest checker."""
    if c["kind"] == "library":
        return ["--checker-lib", f"{bins[c['library']]}:{c['function']}"]
    argv = [str(bins[c["argv"][0]]), *c["argv"][1:]]
    return [*(["--all-files"] if c.get("all_files") else []), "--", *argv]


#: Every log with its library checker (in-process: fast); the small programs' logs with
#: their checker programs too (a process per image).
CHECKS = [
    (e, c)
    for e in LOGS
    for c in e["checkers"]
    if c["kind"] == "library" or e["program"] in ("raw_tail", "raw_flag", "undo_tx", "two_files")
]


@pytest.mark.parametrize(
    ("entry", "checker"), CHECKS, ids=[f"{e['log']}-{c['name']}" for e, c in CHECKS]
)
def test_check_log_gives_the_x86_verdict(
    bins: dict[str, Path],
    tmp_path: Path,
    capsys: Any,
    entry: dict[str, Any],
    checker: dict[str, Any],
) -> None:
    result, report = _check_log(entry["log"], _checker_options(checker, bins), tmp_path, capsys)
    assert result["verdict"].upper() == checker["expected"], report
    assert result["exact"]
    if checker["expected"] == "INCONSISTENT" and _log_names_lost_lines(entry):
        # the C line of every lost store of the minimal crash, in the report and the JSON
        named = _lost_store_lines(report)
        assert named, report
        assert named <= set(entry["lost_lines"]), report
        sources = {s["source"].split(" in ")[0] for s in result["minimal"]["lost_stores"]}
        assert sources <= set(entry["lost_lines"]), result["minimal"]


def _log_names_lost_lines(entry: dict[str, Any]) -> bool:
    """Whether the log's stack frames name a lost line at all (a log without stack traces
    names none; a one-frame log of a store made by memcpy or libpmem2 only the library's)."""
    return any(f"({line})" in _flat(entry["log"]) for line in entry["lost_lines"])


def _flat(log: str) -> str:
    return "|".join(_records((CORPUS / log).read_text()))


# --- pmemsim record / check-program --------------------------------------------------------


def _pmemsim(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the pmemsim command; one that hangs is stopped with SIGABRT, so that Python's
    fault handler shows where each of its threads was."""
    exe = Path(sys.executable).with_name("pmemsim")
    env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [str(exe), *argv],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate()
        raise AssertionError(f"pmemsim {shlex.join(argv)} hung:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def recorded_bins(bins: dict[str, Path]) -> tuple[str, dict[str, Path]]:
    """pmemcheck, and the programs built with its client requests."""
    valgrind = pmemcheck_available()
    if valgrind is None or include_dir(valgrind) is None:
        pytest.skip("pmemcheck is not installed (set PMEMSIM_VALGRIND to a valgrind with it)")
    return valgrind, bins


def test_record_without_pmemcheck_says_how_to_get_it(tmp_path: Path) -> None:
    fake = _fake_valgrind(tmp_path / "bin", False)
    env = {**os.environ, "PMEMSIM_VALGRIND": str(fake)}
    done = _pmemsim("record", "-o", "x.log", "--", "true", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "without the pmemcheck tool" in done.stderr
    assert "github.com/pmem/valgrind" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.log").exists()
    done = _pmemsim("record", "-o", "x.log", "--", "no-such-program-here", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "no such program" in done.stderr
    done = _pmemsim("check-program", "--", "true", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "name one checker" in done.stderr


def test_record_writes_a_complete_log(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    from pmemsim.pmlog import Store, read_log

    _, made = recorded_bins
    pool = tmp_path / "flag.pool"
    done = _pmemsim(
        "record", "-o", "flag.log", "--", str(made["raw_flag"]), "bug", str(pool), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    log = read_log(str(tmp_path / "flag.log"))
    assert [(r.path, r.size) for r in log.files] == [(str(pool), 4096)]
    stores = [op for op in log.iter_operations() if isinstance(op, Store)]
    # deep enough to get out of memcpy to the C line that called it
    assert any("publish (raw_flag.c:" in f for s in stores for f in s.frames[1:])
    assert (tmp_path / "flag.log").stat().st_mode & 0o777 != 0o600
    # the file now holds the run's end: the suggested check starts it from zeros
    assert f"check it: pmemsim check-log flag.log --base-image {pool}= --" in done.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_record_passes_the_programs_exit_status(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    done = _pmemsim("record", "-o", "x.log", "--", "sh", "-c", "exit 3", cwd=tmp_path)
    assert done.returncode == 3
    assert "exited with status 3" in done.stderr and "registered no file" in done.stderr
    assert (tmp_path / "x.log").exists()


@pytest.mark.parametrize("variant", ["bug", "fixed"])
def test_check_program_records_and_checks(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path, variant: str
) -> None:
    _, made = recorded_bins
    checker = shlex.join([str(made["check_raw_tail"])])
    pool = tmp_path / "tail.pool"
    pool.write_bytes(b"left over from an earlier run" * 100)  # the program recreates it
    argv = ["check-program", "--checker", checker, "--", str(made["raw_tail"]), variant, str(pool)]
    done = _pmemsim(*argv, cwd=tmp_path)
    assert done.returncode == (1 if variant == "bug" else 0), done.stdout + done.stderr
    assert (tmp_path / "raw_tail.pmemcheck.log").exists()
    assert "warning" not in done.stderr
    if variant == "bug":
        assert "raw_tail.c:48" in done.stdout  # the checksum store the minimal crash loses
        replay = next(
            line.split("replay: ", 1)[1] for line in done.stdout.splitlines() if "replay: " in line
        )
        again = subprocess.run(
            shlex.split(
                replay.replace("pmemsim", str(Path(sys.executable).with_name("pmemsim")), 1)
            ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 1, again.stdout + again.stderr


def test_check_program_warns_when_the_starting_image_cannot_be_right(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    """--pool names a file whose old content the program throws away with O_TRUNC (not a
    store): the log does not explain the file the run left, and the user is told."""
    _, made = recorded_bins
    pool = tmp_path / "tail.pool"
    pool.write_bytes(b"\xff" * 4096)
    argv = ["check-program", "--checker", str(made["check_raw_tail"]), "--pool", str(pool)]
    done = _pmemsim(*argv, "--", str(made["raw_tail"]), "fixed", str(pool), cwd=tmp_path)
    assert "does not explain" in done.stderr, done.stderr


def test_unexplained_offset(bins: dict[str, Path], tmp_path: Path) -> None:
    from pmemsim.pmlog import read_log
    from pmemsim.pmlog.pmemcheck import unexplained_offset

    log = read_log(str(CORPUS / "raw_tail-bug-q.log"))
    (reg,) = {r.path for r in log.files}
    pool = tmp_path / "pool"
    _run_native(bins, "raw_tail", "bug", [pool])  # the same stores, natively
    assert unexplained_offset(log, reg, file=pool) is None
    _flip(pool, 0x800)  # a byte no store wrote
    assert unexplained_offset(log, reg, file=pool) == 0x800
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x01" * 8192)
    _flip(pool, 0x800)
    assert unexplained_offset(log, reg, junk, file=pool) == 0x18  # the first byte left as it was


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_stops_cleanly_on_a_signal(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path, sig: int
) -> None:
    exe = Path(sys.executable).with_name("pmemsim")
    proc = subprocess.Popen(
        [str(exe), "record", "-o", "x.log", "--", "sleep", "60"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT; this one must see it as Ctrl-C does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    valgrind = _wait_for_child(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the log nor its temporary file
    with pytest.raises(ProcessLookupError):
        os.killpg(valgrind, 0)


def _wait_for_child(pid: int) -> int:
    """The first child of ``pid`` once it exists."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        if kids:
            time.sleep(0.5)  # let valgrind get going
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("valgrind never started")


# --- the README's C tutorial runs and prints what it shows ----------------------------------


def _readme_c_tutorial() -> dict[str, list[str]]:
    """The fenced blocks of the README's C tutorial, by language ("" for output)."""
    text = (ROOT / "README.md").read_text()
    part = text.split("## Tutorial: a C program", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {"c": [], "sh": [], "": []}
    lang: str | None = None
    for line in part.splitlines(keepends=True):
        if line.startswith("```"):
            if lang is None:
                lang = line[3:].strip()
                blocks[lang].append("")
            else:
                lang = None
        elif lang is not None:
            blocks[lang][-1] += line
    return blocks


def _masked(text: str) -> list[str]:
    """Lines with timings (which vary) masked."""
    text = re.sub(r"\d+\.\d+ s\b", "T s", text)
    return re.sub(r"[\d,]+ images/s", "N images/s", text).splitlines()


def test_readme_c_tutorial(recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path) -> None:
    valgrind, _ = recorded_bins
    blocks = _readme_c_tutorial()
    publish, check, fix = blocks["c"]
    (commands,) = blocks["sh"]
    shown_bug, shown_fixed = blocks[""]
    (tmp_path / "publish.c").write_text(publish)
    (tmp_path / "check.c").write_text(check)
    prefix = str(Path(valgrind).resolve().parent.parent)
    pool = str(tmp_path / "pool")
    script = commands.replace("PREFIX", prefix).replace("/tmp/pool", pool)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    done = run()
    assert done.returncode == 1, done.stdout + done.stderr
    assert _masked(done.stdout.replace(pool, "/tmp/pool")) == _masked(shown_bug)
    # the lost store it names is the assignment in the loop
    line = int(re.search(r"stored at publish\.c:(\d+) in main", shown_bug).group(1))  # type: ignore[union-attr]
    assert publish.splitlines()[line - 1].strip() == "p->data[i] = 100 + i;"

    loop = "\tfor (int i = 0; i < 8; i++)\n\t\tp->data[i] = 100 + i;\n\tp->valid = 1;\n"
    assert loop in publish
    (tmp_path / "publish.c").write_text(publish.replace(loop, fix))
    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert shown_fixed.strip() in done.stdout.splitlines()


def test_check_program_on_two_files_sees_the_bug_across_them(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    _, made = recorded_bins
    data, meta = tmp_path / "data", tmp_path / "meta"
    program = [str(made["two_files"]), "bug", str(data), str(meta)]
    pair = shlex.join([str(made["check_two_files"]), "--pair"])
    done = _pmemsim("check-program", "--all-files", "--checker", pair, "--", *program, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    (lost,) = next(e for e in LOGS if e["log"] == "two_files-bug-q.log")["lost_lines"]
    assert f"stored at {lost} in append" in done.stdout
    # one file at a time (pmreorder's protocol) the bug cannot be seen
    lib = f"{made['libcheck_two_files.so']}:check"
    done = _pmemsim("check-program", "--checker-lib", lib, "--", *program, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_record_env_forces_cache_line_unless_told_otherwise() -> None:
    from pmemsim.pmlog.pmemcheck import record_env

    assert record_env({})["PMEM2_FORCE_GRANULARITY"] == "CACHE_LINE"
    assert record_env({"PMEM2_FORCE_GRANULARITY": "BYTE"})["PMEM2_FORCE_GRANULARITY"] == "BYTE"
    forced = {"PMEM2_FORCE_GRANULARITY": "BYTE"}
    assert record_env(forced, "page")["PMEM2_FORCE_GRANULARITY"] == "PAGE"
    assert "PMEM2_FORCE_GRANULARITY" not in record_env(forced, "native")
    assert forced == {"PMEM2_FORCE_GRANULARITY": "BYTE"}  # the caller's mapping is not changed


def test_record_flushes_lines_as_on_persistent_memory_by_default(
    recorded_bins: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    """On a plain file libpmem2 persists with msync, logged from the page's start: a flush
    that covers lines the program never flushed. Recorded as on persistent memory (the
    default), every flush is of the lines the program persisted."""
    from pmemsim.pmlog import Flush, read_log

    _, made = recorded_bins
    env = {k: v for k, v in os.environ.items() if k != "PMEM2_FORCE_GRANULARITY"}
    flushes = {}
    for how in ("default", "native"):
        pool = tmp_path / f"{how}.pool"
        extra = [] if how == "default" else ["--granularity", "native"]
        argv = ["record", "-o", f"{how}.log", *extra, "--", str(made["pmem2_kv"]), "fixed"]
        done = _pmemsim(*argv, str(pool), cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        log = read_log(str(tmp_path / f"{how}.log"))
        (base,) = {f.base for f in log.files}
        flushes[how] = [
            (op.address - base, op.size) for op in log.iter_operations() if isinstance(op, Flush)
        ]
        forced = "(libpmem2 at CACHE_LINE granularity)" in done.stderr
        assert forced == (how == "default"), done.stderr
    assert flushes["default"] and flushes["native"]
    # As on persistent memory: whole lines, those of the range persisted.
    assert all(off % 64 == 0 and size % 64 == 0 for off, size in flushes["default"])
    # msync's: from the page's start to the range's end, over lines the program did not
    # persist (the slot before the one it wrote).
    assert any(
        p % 4096 == 0 and p < q < p + n and q + m == p + n
        for p, n in flushes["native"]
        for q, m in flushes["default"]
    )
