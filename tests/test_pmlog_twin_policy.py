"""When check-log's durability self-check runs in a forked twin (pmemsim.pmlog.twin): only
when the user left the CPUs to check-log (no --jobs), not with PMEMSIM_TWIN=0, and always at
a lower priority than the check it shadows.

A twin is forked only by a process that runs no other thread, and the test process may run
some (Dask's, once a cluster test ran): each case runs in a fresh interpreter, where the
twins it starts are counted, so that it is decided there and can fail in any suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from pmemsim.pmlog import forked

BASE = 0x10000000

#: Every log is long enough for a twin and two CPUs are there; the twins started are
#: counted, and the niceness each one runs at is noted.
SETUP = """
import json, os, sys
from pathlib import Path
from pmemsim.pmlog import forked, twin as twin_module

forked.TWIN_FROM = 1
forked._cpus = lambda: 2
assert forked._alone()
started = []
original = twin_module.Twin.__init__

def counted(self, *args):
    original(self, *args)
    started.append(self.pid)

twin_module.Twin.__init__ = counted
real_replay = twin_module._replay

def noted(*args):  # in the twin
    Path(sys.argv[1], "nice").write_text(str(os.nice(0)))
    return real_replay(*args)

twin_module._replay = noted
sys.path.insert(0, sys.argv[2])
from helpers import check_log_cli

def cli(*args):
    return check_log_cli(sys.argv[1], LOG, *args)[0]
"""


def _log(path: Path) -> str:
    records = ["START", f"REGISTER_FILE;{path / 'pool'};0x{BASE:x};0x1000;0x0"]
    for i in range(8):
        line = BASE + (i % 4) * 64
        records += [f"STORE;0x{line:x};0x{i + 1:x};0x8", f"FLUSH;0x{line:x};0x40", "FENCE"]
    return "|".join([*records, "STOP"])


def _fresh(folder: Path, body: str, **env: str) -> Any:
    """``body`` run after SETUP in a new interpreter; what it printed last, as JSON."""
    script = folder / "case.py"
    script.write_text(SETUP + f"LOG = {_log(folder)!r}\n" + textwrap.dedent(body))
    environ = {k: v for k, v in os.environ.items() if k != forked.TWIN_ENV}
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_jobs_given_keeps_the_self_check_in_process(tmp_path: Path) -> None:
    got = _fresh(
        tmp_path,
        """
        codes = [cli()]
        left = len(started)  # left to check-log: the self-check on the free CPU
        codes += [cli("--jobs", "1"), cli("--jobs", "2")]
        print(json.dumps([codes, left, len(started)]))
        """,
    )
    assert got == [[0, 0, 0], 1, 1]  # --jobs 1 (or N) given: one CPU per job, none more


def test_pmemsim_twin_0_keeps_the_self_check_in_process(tmp_path: Path) -> None:
    got = _fresh(tmp_path, "print(json.dumps([cli(), len(started)]))", PMEMSIM_TWIN="0")
    assert got == [0, 0]
    assert _fresh(tmp_path, "print(json.dumps([cli(), len(started)]))") == [0, 1]


def test_check_log_twin_false_keeps_the_self_check_in_process(tmp_path: Path) -> None:
    got = _fresh(
        tmp_path,
        """
        from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log
        replay = Replay.of(parse_log(LOG))
        ok = FunctionChecker(lambda image: True, "ok")
        bad = [check_log(replay, ok, twin=False).inconsistent]
        off = len(started)
        bad.append(check_log(replay, ok).inconsistent)
        print(json.dumps([bad, off, len(started)]))
        """,
    )
    assert got == [[0, 0], 0, 1]


def test_the_twin_runs_at_a_lower_priority(tmp_path: Path) -> None:
    got = _fresh(tmp_path, "print(json.dumps([cli(), len(started), os.nice(0)]))")
    assert got[:2] == [0, 1]
    assert int((tmp_path / "nice").read_text()) == min(got[2] + forked.TWIN_NICE, 19)
