"""Reports written whole or not at all (pmemsim.reportfile), by every command that writes one.

A report that fails halfway (a full disk, a quota, a file-size limit) printed a traceback,
and left the previous report truncated. Now the command exits 2 naming the option and the
path, and a regular file keeps its previous content. /dev/full stands in for a full disk,
RLIMIT_FSIZE for a quota on a regular file.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pmemsim.reportfile import write_file

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = str(ROOT / "scenarios" / "append_log.py")
LOG = (
    "START|REGISTER_FILE;{pool};0x10000;0x1000;0x0|STORE;0x10000;0x1;0x8|"
    "STORE;0x10040;0x2;0x8|FLUSH;0x10000;0x40|FENCE|STOP\n"
)


CHECK = ["check", SCENARIO, "-k", "correct"]
# A Python checker for check-log: it needs no image files, which the file-size limit refuses.
CHECK_LOG = ["check-log", "LOG", "--checker-py", "OK"]
#: Each command with a report option: its argv (REPORT: the report's path), the option.
COMMANDS = {
    "check --json": ([*CHECK, "--json", "REPORT"], "--json"),
    "check --junit-xml": ([*CHECK, "--junit-xml", "REPORT"], "--junit-xml"),
    "check --html": ([*CHECK, "--html", "REPORT"], "--html"),
    "check-log --json": ([*CHECK_LOG, "--json", "REPORT"], "--json"),
    "check-log --html": ([*CHECK_LOG, "--html", "REPORT"], "--html"),
    "export-log -o": (
        ["export-log", SCENARIO, "-k", "correct", "--pool", "POOL", "-o", "REPORT"],
        "-o",
    ),
}


def _run(
    folder: Path, argv: list[str], report: str, limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    (folder / "store.log").write_text(LOG.format(pool=folder / "pool"))
    (folder / "ok.py").write_text("def check(image):\n    return True\n")
    paths = {
        "LOG": str(folder / "store.log"),
        "OK": f"{folder / 'ok.py'}:check",
        "POOL": str(folder / "exported-pool"),
        "REPORT": report,
    }

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "pmemsim", *[paths.get(a, a) for a in argv]],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,
        check=False,
    )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_is_a_clear_error_not_a_traceback(tmp_path: Path, name: str) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    argv, option = COMMANDS[name]
    done = _run(tmp_path, argv, "/dev/full")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"{option} /dev/full: cannot write it: No space left on device" in done.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_report_that_cannot_be_finished_leaves_the_last_one_whole(
    tmp_path: Path, name: str
) -> None:
    argv, option = COMMANDS[name]
    report = tmp_path / "report"
    done = _run(tmp_path, argv, str(report))
    assert done.returncode in (0, 1), done.stderr
    whole = report.read_bytes()
    assert len(whole) > 64
    report.write_bytes(b"the last good report\n")
    done = _run(tmp_path, argv, str(report), limit=len(whole) // 2)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"{option} {report}: cannot write it: File too large" in done.stderr
    assert report.read_bytes() == b"the last good report\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_link_stays_a_link_and_a_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert write_file(link, "new") == link
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    fresh = write_file(tmp_path / "fresh.json", b"bytes")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.read_bytes() == b"bytes" and fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_device_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    write_file(fifo, "through the pipe\n")
    out, _ = reader.communicate(timeout=30)
    assert out == b"through the pipe\n"
    assert fifo.exists() and not fifo.is_file()


#: An output given the path of one of the command's inputs: (argv, option, what it is).
OVER_INPUTS = {
    "check-log --json LOG": ([*CHECK_LOG, "--json", "LOG"], "--json", "the log being checked"),
    "check-log --html CHECKER": ([*CHECK_LOG, "--html", "OKFILE"], "--html", "the checker"),
    "check-log --image-out POOL": (
        [*CHECK_LOG, "--replay", "0:", "--image-out", "POOLFILE"],
        "--image-out",
        "the registered file",
    ),
    "check --json SCENARIO": (["check", "SCENARIO", "--json", "SCENARIO"], "--json", "the check"),
    "export-log -o SCENARIO": (
        ["export-log", "SCENARIO", "-k", "correct", "--pool", "POOL", "-o", "SCENARIO"],
        "-o",
        "the check file",
    ),
}


@pytest.mark.parametrize("name", list(OVER_INPUTS))
def test_an_output_over_an_input_is_refused_and_the_input_kept(tmp_path: Path, name: str) -> None:
    # A tab-completed --json overwrote the log being checked (or the checker's source, the
    # scenario...) with the report.
    argv, option, what = OVER_INPUTS[name]
    scenario = tmp_path / "append_log.py"
    scenario.write_text(Path(SCENARIO).read_text())
    pool = tmp_path / "pool"
    pool.write_bytes(bytes(range(256)) * 16)
    names = {"SCENARIO": str(scenario), "OKFILE": str(tmp_path / "ok.py"), "POOLFILE": str(pool)}
    argv = [names.get(a, a) for a in argv]
    before = {p: p.read_bytes() for p in (scenario, pool)}
    done = _run(tmp_path, argv, "unused")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"{option} " in done.stderr and f": is {what}" in done.stderr
    assert "which it would overwrite" in done.stderr
    assert {p: p.read_bytes() for p in (scenario, pool)} == before
    assert (tmp_path / "store.log").read_text().startswith("START|")
    assert (tmp_path / "ok.py").read_text().startswith("def check")


CHDIR = """
import os
import pmemsim as pm
from pmemsim.explore import FileCrashCheck

{at_import}

def workload(backend, folder):
    os.chdir(folder)  # relative names from here (a temporary folder, removed after the check)
    src = pm.Source.from_file("f", pm.SourceFlag.CREATE_IF_NEEDED)
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=backend)) as s:
        v = s.view(s.map(pm.Part(src, 0, 4096)))
        v.u64[0] = 1
        v.persist(0, 8)
    src.close()

def recover(backend, folder):
    os.chdir(folder)
    return True

check = FileCrashCheck("moves", workload, recover)
"""


@pytest.mark.parametrize("when", ["in its workload", "as it is imported"])
def test_a_check_that_changes_directory_does_not_move_the_report(tmp_path: Path, when: str) -> None:
    # `--json out.json` was written after the check, relative to where the check's code had
    # moved the process (a removed temporary folder: exit 2, the report lost).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    at_import = f"os.chdir({str(elsewhere)!r})" if when == "as it is imported" else ""
    (tmp_path / "moves.py").write_text(CHDIR.format(at_import=at_import))
    done = subprocess.run(
        [sys.executable, "-m", "pmemsim", "check", "moves.py", "--json", "out.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out.json").read_text().startswith("{")
    assert not (elsewhere / "out.json").exists()


def test_check_and_check_log_end_in_the_directory_they_began_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pmemsim.cli.check import load_check
    from pmemsim.explore import check
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log

    monkeypatch.chdir(tmp_path)  # (restored after the test, whatever happens)
    (tmp_path / "moves.py").write_text(CHDIR.format(at_import=""))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    here = os.getcwd()
    c = load_check(f"{tmp_path / 'moves.py'}::moves", "--recovery", files=True)
    assert check(c).verdict == "consistent"
    assert os.getcwd() == here

    def moves(image: object) -> bool:
        os.chdir(elsewhere)
        return True

    replay = Replay.of(parse_log(LOG.format(pool=tmp_path / "pool")))
    assert check_log(replay, FunctionChecker(moves, "moves")).inconsistent == 0
    assert os.getcwd() == here
