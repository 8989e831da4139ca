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


def _check(file: Path, check: str, jobs: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """``pmemsim check FILE -k CHECK --jobs JOBS`` started in a session of its own."""
    command = ["check", str(file), "-k", check, "--jobs", str(jobs)]
    return subprocess.Popen(
        [sys.executable, "-m", "pmemsim", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


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
    proc = _check(tmp_path / "c.py", check, jobs, env)
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


# A signal at the worst moments for a recovery folder, made as wide as the test wants, in the
# parent or in a worker, instead of windows of a fraction of a millisecond a signal hits one run
# in thousands: right after os.mkdir made it ("mkdir": signals are blocked there, the hold ends
# when SIGTERM or SIGINT is pending) and in recovery's finally before its removal ("reset":
# not blocked, the signal's handler raises out of the hold). Once per process.
HOLD = """
import signal

import pmemsim.explore.files

_held = []


def _hold(at):
    inside = {"parent": os.getpid() == THIS, "worker": os.getpid() != THIS}.get(
        os.environ["PMEMSIM_TEST_HOLD"], False
    )
    if inside and not _held and os.environ["PMEMSIM_TEST_HOLD_AT"] == at:
        _held.append(at)
        Path(os.environ["PMEMSIM_TEST_HELD"]).touch()
        while not {signal.SIGTERM, signal.SIGINT} & signal.sigpending():
            time.sleep(0.01)


_mkdir = os.mkdir


def _holding_mkdir(path, *args, **kwargs):
    _mkdir(path, *args, **kwargs)
    if os.path.basename(path).startswith("pmemsim-recovery-"):
        _hold("mkdir")


os.mkdir = _holding_mkdir
_reset = pmemsim.explore.files.reset_crash


def _holding_reset(token):
    _reset(token)
    _hold("reset")


pmemsim.explore.files.reset_crash = _holding_reset
"""

# A recovery in a worker that no SIGTERM stops (ignored, as by a process stuck where no
# handler runs): the worker is SIGKILLed by the stopping run, its recovery folder still there.
STUCK = """
def stuck_recover(backend, folder):
    if os.getpid() != THIS:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(os.environ["PMEMSIM_TEST_HELD"]).touch()
        time.sleep(60)
    started()


stuck = FileCrashCheck("stuck", files_workload, stuck_recover, strategy="exhaustive")
"""


def _stop_when_held(
    tmp_path: Path, check: str, jobs: int, hold: str, at: str, sig: signal.Signals
) -> tuple[subprocess.Popen[str], str, str, Path]:
    """Run ``check`` with ``jobs``, send ``sig`` to the parent alone once the held mark is
    there; the process, its output and the temporary folder."""
    (tmp_path / "c.py").write_text(SLOW + HOLD + STUCK)
    temp = tmp_path / "tmp"
    temp.mkdir()
    held = tmp_path / "held"
    env = {
        **os.environ,
        "TMPDIR": str(temp),
        "PMEMSIM_TEST_MARK": str(tmp_path / "recovery-started"),
        "PMEMSIM_TEST_SPAWNED": str(tmp_path),
        "PMEMSIM_TEST_HOLD": hold,
        "PMEMSIM_TEST_HOLD_AT": at,
        "PMEMSIM_TEST_HELD": str(held),
    }
    proc = _check(tmp_path / "c.py", check, jobs, env)
    try:
        deadline = time.monotonic() + 120
        while not held.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no recovery folder was made"
            time.sleep(0.01)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, out, err, temp


@pytest.mark.parametrize(
    "jobs, hold, at, sig",
    [
        (1, "parent", "mkdir", signal.SIGTERM),
        (1, "parent", "mkdir", signal.SIGINT),
        (2, "worker", "mkdir", signal.SIGTERM),
        (1, "parent", "reset", signal.SIGTERM),
        (2, "worker", "reset", signal.SIGTERM),
    ],
)
def test_a_signal_at_the_worst_moment_for_a_recovery_folder_leaves_no_folder(
    tmp_path: Path, jobs: int, hold: str, at: str, sig: signal.Signals
) -> None:
    proc, out, err, temp = _stop_when_held(tmp_path, "files", jobs, hold, at, sig)
    assert proc.returncode == 128 + sig, out + err
    assert "Traceback" not in err
    assert list(temp.iterdir()) == [], "temporary folders left behind"


def test_a_worker_killed_in_its_recovery_leaves_no_folder(tmp_path: Path) -> None:
    # SIGTERM cannot stop it: SIGKILL does, after the stopping run's wait; its folder is
    # dead (no process holds its lock) and the run removes it on the way out.
    proc, out, err, temp = _stop_when_held(tmp_path, "stuck", 2, "none", "", signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "Traceback" not in err
    assert list(temp.iterdir()) == [], "temporary folders left behind"
