"""An API user's process, which never calls :func:`pmemsim.scratch.remove_left`, removes
at its exit the scratch folders it left listed (a removal a signal cut short): the first
``make`` registers it with atexit. A forked child that exits normally runs it too, and
removes its own folders only, never its parent's. Each test is a Python process of its own
(the interpreter's exit is what is tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Generous, for a loaded 2-core machine.
PATIENCE = 60.0


def _run(code: str, root: Path, returncode: int = 0) -> list[list[str]]:
    """Run ``code`` (``root`` its argument) in a new interpreter: its output's lines, split."""
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode == returncode, done.stderr  # (-2: ended by SIGINT, as Python does)
    return [line.split() for line in done.stdout.splitlines()]


@pytest.mark.parametrize(
    ("end", "returncode"),
    [("pass", 0), ("sys.exit(3)", 3), ("raise KeyboardInterrupt", -2)],
    ids=["returns", "exits", "interrupted"],
)
def test_a_folder_left_listed_is_removed_at_the_interpreters_exit(
    tmp_path: Path, end: str, returncode: int
) -> None:
    code = f"""
import os, sys
from pmemsim import scratch
made = scratch.make("left", sys.argv[1])
print(made.path, made in scratch._left, os.path.isdir(made.path), flush=True)
{end}
"""
    [[path, listed, there]] = _run(code, tmp_path, returncode)
    assert (listed, there) == ("True", "True")
    assert not Path(path).exists()
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_that_exits_normally_removes_its_folders_not_its_parents(
    tmp_path: Path,
) -> None:
    code = """
import os, sys
from pmemsim import scratch
parents = scratch.make("parent", sys.argv[1])
pid = os.fork()
if pid == 0:
    childs = scratch.make("child", sys.argv[1])
    print("child", childs.path, flush=True)
    sys.exit(0)  # a normal exit: the interpreter ends, its atexit functions run
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("parent", parents.path, os.path.isdir(parents.path), flush=True)
"""
    lines = _run(code, tmp_path)
    [child] = [line[1] for line in lines if line[0] == "child"]
    [(parents, there)] = [(line[1], line[2]) for line in lines if line[0] == "parent"]
    assert there == "True"  # the child's exit left its parent's folder
    assert not Path(child).exists()  # and removed its own
    assert not Path(parents).exists()  # the parent's own exit removed it
    assert list(tmp_path.iterdir()) == []


def test_remove_left_is_registered_once_by_the_first_make(tmp_path: Path) -> None:
    code = """
import atexit, sys
from pmemsim import scratch
counts = [atexit._ncallbacks()]
for kind in ("a", "b", "c"):
    scratch.make(kind, sys.argv[1]).remove()
    counts.append(atexit._ncallbacks())
print(*(n - counts[0] for n in counts))
"""
    assert _run(code, tmp_path) == [["0", "1", "1", "1"]]
