"""`pmemsim replay`: every replay line a report prints runs as printed; a token that names
nothing runnable is a usage error with a message, never "consistent now"."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pmemsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
APPEND_LOG = ROOT / "scenarios" / "append_log.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pmemsim", *args], capture_output=True, text=True, check=False
    )


def test_every_replay_line_of_the_catalogue_runs_as_printed() -> None:
    out = run("check", str(ROOT / "scenarios"), "-k", "append_log or sds_pool").stdout
    lines = re.findall(r"replay: pmemsim replay '([^']+)'", out)
    assert len(lines) >= 5
    # A pool's and a program over files' (its tokens name files and faults).
    pools = [t for t in lines if "sds_pool" not in t]
    files = [t for t in lines if "sds_pool" in t]
    for token in [*pools[:2], *files[:1]]:
        proc = run("replay", token)
        assert proc.returncode == 1, (token, proc.stderr)
        assert "recovery on the image of crash" in proc.stderr


@pytest.mark.parametrize("name", ["it's $HOME", "it's `id`", "both ' and \"", "at @0: sign"])
def test_a_replay_line_runs_in_a_shell_whatever_the_checks_name(tmp_path: Path, name: str) -> None:
    # The line quoted the token with repr(): a name with a quote could not be pasted, and
    # one with $ or backticks was expanded by the shell into another token.
    (tmp_path / "named.py").write_text(
        "from pmemsim.explore import CrashCheck\n"
        "def workload(v):\n    v.write(64, b'\\x02' * 8)\n"
        "def recover(v):\n    return v.read(64, 8) == b'\\x02' * 8\n"
        f"check = CrashCheck({name!r}, workload, recover, expect='inconsistent')\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pmemsim", "check", "named.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    ).stdout
    (line,) = {m for m in re.findall(r"replay: (pmemsim replay .*)", out)}
    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m {line}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"{name}: recovery on the image of crash" in done.stderr


@pytest.mark.parametrize(
    "token, message",
    [
        ("log@0:0.40=1", "names no file"),
        (f"{APPEND_LOG}::no such check@0:", "has no check named 'no such check'"),
        (f"{APPEND_LOG}::append_log: correct@zero", "is not a crash token"),
        ("/no/such/file.py::x@0:", "no such file"),
        (f"{APPEND_LOG}::append_log: correct", "is not a replay token"),
        # Typed wrong, never clamped into "consistent now":
        (f"{APPEND_LOG}::append_log: correct@99:0.40=1", "has crash points 0 to 6, not 99"),
        (f"{APPEND_LOG}::append_log: correct@1:7.40=1", "line 7.40 has nothing in flight"),
    ],
)
def test_tokens_that_name_nothing_are_usage_errors(
    token: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", token]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_check_file_that_fails_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "c.py"
    f.write_text("import no_such_module_here\n")
    assert main(["replay", f"{f}::x@0:"]) == 1
    err = capsys.readouterr().err
    assert "ModuleNotFoundError" in err and f"{f}:1" in err and "Traceback" not in err
