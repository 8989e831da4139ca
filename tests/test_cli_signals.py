"""Ctrl-C and SIGTERM during `pmemsim check`: the run stops promptly and leaves nothing behind
(no worker process, no temporary folder, no traceback), with --jobs 2 and FileCrashChecks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLOW = """
import os
import time
from pathlib import Path

import pmemsim as pm
from pmemsim.explore import CrashCheck, FileCrashCheck


def started():
    Path(os.environ["PMEMSIM_TEST_MARK"]).touch()
    time.sleep(0.05)


def pool_workload(v):
    for i in range(15):
        v.u64[8 * i] = i + 1
    v.persist(0, 64 * 15)


def pool_recover(v):
    started()


def files_workload(backend, folder):
    src = pm.Source.from_file(folder / "f", pm.SourceFlag.CREATE_IF_NEEDED)
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=backend)) as s:
        v = s.view(s.map(pm.Part(src, 0, 4096)))
        for i in range(15):
            v.u64[8 * i] = i + 1
        v.persist(0, 4096)
    src.close()


def files_recover(backend, folder):
    started()


# Exhaustive: 32,768 slow runs (lazily, a recovery that reads nothing is one run per point),
# past the 5,000 images from which --jobs 2 starts workers.
pool = CrashCheck("pool", pool_workload, pool_recover, strategy="exhaustive")
files = FileCrashCheck("files", files_workload, files_recover, strategy="exhaustive")
"""


def _group(pgid: int) -> list[int]:
    """Processes still alive in the process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


@pytest.mark.parametrize(
    "check, jobs, sig, to_group",
    [
        ("files", 2, signal.SIGINT, True),  # Ctrl-C at a terminal: the whole group
        ("files", 2, signal.SIGINT, False),  # kill -INT: the parent alone
        ("files", 2, signal.SIGTERM, False),
        ("files", 1, signal.SIGTERM, False),
        ("pool", 2, signal.SIGTERM, False),
    ],
)
def test_a_signal_stops_the_run_and_leaves_nothing(
    tmp_path: Path, check: str, jobs: int, sig: signal.Signals, to_group: bool
) -> None:
    (tmp_path / "c.py").write_text(SLOW)
    temp = tmp_path / "tmp"
    temp.mkdir()
    mark = tmp_path / "recovery-started"
    env = {**os.environ, "TMPDIR": str(temp), "PMEMSIM_TEST_MARK": str(mark)}
    command = ["check", str(tmp_path / "c.py"), "-k", check, "--jobs", str(jobs)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmemsim", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not mark.exists():  # recovery is under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "recovery never started"
            time.sleep(0.01)
        if jobs > 1:  # the workers are running recovery, not the parent alone
            while len(_group(proc.pid)) < 1 + jobs:
                assert time.monotonic() < deadline, "no workers started"
                time.sleep(0.01)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)  # generous: a loaded CI machine
        print(f"stopped {time.monotonic() - sent:.3f} s after the signal", end=" ")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, out + err
    assert "Traceback" not in err and err.strip().endswith(
        "terminated" if sig == signal.SIGTERM else "interrupted"
    )
    deadline = time.monotonic() + 5
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group(proc.pid) == [], "worker processes left running"
    assert list(temp.iterdir()) == [], "temporary folders left behind"
