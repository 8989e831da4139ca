"""The README's examples run and say what the README says they say."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _run_blocks() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in re.findall(r"```python\n(.*?)```", README, re.S):
            exec(compile(block, "README.md", "exec"), {})
    return out.getvalue()


def test_worked_example_output() -> None:
    lines = _run_blocks().splitlines()
    assert lines[0] == "2"
    assert lines[1:3] == ["1 55930", "1 0"]
    assert lines[3].startswith("error: store never flushed at README.md:")
    assert lines[4].startswith("inconsistent ")
    assert "stores lost:" in "\n".join(lines[5:])


def test_top_commands_are_the_ones_ci_runs() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [c for c in first_block.group(1).splitlines() if c and not c.startswith("#")]
    assert len(commands) == 2
    assert "pmemsim check scenarios/append_log.py" in commands[0]
    assert "python -m pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pmemsim check scenarios/append_log.py" in ci
    assert "python -m pytest" in ci


def test_main_job_finds_the_bugs_and_passes_the_correct_log() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pmemsim", "check", str(ROOT / "scenarios" / "append_log.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"append_log: correct\s+consistent\s+yes", proc.stdout)
    assert re.search(r"under one fence\s+inconsistent\s+yes", proc.stdout)
    assert "3 checks, 3 with the expected verdict" in proc.stdout
