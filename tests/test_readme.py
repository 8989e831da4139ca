"""The README's examples run and say what the README says they say."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(first line number, text) of every fenced block in ``lang``."""
    out = []
    for m in re.finditer(rf"```{lang}\n(.*?)```", README, re.S):
        out.append((README.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return out


def _index(marker: str) -> int:
    """The python block holding ``marker`` (blocks are found by content, not position)."""
    (i,) = [i for i, (_, text) in enumerate(_blocks("python")) if marker in text]
    return i


def _run(index: int, namespace: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Run python block ``index`` with README line numbers, as a user pasting it would."""
    line, text = _blocks("python")[index]
    ns: dict[str, Any] = {} if namespace is None else namespace
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("\n" * (line - 1) + text, "README.md", "exec"), ns)
    return out.getvalue(), ns


def _shown_after(index: int) -> str:
    """The output the README shows right after python block ``index``."""
    _, text = _blocks("python")[index]
    rest = README.split(text, 1)[1][3:]  # past the block's closing fence
    shown = re.search(r"```\n(.*?)```", rest, re.S)
    assert shown is not None
    return shown.group(1)


def test_tutorial_report_is_what_the_readme_shows() -> None:
    out, ns = _run(0)
    assert out == _shown_after(0)
    fixed, _ = _run(_index("def append_fixed"), ns)
    assert fixed == _shown_after(_index("def append_fixed"))
    assert "CONSISTENT (exact)" in fixed and "INCONSISTENT" not in fixed


def test_tutorial_report_points_at_the_store_it_says() -> None:
    out, _ = _run(0)
    lost = re.search(r"stored at README.md:(\d+) in append", out)
    assert lost is not None
    assert "v.u64[slot + 1] = ~value & MASK" in README.splitlines()[int(lost.group(1)) - 1]


def test_fault_injection_example_prints_what_the_readme_says() -> None:
    out, _ = _run(_index("inject_random_badblocks"))
    assert out.splitlines() == ["poisoned load at +0x1a00", "False", "[42, 0]", "[42]"]
    assert "This prints `poisoned load at +0x1a00`, `False`, `[42, 0]` and `[42]`." in README


def test_hypothesis_example_finds_and_shrinks_the_bug() -> None:
    _, ns = _run(_index("def test_log_survives_every_crash"))
    with pytest.raises(AssertionError, match="entry 0 of 1 is missing") as info:
        ns["test_log_survives_every_crash"]()
    assert any("0:0.40=1" in note for note in info.value.__notes__)


def test_top_commands_are_the_ones_ci_runs() -> None:
    _, first = _blocks("sh")[0]
    commands = [c for c in first.splitlines() if c and not c.startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith("pmemsim check scenarios/")
    assert commands[1].endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pmemsim check scenarios/" in ci
    assert "python -m pytest" in ci


def test_main_job_runs_the_catalogue_with_every_expected_verdict() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pmemsim", "check", str(ROOT / "scenarios")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = re.search(r"(\d+) checks: (\d+) passed, 0 failed, 0 errored", proc.stdout)
    assert summary is not None and summary.group(1) == summary.group(2)
    assert re.search(r"append_log: correct\s+consistent\s+yes", proc.stdout)
    assert re.search(r"under one fence\s+inconsistent\s+yes", proc.stdout)


# -- "Your first check of your own" ----------------------------------------------------


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _project(tmp_path: Path) -> tuple[Path, str]:
    """The walk-through's project, written from its blocks (each names its file on line 1)."""
    text = _section("Your first check of your own")
    fix = ""
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first = block.splitlines()[0]
        if first.startswith("# kv.py, the fix"):
            fix = block
            continue
        name = re.fullmatch(r"# (\S+\.py): .*", first)
        assert name is not None, first
        (tmp_path / name[1]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name[1]).write_text(block)
    return tmp_path, fix


def _shown(text: str, after: str) -> str:
    rest = text.split(after, 1)[1]
    found = re.search(r"```\n(.*?)```", rest, re.S)
    assert found is not None
    return found.group(1)


def _run_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # (Its own temporary folder: a failing check's HTML page goes there without pytest's
    # cache, and nothing is left in the machine's.)
    tmp = project / ".tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=project, capture_output=True, text=True, check=False,
        env=env,
    )  # fmt: skip


def test_first_check_of_your_own_runs_as_the_readme_walks_through(tmp_path: Path) -> None:
    text = _section("Your first check of your own")
    project, fix = _project(tmp_path)

    def short(out: str) -> str:  # as the README prints paths, and without timings
        out = out.replace(f"{project}/", "")
        return re.sub(r"\d+\.\d+ s\b|\b\d\.\d{3}\b", "T", out)

    # pmemsim check: the module imported, a failed row and an ERROR row, exit 1.
    proc = _run_in(project, "pmemsim", "check", "checks/")
    assert proc.returncode == 1, proc.stderr
    assert short(proc.stdout) == short(_shown(text, "pmemsim check checks/\n```"))
    # Its replay line runs as printed.
    replay = re.search(r"replay: pmemsim replay '([^']+)'", proc.stdout)
    assert replay is not None
    assert _run_in(project, "pmemsim", "replay", replay[1]).returncode == 1
    # pytest: the same crash, and a replay line that runs.
    test = _run_in(project, "pytest", "-p", "no:cacheprovider", "tests/test_kv.py")
    assert test.returncode == 1
    assert list((project / ".tmp").rglob("*.html"))  # (its page: in the run's own TMPDIR)
    for line in _shown(text, "and the line that reruns only that crash:").splitlines():
        assert line.strip() in short(test.stdout), line
    command = re.search(r"replay: pytest (\S+) (--pmemsim-replay=\S+)", test.stdout)
    assert command is not None
    args = ("pytest", "-p", "no:cacheprovider", command[1], command[2])
    assert _run_in(project, *args).returncode == 1
    # The fix: the replay line passes, then the whole test.
    kv = (project / "kv.py").read_text()
    old = re.search(r"def put\(.*?\n\n\n", kv, re.S)
    assert old is not None and fix
    (project / "kv.py").write_text(kv.replace(old[0], fix.split("\n", 1)[1] + "\n\n"))
    assert _run_in(project, *args).returncode == 0
    assert _run_in(project, "pytest", "-p", "no:cacheprovider", "tests").returncode == 0
