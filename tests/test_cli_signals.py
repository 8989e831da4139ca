"""Ctrl-C and SIGTERM during `pmemsim check`: the run stops promptly and leaves nothing behind
(no worker process, nothing a recovery started in one, no temporary folder, no traceback),
with --jobs 2 and FileCrashChecks."""

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
import subprocess
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


THIS = os.getpid()  # the check's own process: a worker is a copy with another pid


def pool_recover_forking(v):
    # In a worker, once: a child that would sleep for a minute.
    if os.getpid() != THIS and not hasattr(pool_recover_forking, "child"):
        pool_recover_forking.child = subprocess.Popen(["sleep", "60"])
        Path(os.environ["PMEMSIM_TEST_SPAWNED"], str(pool_recover_forking.child.pid)).touch()
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
forking = CrashCheck("forking", pool_workload, pool_recover_forking, strategy="exhaustive")
"""


def _parents() -> dict[int, int]:
    """Every live process (not a zombie) and its parent."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                out[int(entry)] = int(fields[1])
    return out


def _descendants(pid: int) -> set[int]:
    """The live processes ``pid`` started, and theirs."""
    parents = _parents()
    found = {pid}
    grew = True
    while grew:
        more = {p for p, pp in parents.items() if pp in found} - found
        grew = bool(more)
        found |= more
    return found - {pid}


def _alive(pids: set[int]) -> set[int]:
    return pids & set(_parents())


@pytest.mark.parametrize(
    "check, jobs, sig, to_group",
    [
        ("files", 2, signal.SIGINT, True),  # Ctrl-C at a terminal: the whole group
        ("files", 2, signal.SIGINT, False),  # kill -INT: the parent alone
        ("files", 2, signal.SIGTERM, False),
        ("files", 1, signal.SIGTERM, False),
        ("pool", 2, signal.SIGTERM, False),
        ("forking", 2, signal.SIGTERM, False),
        ("forking", 3, signal.SIGINT, True),
    ],
)
def test_a_signal_stops_the_run_and_leaves_nothing(
    tmp_path: Path, check: str, jobs: int, sig: signal.Signals, to_group: bool
) -> None:
    (tmp_path / "c.py").write_text(SLOW)
    temp = tmp_path / "tmp"
    temp.mkdir()
    mark = tmp_path / "recovery-started"
    spawned = tmp_path / "spawned"
    spawned.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(temp),
        "PMEMSIM_TEST_MARK": str(mark),
        "PMEMSIM_TEST_SPAWNED": str(spawned),
    }
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
            while not _descendants(proc.pid) or (check == "forking" and not any(spawned.iterdir())):
                assert time.monotonic() < deadline, "no workers started"
                time.sleep(0.01)
        started = _descendants(proc.pid) | {int(p.name) for p in spawned.iterdir()}
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
    started |= {int(p.name) for p in spawned.iterdir()}
    deadline = time.monotonic() + 5
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(started), "worker processes (or what their recovery started) left running"
    assert list(temp.iterdir()) == [], "temporary folders left behind"
