"""`pmemsim check` as a user meets it: their own modules, broken checks, options, output files.

Subprocess runs where the user sees the process (exit status, stderr, no traceback); the
in-process ``main`` where only the outcome matters.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pmemsim.cli import main

ROOT = Path(__file__).resolve().parent.parent

# A module of the user's: a one-slot store whose put publishes before the value is durable.
KV = """
def put(v, value):
    v.u64[8] = value
    v.u64[0] = 1          # published: the flag, another line
    v.persist(0, 72)      # BUG: one fence for both lines


def put_fixed(v, value):
    v.u64[8] = value
    v.persist(64, 8)
    v.u64[0] = 1
    v.persist(0, 8)


def get(v):
    return v.u64[8] if v.u64[0] else None
"""

USES_KV = """
from pmemsim.explore import CrashCheck
import kv


def recover(v):
    assert kv.get(v) in (None, 7), "published without its value"


fixed = CrashCheck("kv fixed", lambda v: kv.put_fixed(v, 7), recover)
bug = CrashCheck("kv bug", lambda v: kv.put(v, 7), recover, expect="inconsistent")
"""


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pmemsim", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


# -- the user's own modules ----------------------------------------------------------------


def test_a_check_file_imports_a_module_next_to_it_from_any_folder(tmp_path: Path) -> None:
    write(tmp_path / "proj", "kv.py", KV)
    write(tmp_path / "proj", "checks.py", USES_KV)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run("check", str(tmp_path / "proj" / "checks.py"), cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"kv fixed\s+consistent\s+yes", proc.stdout)
    assert re.search(r"kv bug\s+inconsistent\s+yes", proc.stdout)
    # The replay line it prints runs as printed, from the same folder.
    token = re.search(r"replay: pmemsim replay '([^']+)'", proc.stdout)
    assert token is not None
    again = run("replay", token[1], cwd=elsewhere)
    assert again.returncode == 1 and "published without its value" in again.stderr


def test_modules_of_the_rootdir_and_the_current_folder_are_importable(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project, "pyproject.toml", "[project]\nname = 'x'\n")
    write(project, "kv.py", KV)
    write(project, "checks/deep/check_kv.py", USES_KV)
    proc = run("check", "checks", cwd=project)  # the rootdir is the current folder
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("check", str(project / "checks"), cwd=tmp_path)  # found as the rootdir
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_check_file_in_a_package_uses_relative_imports(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/kv.py", KV)
    write(tmp_path, "pkg/checks.py", USES_KV.replace("import kv", "from . import kv"))
    assert main(["check", str(tmp_path / "pkg" / "checks.py"), "-q"]) == 0


def test_in_process_runs_forget_the_users_modules(tmp_path: Path) -> None:
    for value in (7, 8):
        folder = tmp_path / str(value)
        write(folder, "kv.py", KV.replace("u64[8] = value", f"u64[8] = {value}"))
        write(folder, "checks.py", USES_KV.replace("(None, 7)", f"(None, {value})"))
        before = list(sys.path)
        assert main(["check", str(folder / "checks.py"), "-q"]) == 0
        assert sys.path == before and "kv" not in sys.modules


# -- every check runs; broken ones are ERROR rows ----------------------------------------

GOOD = """
from pmemsim.explore import CrashCheck

def w(v):
    v.u64[0] = 1
    v.persist(0, 8)

good = CrashCheck("good", w, lambda v: True)
"""

RAISES = """
from pmemsim.explore import CrashCheck

def w(v):
    v.u64[0] = 1
    raise RuntimeError("the workload gave up")

raises = CrashCheck("workload raises", w, lambda v: True)
"""

OUT_OF_RANGE = """
from pmemsim.explore import CrashCheck

def w(v):
    v.u64[1000] = 1

far = CrashCheck("store out of range", w, lambda v: True)
"""


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "checks"
    write(folder, "a_good.py", GOOD)
    write(folder, "b_raises.py", RAISES)
    write(folder, "c_import_fails.py", "import no_such_module_here\n")
    write(folder, "d_exits.py", "import sys\nsys.exit(3)\n")
    write(folder, "e_far.py", OUT_OF_RANGE)
    write(folder, "f_syntax.py", "def broken(:\n")
    write(folder, "sub/g_good.py", GOOD.replace('"good"', '"good, one folder down"'))
    return folder


def test_every_check_runs_and_each_broken_one_is_an_error_row(broken_folder: Path) -> None:
    proc = run("check", str(broken_folder))
    no_traceback(proc)
    assert proc.returncode == 1
    out = proc.stdout
    for row in (
        r"good\s+consistent\s+yes",
        r"workload raises\s+ERROR",
        r"c_import_fails.py\s+ERROR",
        r"d_exits.py\s+ERROR",
        r"store out of range\s+ERROR",
        r"f_syntax.py\s+ERROR",
        r"good, one folder down\s+consistent\s+yes",
    ):
        assert re.search(row, out), row
    # The exception and the user's line, for each.
    assert "RuntimeError: the workload gave up" in out
    assert f"at {broken_folder / 'b_raises.py'}:5 in w" in out
    assert "PMEMSET_E_OFFSET_OUT_OF_RANGE" in out
    assert f"at {broken_folder / 'e_far.py'}:4 in w" in out
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in out
    assert "SystemExit: the code called sys.exit(3)" in out
    assert f"{broken_folder / 'f_syntax.py'}:1" in out
    assert "7 checks: 2 passed, 0 failed, 5 errored" in out


def test_sys_exit_in_a_check_file_does_not_become_the_exit_status(tmp_path: Path) -> None:
    proc = run("check", str(write(tmp_path, "x.py", "import sys\nsys.exit(3)\n")))
    assert proc.returncode == 1
    no_traceback(proc)


def test_a_poisoned_read_in_crashed_recovery_is_not_a_usage_error() -> None:
    proc = run("check", str(ROOT / "scenarios" / "append_log.py"), "--recovery-depth", "1")
    no_traceback(proc)
    assert proc.returncode in (0, 1), proc.stderr
    # Every check of the file has its row.
    assert (
        len(re.findall(r"^append_log: .*\s(consistent|inconsistent|ERROR)\s", proc.stdout, re.M))
        == 5
    )


# -- bad input: exit 2, before any work or output -----------------------------------------


@pytest.mark.parametrize(
    "option, message",
    [
        (["--jobs", "0"], "argument --jobs: 0 is less than 1"),
        (["--jobs", "99999999999999999999999"], "is more than 256"),  # was forked, one by one
        (["--jobs", "two"], "--jobs"),
        (["--max-images", "1"], "--max-images"),
        (["--recovery-depth", "-1"], "--recovery-depth"),
        (["--strategy", "exhaustiv"], "use one of: exhaustive"),
        (["--seed", "-4"], "--seed -4: expected an integer"),
        (["--crash-points", "anywhere"], "use one of barriers, operations, markers"),
        (["--json", "/no/such/folder/r.json"], "--json /no/such/folder/r.json: cannot write it"),
        (["--junit-xml", "/proc/r.xml"], "--junit-xml /proc/r.xml: cannot write it"),
        (["--json", "."], "is a folder"),
        (["-k", "good and (not"], "ends too early, and no check has that exact name"),
        # Refused even where something else was selected: it selects nothing itself.
        (["-k", "good", "-k", "good and (not"], "-k 'good and (not': the expression ends"),
    ],
)
def test_bad_options_are_refused_before_the_header(
    tmp_path: Path, option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, "c.py", GOOD)
    try:
        code = main(["check", str(f), *option])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    out = capsys.readouterr()
    assert code == 2
    assert out.out == "", "the header printed before the refusal"
    assert message in out.err


def test_bad_paths_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "missing.py")]) == 2
    assert main(["check", str(write(tmp_path, "none.py", "x = 1\n"))]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "defines no CrashCheck" in err
    # An empty argument is not the current folder (a variable that expanded to nothing).
    for argv in (["check", ""], ["validate", ""], ["info", "--dir", " "]):
        assert main(argv) == 2
        assert "an empty path" in capsys.readouterr().err


# -- selecting checks ----------------------------------------------------------------------


def _names(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out = capsys.readouterr().out
    return re.findall(r"^(.+?)\s{2,}(?:consistent|inconsistent|ERROR)\s", out, re.M)


def test_k_takes_substrings_and_expressions_as_pytest_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenarios = str(ROOT / "scenarios")
    main(["check", scenarios, "-k", "cmap"])
    names = _names(capsys)
    assert len(names) == 6 and all(n.startswith("cmap.") for n in names)
    main(["check", scenarios, "-k", "cmap and not byte and (correct or notify)"])
    assert _names(capsys) == ["cmap.correct[cache_line]", "cmap.notify_before_persist[cache_line]"]
    main(["check", scenarios, "-k", "CMAP.Correct[BYTE]"])  # case-insensitive
    assert _names(capsys) == ["cmap.correct[byte]"]
    # An exact name with spaces, and the file's name as a word.
    main(["check", scenarios, "-k", "append_log: record and tail under one fence"])
    assert _names(capsys) == ["append_log: record and tail under one fence"]
    main(["check", scenarios, "-k", "redo_log.py and no_checksum", "-k", "torn_root"])
    assert _names(capsys) == [
        "cow_node.torn_root[cache_line]",
        "cow_node.torn_root[byte]",
        "redo_log.no_checksum[cache_line]",
        "redo_log.no_checksum[byte]",
    ]


def test_a_folder_is_scanned_recursively_skipping_hidden_and_private(tmp_path: Path) -> None:
    write(tmp_path, "top.py", GOOD.replace('"good"', '"top"'))
    write(tmp_path, "a/b/deep.py", GOOD.replace('"good"', '"deep"'))
    write(tmp_path, ".hidden/h.py", "raise RuntimeError('never imported')\n")
    write(tmp_path, "_private/p.py", "raise RuntimeError('never imported')\n")
    write(tmp_path, "env/pyvenv.cfg", "")
    write(tmp_path, "env/lib/v.py", "raise RuntimeError('never imported')\n")
    proc = run("check", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 checks in 2 files" in proc.stdout


def test_two_checks_with_one_name_are_refused_by_check_and_replay_alike(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "dup.py",
        GOOD + 'other = CrashCheck("good", w, lambda v: v.u64[0] == 1)\nalias = good\n'
        'fine = CrashCheck("fine", w, lambda v: True)\n',
    )
    proc = run("check", str(f))
    assert proc.returncode == 1
    assert re.search(r"^good\s+ERROR", proc.stdout, re.M)
    assert re.search(r"^fine\s+consistent\s+yes", proc.stdout, re.M)
    assert "2 different checks have this name (`good` and `other`)" in proc.stdout
    replayed = run("replay", f"{f}::good@0:")
    assert replayed.returncode == 1
    assert "2 different checks have this name (`good` and `other`)" in replayed.stderr
    no_traceback(replayed)


# -- output files for CI -------------------------------------------------------------------


def test_json_has_every_failure_with_its_lost_stores(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    f = ROOT / "scenarios" / "append_log.py"
    assert main(["check", str(f), "-q", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["checks"] == 5 and doc["summary"]["passed"] == 5
    bug = next(
        c for c in doc["checks"] if c["name"] == "append_log: record and tail under one fence"
    )
    assert bug["status"] == "passed" and bug["verdict"] == "inconsistent"
    # The minimal crash of each distinct bug in full, and every inconsistent crash.
    assert 1 <= len(bug["failures"]) < len(bug["failing"]) == bug["inconsistent"]
    minimal = bug["failures"][0]
    assert bug["replay"] == f"pmemsim replay '{f}::{bug['name']}@{minimal['crash']}'"
    assert minimal["crash_point"]["at"][0]["file"] == str(f)
    for failure in [*bug["failures"], *bug["failing"]]:
        assert failure["lost_stores"], failure
        for s in failure["lost_stores"]:
            assert s["stored_at"][0]["file"] == str(f)
            assert isinstance(s["offset"], int) and s["length"] > 0
    assert {c["crash"] for c in bug["failing"]} >= {x["crash"] for x in bug["failures"]}


def test_junit_xml_has_one_case_per_check_and_the_report_as_failure(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    write(folder, "a.py", GOOD)
    write(folder, "b.py", RAISES)
    write(
        folder,
        "c.py",
        GOOD.replace('"good"', '"claims consistent"')
        .replace("v.persist(0, 8)", "")
        .replace("lambda v: True", "lambda v: v.u64[0] == 1"),
    )
    xml = tmp_path / "junit.xml"
    assert main(["check", str(folder), "-q", "--junit-xml", str(xml)]) == 1
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"good", "workload raises", "claims consistent"}
    assert list(cases["good"]) == []
    (failure,) = cases["claims consistent"]
    assert failure.tag == "failure" and "expected consistent, found inconsistent" in failure.get(
        "message", ""
    )
    assert "stores lost" in (failure.text or "")
    (error,) = cases["workload raises"]
    assert error.tag == "error" and error.get("type") == "RuntimeError"
    assert "the workload gave up" in (error.text or "")


# -- output --------------------------------------------------------------------------------


def test_one_check_is_singular_and_version_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(write(tmp_path, "c.py", GOOD))]) == 0
    out = capsys.readouterr().out
    assert "1 check in 1 file;" in out and "1 check: 1 passed" in out and "1 checks" not in out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert re.fullmatch(r"pmemsim \S+ \(Python \S+\)\n", capsys.readouterr().out)


def test_quiet_and_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = ROOT / "scenarios" / "append_log.py"
    main(["check", str(f), "-q"])
    quiet = capsys.readouterr().out
    assert quiet.strip().splitlines() == [quiet.strip().splitlines()[-1]]
    assert "5 checks: 5 passed" in quiet
    main(["check", str(f), "-v", "-k", "append_log: correct"])
    verbose = capsys.readouterr().out
    assert "== append_log: correct: CONSISTENT" in verbose


def test_colours_only_when_asked_or_on_a_terminal(tmp_path: Path) -> None:
    f = str(write(tmp_path, "c.py", GOOD))
    assert "\x1b[" not in run("check", f).stdout  # not a terminal
    assert "\x1b[32m" in run("check", f, "--color", "always").stdout
    assert "\x1b[" not in run("check", f, "--color", "never").stdout
