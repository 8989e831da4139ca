"""What `pmemsim check` draws on a terminal: one live progress line that leaves no trace in
the table, colours unless NO_COLOR."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["check", str(ROOT / "scenarios"), "-k", "btree_leaf or append_log"]


def _on_a_terminal(args: list[str], **env: str) -> str:
    """Everything the command writes to a pseudo-terminal (stdout and stderr both)."""
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmemsim", *args],
        stdin=sub,
        stdout=sub,
        stderr=sub,
        env={**os.environ, "TERM": "xterm", **env},
        close_fds=True,
    )
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    proc.wait(timeout=60)
    return b"".join(chunks).decode()


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows in the end: each line is what follows its last erase."""
    lines = raw.replace("\r\n", "\n").split("\n")
    visible = [re.split(r"\r\x1b\[K|\r", line)[-1] for line in lines]
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in visible]


def test_the_live_line_is_labelled_and_leaves_no_line_behind() -> None:
    raw = _on_a_terminal(ARGS)
    plain = subprocess.run(
        [sys.executable, "-m", "pmemsim", *ARGS], capture_output=True, text=True, check=True
    ).stdout
    # The live line showed, with the check's name...
    assert "\r\x1b[Kbtree_leaf.correct[cache_line]: " in raw

    # ...and the screen ends up as the plain output, without one extra line.
    def timeless(lines: list[str]) -> list[str]:
        return [re.sub(r"\d+\.\d+( s)?\b", "T", ln) for ln in lines if ln]

    assert timeless(_screen(raw)) == timeless(plain.splitlines())


def test_colours_on_a_terminal_unless_no_color() -> None:
    coloured = _on_a_terminal(ARGS)
    assert "\x1b[32mconsistent" in coloured and "\x1b[32myes" in coloured
    assert not re.search(r"\x1b\[[0-9;]*m", _on_a_terminal(ARGS, NO_COLOR="1"))


LEAVES_A_THREAD = """
import threading
import time
from pmemsim.explore import CrashCheck

def workload(v):
    v.write(64, b"\\x02" * 8)
    v.persist(64, 8)

def recover(v):
    threading.Thread(target=time.sleep, args=(3600,), name="left-behind").start()
    return True

check = CrashCheck("leaves a thread", workload, recover)
"""


@pytest.mark.parametrize("how", ["python -m pmemsim", "pmemsim"])
def test_a_thread_the_checked_code_left_running_does_not_hold_the_exit(
    tmp_path: Path, how: str
) -> None:
    # The interpreter waited for the recovery's thread after the report: an hour here, for
    # ever for an endless one.
    (tmp_path / "leaves.py").write_text(LEAVES_A_THREAD)
    script = Path(sys.executable).with_name("pmemsim")
    if how == "pmemsim" and not script.exists():
        pytest.skip("no pmemsim console script beside this interpreter")
    argv = [sys.executable, "-m", "pmemsim"] if how == "python -m pmemsim" else [str(script)]
    done = subprocess.run(
        [*argv, "check", "leaves.py", "--json", "out.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 check: 1 passed" in done.stdout
    assert "not waiting for" in done.stderr and "left-behind" in done.stderr
    assert (tmp_path / "out.json").read_text().endswith("}\n")
