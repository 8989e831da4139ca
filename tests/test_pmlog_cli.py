"""check-log as a command: bad input exits 2 with a message (never a traceback), Ctrl-C and
SIGTERM stop it at once and leave nothing behind, large registrations cost what they touch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data" / "pmlog"
BASE = 0x10000000
GOOD = (
    f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x1000;0x0|"
    f"STORE;0x{BASE:x};0x1;0x8|STORE;0x{BASE + 64:x};0x1;0x8|FLUSH;0x{BASE:x};0x80|FENCE|STOP\n"
)


def pmemsim(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pmemsim", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    log = tmp_path / "good.log"
    log.write_text(GOOD)
    return log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checker-py", "broken.py:check"], "importing it failed: SyntaxError"),
        (["--checker-py", "exits.py:check"], "importing it failed: SystemExit"),
        (
            ["--checker-py", "nomodule_pmemsim_test:check"],
            "importing it failed: ModuleNotFoundError",
        ),
        (["--checker-lib", "/nonexistent-pmemsim-test/lib.so:check"], "cannot load the checker"),
        (["--replay", "1:0.zz=1", "--", "true"], "not a crash token"),
        (["--json", "/nonexistent-pmemsim-test/out.json", "--", "true"], "--json"),
        (["--html", "/nonexistent-pmemsim-test/out.html", "--", "true"], "--html"),
        (
            ["--replay", "0:", "--image-out", "/nonexistent-pmemsim-test/img", "--", "true"],
            "--image-out",
        ),
        (["--jobs", "0", "--", "true"], "--jobs"),
        (["--jobs", "99999999999999999999999", "--", "true"], "is more than 256"),
        (["--timeout", "nan", "--", "true"], "--timeout"),
        (["--base-image", "/nonexistent-pmemsim-test/base", "--", "true"], "no such file"),
        (["--base-image", "other=/dev/null", "--", "true"], "registers no file other"),
        (["--all-files", "--checker-lib", "x.so:f"], "--all-files"),
    ],
)
def test_the_users_mistakes_exit_2_with_a_message(
    good: Path, args: list[str], message: str
) -> None:
    (good.parent / "broken.py").write_text("def check(:\n")
    (good.parent / "exits.py").write_text("import sys\nsys.exit(3)\n")
    done = pmemsim("check-log", str(good), *args, cwd=good.parent)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_bad_json_path_is_refused_before_any_work(good: Path) -> None:
    started = time.monotonic()
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    done = pmemsim("check-log", str(good), "--json", str(good.parent), "--", *slow, cwd=good.parent)
    assert done.returncode == 2 and "is a folder" in done.stderr
    assert time.monotonic() - started < 20  # no checker ran


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2"])
def test_a_compressed_log_is_named_as_such(tmp_path: Path, kind: str) -> None:
    # Its bytes were reported as a record with no START, in escaped binary.
    import bz2
    import gzip
    import lzma

    compress = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress}[kind]
    log = tmp_path / "store.log.z"
    log.write_bytes(compress(GOOD.encode()))
    done = pmemsim("check-log", str(log), "--", "true", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"is {kind}-compressed" in done.stderr and "no START" not in done.stderr


def test_a_log_from_a_pipe_is_refused_with_why(tmp_path: Path) -> None:
    # "-" and /dev/fd/N were "no such log file"; a log is read more than once.
    done = subprocess.run(
        [sys.executable, "-m", "pmemsim", "check-log", "-", "--", "true"],
        input=GOOD,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "-: not a regular file" in done.stderr and "save it to a file" in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_as_registered_file_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "pool.fifo"
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    log = tmp_path / "dev.log"
    log.write_text(GOOD.replace("/nonexistent-pmemsim-test/p", str(path)))
    done = pmemsim("check-log", str(log), "--", "true", cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert f"is a {'FIFO' if kind == 'fifo' else 'device'}" in done.stderr
    assert "--base-image" in done.stderr


def test_sizes_past_2_63_name_the_record(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text(f"START|REGISTER_FILE;/p;0x{BASE:x};0x8000000000000000;0x0|STOP\n")
    done = pmemsim("check-log", str(log), "--", "true", cwd=tmp_path)
    assert done.returncode == 2
    assert "record #1" in done.stderr and "too large" in done.stderr


def test_a_terabyte_registration_costs_the_pages_it_touches(tmp_path: Path) -> None:
    pool = tmp_path / "small.bin"
    pool.write_bytes(os.urandom(8192))
    log = tmp_path / "tib.log"
    log.write_text(
        f"START|REGISTER_FILE;{pool};0x{BASE:x};0x10000000000;0x0|STORE;0x{BASE + 8:x};0x1;0x8|"
        f"STORE;0x{BASE + (1 << 39):x};0x2;0x8|FLUSH;0x{BASE:x};0x40|FENCE|STOP\n"
    )
    (tmp_path / "chk.py").write_text(
        "def check(img):\n"
        "    assert len(img) == 1 << 40\n"
        f"    assert bytes(img[16:8192]) == {pool.read_bytes()[16:8192]!r}\n"
        "    return True\n"
    )
    probe = (
        "import sys\n"
        "from pmemsim.cli import main\n"
        f"code = main(['check-log', {str(log)!r}, '--checker-py', 'chk.py:check'])\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (big) pytest process
        # that started this one.
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
        "print('RSS', hwm[0].split()[1])\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rss_kib = int(done.stdout.rsplit("RSS", 1)[1])
    assert rss_kib < 200_000  # a terabyte pool, a few touched pages


# -- stopping ------------------------------------------------------------------------------


def _wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("jobs", ["1", "2"])  # with 1, the signal came while the only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # checker had left the queue
def test_ctrl_c_and_sigterm_stop_at_once_and_leave_nothing(
    tmp_path: Path, good: Path, sig: int, jobs: str
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    pids = tmp_path / "pids.txt"
    checker = tmp_path / "slow.sh"
    checker.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 60\n")
    checker.chmod(0o755)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pmemsim",
            "check-log",
            str(good),
            "--jobs",
            jobs,
            "--",
            str(checker),
        ],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(pids)
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert took < 5  # within a second on a quiet machine; this one is shared
    assert "Traceback" not in err
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), "a checker program outlived check-log"
    assert list(scratch.iterdir()) == []  # no image file left


def test_sigterm_ends_library_workers_too(tmp_path: Path) -> None:
    import shutil

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    lib = tmp_path / "libslow.so"
    src = tmp_path / "slow.c"
    src.write_text("#include <unistd.h>\nint check(const char *p) { sleep(60); return 1; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    log = tmp_path / "good.log"
    log.write_text(GOOD)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmemsim", "check-log", str(log), "--checker-lib", f"{lib}:check"],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(scratch.iterdir()):  # the image files: the worker is at work
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert children and not any(_alive(int(p)) for p in children)
    assert list(scratch.iterdir()) == []
