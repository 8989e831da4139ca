"""Scratch folders (pmemsim.scratch): a folder whose run died is removed by a later run; a
folder whose run (or a worker forked from it) lives, a folder that is not pmemsim's, another
user's, a symbolic link and anything outside the root are left alone; runs reclaiming at once
do no harm. The first tests kill a real ``pmemsim check-log`` mid-check."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pmemsim import scratch
from pmemsim.scratch import LOCK, MOST

LOG = (
    "START|REGISTER_FILE;{pool};0x10000;0x1000;0x0|STORE;0x10000;0x1;0x8|"
    "FLUSH;0x10000;0x40|FENCE|STOP\n"
)
#: Generous, for a loaded 2-core machine; a passing run waits for much less.
PATIENCE = 60.0


@pytest.fixture(autouse=True)
def _fresh_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test is a "run" of its own: no root looked at yet.
    monkeypatch.setattr(scratch, "_looked", set())
    monkeypatch.setattr(scratch, "_left", set())


def _check_log(tmp_path: Path, root: Path, *checker: str, jobs: int = 1) -> subprocess.Popen[str]:
    (tmp_path / "t.log").write_text(LOG.format(pool=tmp_path / "pool"))
    return subprocess.Popen(
        [sys.executable, "-m", "pmemsim", "check-log", "t.log", "--jobs", str(jobs), *checker],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finished(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=PATIENCE)
    return proc.returncode, out + err


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[Any] | None) -> None:
    deadline = time.monotonic() + PATIENCE
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the run ended first: {proc.communicate()}")
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "scratch-root"
    r.mkdir()
    yield r


#: A checker program that says it started (its pid) and waits for the file GO.
def _waiting_program(tmp_path: Path) -> list[str]:
    started, go = tmp_path / "started", tmp_path / "go"
    script = f'echo $$ >> "{started}"; while [ ! -e "{go}" ]; do sleep 0.02; done'
    return ["--", "sh", "-c", script]


def test_the_folder_of_a_killed_check_log_is_removed_by_the_next_run(
    tmp_path: Path, root: Path
) -> None:
    killed = _check_log(tmp_path, root, *_waiting_program(tmp_path))
    try:
        _wait_for("the checker started", (tmp_path / "started").exists, killed)
        killed.kill()  # SIGKILL: no clean-up of any kind
        killed.wait(timeout=PATIENCE)
    finally:
        (tmp_path / "go").touch()  # the checker programs end on their own
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
    (left,) = root.iterdir()
    assert left.name.startswith("pmemsim-check-log-")
    status, text = _finished(_check_log(tmp_path, root, "--", "true"))
    assert status == 0, text
    assert list(root.iterdir()) == []


def test_a_live_runs_folder_is_left_alone(tmp_path: Path, root: Path) -> None:
    waiting = _check_log(tmp_path, root, *_waiting_program(tmp_path))
    try:
        _wait_for("the checker started", (tmp_path / "started").exists, waiting)
        (theirs,) = root.iterdir()
        status, text = _finished(_check_log(tmp_path, root, "--", "true"))
        assert status == 0, text
        assert list(root.iterdir()) == [theirs]
        (tmp_path / "go").touch()
        status, text = _finished(waiting)
        assert status == 0, text
    finally:
        (tmp_path / "go").touch()
        if waiting.poll() is None:
            os.killpg(waiting.pid, signal.SIGKILL)
    assert list(root.iterdir()) == []


WAITING_PY = """
import os, time
from pathlib import Path

def check(image):
    with open({started!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    while not Path({go!r}).exists():
        time.sleep(0.02)
    return True
"""


def _holders(lock: Path) -> set[int]:
    """The processes that have ``lock`` open."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock):
                    found.add(int(pid))
            except OSError:
                continue
    return found


def test_workers_of_a_killed_run_keep_its_folder_until_they_end(tmp_path: Path, root: Path) -> None:
    # Worker processes are forked from the run after its folder is made: they share its
    # lock (and use the folder's image files), so the folder outlives a killed parent for
    # as long as a worker does.
    started, go = tmp_path / "started", tmp_path / "go"
    (tmp_path / "wait.py").write_text(WAITING_PY.format(started=str(started), go=str(go)))
    killed = _check_log(tmp_path, root, "--checker-py", "wait.py:check", jobs=2)
    try:
        _wait_for("a worker started", started.exists, killed)
        (folder,) = root.iterdir()
        holders = _holders(folder / LOCK) - {killed.pid}
        assert holders, "no worker holds the folder's lock"
        killed.kill()
        killed.wait(timeout=PATIENCE)
        status, text = _finished(_check_log(tmp_path, root, "--", "true"))
        assert status == 0, text
        assert list(root.iterdir()) == [folder]  # a worker lives: in use
        go.touch()
        _wait_for("the workers ended", lambda: not _holders(folder / LOCK), None)
    finally:
        go.touch()
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
    status, text = _finished(_check_log(tmp_path, root, "--", "true"))
    assert status == 0, text
    assert list(root.iterdir()) == []


# -- the module itself -------------------------------------------------------------------

#: Makes ``n`` folders in ROOT, each with files, a subfolder and a symbolic link out, and
#: dies without removing them (prints their paths).
DIE = """
import os, sys
from pmemsim.scratch import make
root, n, outside = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for _ in range(n):
    f = make("test", root).path
    os.mkdir(os.path.join(f, "sub"))
    with open(os.path.join(f, "sub", "image"), "wb") as out:
        out.truncate(1 << 20)
    os.symlink(outside, os.path.join(f, "sub", "link"))
    os.symlink(outside, os.path.join(f, "link"))
    print(f, flush=True)
os._exit(0)
"""


def _dead(root: Path, n: int, outside: Path) -> list[Path]:
    out = subprocess.run(
        [sys.executable, "-c", DIE, str(root), str(n), str(outside)],
        capture_output=True,
        text=True,
        check=True,
        timeout=PATIENCE,
    ).stdout
    return [Path(line) for line in out.split()]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "precious").write_text("keep me")
    return d


def _sound(outside: Path) -> bool:
    return (outside / "precious").read_text() == "keep me"


def test_dead_folders_go_live_ones_stay_and_links_are_not_followed(
    root: Path, outside: Path
) -> None:
    dead = _dead(root, 2, outside)
    live = scratch.make("test", str(root))  # (which looked at the root first)
    try:
        assert not any(d.exists() for d in dead)
        scratch._looked.clear()  # the next run
        assert scratch.reclaim(str(root)) == 0
        assert not any(d.exists() for d in dead)
        assert sorted(root.iterdir()) == [Path(live.path)]
        assert (Path(live.path) / LOCK).is_file()
        assert _sound(outside)
    finally:
        live.remove()
    assert list(root.iterdir()) == []


def test_what_is_not_a_dead_scratch_folder_is_left_alone(
    tmp_path: Path, root: Path, outside: Path
) -> None:
    # An older pmemsim's folder, or a user's (no lock file).
    (root / "pmemsim-check-log-0123456789ab").mkdir()
    (root / "pmemsim-check-log-0123456789ab" / "image").write_bytes(b"x")
    # A lock file that is a symbolic link to a dead lock file; one that is a FIFO.
    (elsewhere,) = _dead(tmp_path, 1, outside)
    (root / "pmemsim-linked-lock").mkdir()
    (root / "pmemsim-linked-lock" / LOCK).symlink_to(elsewhere / LOCK)
    (root / "pmemsim-fifo-lock").mkdir()
    os.mkfifo(root / "pmemsim-fifo-lock" / LOCK)
    # A symbolic link in the root to a dead folder outside it; a dead folder one level
    # down (not the root's own entry); a dead folder without pmemsim's prefix.
    (root / "pmemsim-link").symlink_to(elsewhere)
    (root / "nested").mkdir()
    (below,) = _dead(root / "nested", 1, outside)
    (tmp_path / "b").mkdir()
    (other,) = _dead(tmp_path / "b", 1, outside)
    os.rename(other, root / "someone-else")
    before = sorted(root.rglob("*"))
    assert scratch.reclaim(str(root)) == 0
    assert sorted(root.rglob("*")) == before
    assert (elsewhere / LOCK).is_file() and below.is_dir() and _sound(outside)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_another_users_dead_folder_is_left_alone(root: Path, outside: Path) -> None:
    (theirs,) = _dead(root, 1, outside)
    for p in [theirs, theirs / LOCK]:
        os.chown(p, 65534, 65534, follow_symlinks=False)
    assert scratch.reclaim(str(root)) == 0
    assert (theirs / LOCK).is_file()


def test_a_run_removes_a_few_folders_and_looks_once(root: Path, outside: Path) -> None:
    dead = _dead(root, MOST + 3, outside)
    assert scratch.reclaim(str(root)) == MOST
    assert scratch.reclaim(str(root)) == 0  # this run looked already
    assert sum(d.exists() for d in dead) == 3
    scratch._looked.clear()  # the next run
    assert scratch.reclaim(str(root)) == 3
    assert list(root.iterdir()) == []


def test_a_forked_child_keeps_the_folder_alive_and_leaves_its_removal_to_the_maker(
    root: Path,
) -> None:
    folder = scratch.make("test", str(root))
    pid = os.fork()
    if pid == 0:  # the child: removing is not its business; its life keeps the lock
        try:
            folder.remove()
            time.sleep(0.3)
        finally:
            os._exit(0 if os.path.isdir(folder.path) else 1)
    try:
        scratch._looked.clear()
        assert scratch._reclaim(str(root), MOST) == 0
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.isdir(folder.path)
    folder.remove()
    assert list(root.iterdir()) == []


def test_runs_reclaiming_and_making_folders_at_once_do_no_harm(root: Path, outside: Path) -> None:
    dead = _dead(root, 24, outside)
    scratch._looked.add(str(root))  # (the new folders' run reclaims nothing itself)
    errors: list[BaseException] = []
    removed: list[int] = []
    stolen: list[str] = []
    begin = threading.Barrier(6)

    def reclaiming() -> None:
        try:
            begin.wait()
            for _ in range(4):
                removed.append(scratch._reclaim(str(root), len(dead)))
        except BaseException as exc:
            errors.append(exc)

    def making() -> None:
        try:
            begin.wait()
            for _ in range(40):
                f = scratch.make("test", str(root))
                (Path(f.path) / "mine").write_bytes(b"x")
                if not (Path(f.path) / "mine").exists() or not (Path(f.path) / LOCK).exists():
                    stolen.append(f.path)
                f.remove()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reclaiming) for _ in range(4)]
    threads += [threading.Thread(target=making) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and stolen == []
    assert sum(removed) == len(dead)  # each dead folder removed once, by one of them
    assert list(root.iterdir()) == [] and _sound(outside)


def test_a_folder_that_vanishes_or_cannot_be_opened_is_skipped(root: Path, outside: Path) -> None:
    (dead,) = _dead(root, 1, outside)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert scratch._take(top, "pmemsim-test-gone") is None
        (root / "pmemsim-file").write_text("not a folder")
        assert scratch._take(top, "pmemsim-file") is None
        assert scratch._take(top, dead.name) is True
        assert scratch._take(top, dead.name) is None  # (already removed by someone)
    finally:
        os.close(top)


FILES_CHECK = """
import os, time
from pathlib import Path
import pmemsim as pm
from pmemsim.explore import FileCrashCheck

def workload(backend, folder):
    src = pm.Source.from_file(folder / "f", pm.SourceFlag.CREATE_IF_NEEDED)
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=backend)) as s:
        v = s.view(s.map(pm.Part(src, 0, 4096)))
        v.u64[0] = 1
        v.persist(0, 64)
    src.close()

def recover(backend, folder):
    Path(os.environ["PMEMSIM_TEST_MARK"]).touch()
    while os.environ.get("PMEMSIM_TEST_WAIT") and not Path(os.environ["PMEMSIM_TEST_GO"]).exists():
        time.sleep(0.02)

files = FileCrashCheck("files", workload, recover)
"""


def test_the_folders_of_a_killed_check_are_removed_by_the_next_run(
    tmp_path: Path, root: Path
) -> None:
    # `pmemsim check` of a FileCrashCheck: the workload's folder and a recovery's folder.
    (tmp_path / "c.py").write_text(FILES_CHECK)
    mark, go = tmp_path / "recovering", tmp_path / "go"
    env = {
        **os.environ,
        "TMPDIR": str(root),
        "PMEMSIM_TEST_MARK": str(mark),
        "PMEMSIM_TEST_GO": str(go),
    }
    command = [sys.executable, "-m", "pmemsim", "check", str(tmp_path / "c.py")]
    killed = subprocess.Popen(
        command,
        env={**env, "PMEMSIM_TEST_WAIT": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for("recovery started", mark.exists, killed)
        killed.kill()
        killed.wait(timeout=PATIENCE)
    finally:
        go.touch()
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
    left = sorted(p.name.rsplit("-", 1)[0] for p in root.iterdir())
    assert left == ["pmemsim-files", "pmemsim-recovery"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(root.iterdir()) == []


def test_without_flock_a_folder_is_made_and_removed_but_not_reclaimable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (An NFS without its lock daemon: flock fails with ENOLCK.)
    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(scratch.fcntl, "flock", no_flock)
    with scratch.make("test", str(root)) as folder:
        assert os.listdir(folder.path) == []  # no lock file: no later run may take it
    assert list(root.iterdir()) == []


def test_a_folder_that_cannot_be_finished_is_not_left(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rename(a: str, b: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(scratch.os, "rename", no_rename)
    with pytest.raises(OSError, match="Input/output"):
        scratch.make("test", str(root))
    assert list(root.iterdir()) == []


class _Stop(BaseException):
    """What the SIGTERM handler of a run raises (the CLI's Terminated, a worker's stop)."""


@pytest.fixture
def sigterm_raises() -> Iterator[Callable[[], None]]:
    """SIGTERM raises _Stop; the fixture's value sends one to this thread (the main one,
    where handlers run), which is pending while this thread blocks it."""

    def handler(signum: int, frame: object) -> None:
        raise _Stop

    old = signal.signal(signal.SIGTERM, handler)
    main = threading.main_thread().ident
    assert main is not None
    try:
        yield lambda: signal.pthread_kill(main, signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_signal_while_a_folder_is_made_leaves_no_folder(
    root: Path, monkeypatch: pytest.MonkeyPatch, sigterm_raises: Callable[[], None]
) -> None:
    # The signal comes once the folder exists: its exception is raised when make is done,
    # and the folder the caller never gets is gone by then.
    made = scratch._make

    def make_then_signal(kind: str, where: str) -> scratch.Scratch:
        folder = made(kind, where)
        sigterm_raises()
        assert os.path.isdir(folder.path)  # (held off until make is done)
        return folder

    monkeypatch.setattr(scratch, "_make", make_then_signal)
    with pytest.raises(_Stop):
        scratch.make("test", str(root))
    assert list(root.iterdir()) == []
    assert scratch._left == set()


def test_a_signal_while_a_folder_is_removed_waits_until_it_is_gone(
    root: Path, monkeypatch: pytest.MonkeyPatch, sigterm_raises: Callable[[], None]
) -> None:
    folder = scratch.make("test", str(root))
    Path(folder.path, "data").write_bytes(b"x")
    clear = scratch._clear

    def signal_then_clear(fd: int, keep: str | None = None) -> None:
        sigterm_raises()
        clear(fd, keep)

    monkeypatch.setattr(scratch, "_clear", signal_then_clear)
    with pytest.raises(_Stop):
        folder.remove()
    assert list(root.iterdir()) == []
    assert scratch._left == set()


def test_remove_left_removes_this_processs_folders_not_removed_yet(root: Path) -> None:
    removed = scratch.make("test", str(root))
    left = scratch.make("test", str(root))
    removed.remove()
    pid = os.fork()
    if pid == 0:  # a forked child: its maker's folder is not its to remove
        try:
            scratch.remove_left()
        finally:
            os._exit(0 if os.path.isdir(left.path) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    scratch.remove_left()
    assert list(root.iterdir()) == []
    assert scratch._left == set()


def test_a_removal_cut_short_is_finished_by_remove_left(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signal's exception can land in the removal where another thread let the signal in
    # (its handler runs in the main thread whatever this thread blocks).
    folder = scratch.make("test", str(root))
    Path(folder.path, "data").write_bytes(b"x")
    clear = scratch._clear

    def interrupted(fd: int, keep: str | None = None) -> None:
        monkeypatch.setattr(scratch, "_clear", clear)
        raise KeyboardInterrupt

    monkeypatch.setattr(scratch, "_clear", interrupted)
    with pytest.raises(KeyboardInterrupt):
        folder.remove()
    assert os.path.isdir(folder.path)
    scratch.remove_left()
    assert list(root.iterdir()) == []


def test_sweep_removes_the_folder_of_a_killed_child(root: Path, tmp_path: Path) -> None:
    assert scratch.reclaim(str(root)) == 0  # (this process looked at the root)
    made = tmp_path / "made"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: makes a folder and waits to be killed
        try:
            folder = scratch.make("test", str(root))
            (tmp_path / "making").write_text(folder.path)
            os.rename(tmp_path / "making", made)  # (whole when it is there)
            time.sleep(PATIENCE)
        finally:
            os._exit(1)
    try:
        _wait_for("the child made its folder", made.exists, None)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert os.path.isdir(made.read_text())
    assert scratch.sweep() == 1
    assert list(root.iterdir()) == []
