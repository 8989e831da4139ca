"""A child forked by :func:`pmemsim.pmlog.forked.fork` (check-log's workers, twin,
speculative check) ends with ``os._exit``, which runs no atexit: it removes the scratch
folders it made and left itself (a Python checker calling pmemsim code), never its
parent's, and imports :mod:`pmemsim.scratch` for it only when it is imported already.
Each test is a Python process of its own (no test runner's threads to fork)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Generous, for a loaded 2-core machine.
PATIENCE = 60.0


def _run(code: str, root: Path) -> list[str]:
    """Run ``code`` (``root`` its argument) in a new interpreter: its output, split."""
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    ("end", "code"), [("pass", "0"), ("raise ValueError", "70")], ids=["returns", "raises"]
)
def test_a_forked_child_removes_the_folders_it_left_not_its_parents(
    tmp_path: Path, end: str, code: str
) -> None:
    program = f"""
import os, sys
from pmemsim import scratch
from pmemsim.pmlog.forked import fork

root = sys.argv[1]
parents = scratch.make("parent", root)
r, w = os.pipe()

def run():
    made = scratch.make("child", root)  # and left listed
    os.write(w, made.path.encode())
    {end}

pid = fork(run)
os.close(w)
child = os.read(r, 4096).decode()
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), child, os.path.isdir(child), os.path.isdir(parents.path))
parents.remove()
"""
    status, child, childs_there, parents_there = _run(program, tmp_path)
    assert status == code
    assert Path(child).parent == tmp_path
    assert (childs_there, parents_there) == ("False", "True")
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_does_not_import_scratch_to_remove_nothing(tmp_path: Path) -> None:
    program = """
import os, sys
from pmemsim.pmlog.forked import fork

assert "pmemsim.scratch" not in sys.modules
r, w = os.pipe()

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "pmemsim.scratch":
            os.write(w, b"imported")
        return None

def run():
    sys.meta_path.insert(0, Watch())

pid = fork(run)
os.close(w)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), os.read(r, 100).decode() or "nothing")
"""
    assert _run(program, tmp_path) == ["0", "nothing"]
