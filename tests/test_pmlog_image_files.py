"""check-log's image files where the file system cannot hold a pool's size.

A log may register a file of terabytes; checker programs and libraries get each image as a
sparse file of that size. Where the scratch folder's file system refuses such a file (ext4
stops at 16 TiB), check-log said so with tracebacks from its workers, blaming the checker
("the checker crashed: exit status 70"). It now tries the size first and stops with one
clear error (exit 2) before any work. RLIMIT_FSIZE stands in for the file system's limit
here (Python ignores SIGXFSZ, so a file past it fails with EFBIG, as on a full-size ext4).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LIMIT = 1 << 20


def _log(folder: Path, size: int) -> Path:
    log = folder / "big.log"
    log.write_text(
        f"START|REGISTER_FILE;{folder / 'pool'};0x10000;0x{size:x};0x0|STORE;0x10000;0x1;0x8|"
        "FLUSH;0x10000;0x40|FENCE|STOP\n"
    )
    return log


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _run(folder: Path, *args: str, limit: bool = True) -> subprocess.CompletedProcess[str]:
    """check-log in ``folder``, its scratch files there, under the file-size limit."""
    scratch = folder / "scratch"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pmemsim", "check-log", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env={**os.environ, "TMPDIR": str(scratch)},
        preexec_fn=_limited if limit else None,
        check=False,
    )


def _library(folder: Path) -> str:
    (folder / "ok.c").write_text("int check(const char *path) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", "libok.so", "ok.c"], cwd=folder, check=True)
    return str(folder / "libok.so:check")


CHECKERS = {
    "program": ["--", "true"],
    "programs at once": ["--jobs", "2", "--", "true"],
    "library": ["--checker-lib", "LIB"],
    "replay of one crash": ["--replay", "0:", "--", "true"],
}


@pytest.mark.parametrize("checker", list(CHECKERS))
def test_a_pool_larger_than_a_file_can_be_is_a_clear_error(tmp_path: Path, checker: str) -> None:
    args = list(CHECKERS[checker])
    if "LIB" in args:
        if shutil.which("gcc") is None:
            pytest.skip("gcc is needed to build the library")
        args[args.index("LIB")] = _library(tmp_path)
    log = _log(tmp_path, 16 * LIMIT)
    done = _run(tmp_path, str(log), *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("pmemsim:") == 1
    assert "PMEMSET_E_CANNOT_CREATE_TEMP_FILE" in done.stderr
    assert f"cannot make a {16 * LIMIT}-byte image file in {tmp_path / 'scratch'}" in done.stderr
    assert "TMPDIR" in done.stderr
    assert list((tmp_path / "scratch").iterdir()) == []  # nothing left behind
    assert not (tmp_path / "pool").exists()  # the registered file is never made


def test_the_same_limit_leaves_a_pool_that_fits_and_a_python_checker_alone(
    tmp_path: Path,
) -> None:
    # Under the same limit: a pool that fits is checked; a Python checker writes no files.
    (tmp_path / "ok.py").write_text("def check(image):\n    return True\n")
    small = _run(tmp_path, str(_log(tmp_path, LIMIT // 2)), "--", "true")
    assert small.returncode == 0, small.stderr
    big = _run(tmp_path, str(_log(tmp_path, 16 * LIMIT)), "--checker-py", "ok.py:check")
    assert big.returncode == 0, big.stderr
    assert "CONSISTENT" in big.stdout


def test_image_out_of_a_huge_pool_is_sparse_and_what_a_checker_program_reads(
    tmp_path: Path,
) -> None:
    # --image-out wrote every byte of the pool: 4 GB in 10 s of a 64 GiB pool's zeros. It
    # now writes what the checkers' image files hold: the base content and the pages the
    # crash changes, the rest a hole. A checker program's copy of the same image is the
    # reference, byte for byte, on a pool small enough to read.
    base = tmp_path / "pool"
    base.write_bytes(bytes(range(256)) * 32)  # 8 KiB of base content in a 64 KiB pool
    small = tmp_path / "small.log"
    small.write_text(
        f"START|REGISTER_FILE;{base};0x10000;0x10000;0x0|STORE;0x10008;0x1122334455667788;0x8|"
        "STORE;0x13000;0x99;0x8|FLUSH;0x10000;0x40|FENCE|STOP\n"
    )
    keep = tmp_path / "keep.sh"
    keep.write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/seen.bin\nexit 1\n')
    keep.chmod(0o755)
    report = tmp_path / "r.json"

    def check_log(*args: str) -> None:
        done = _run(tmp_path, str(small), *args, limit=False)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr

    check_log("--json", str(report), "--", "false")
    token = json.loads(report.read_text())["minimal"]["token"]
    check_log("--replay", token, "--", str(keep))
    check_log("--replay", token, "--image-out", str(tmp_path / "out.bin"), "--", "true")
    seen = (tmp_path / "seen.bin").read_bytes()
    assert (tmp_path / "out.bin").read_bytes() == seen and len(seen) == 0x10000
    content = bytes(range(256)) * 32
    assert seen[0x1000:0x2000] == content[0x1000:0x2000]  # base content, no store there
    assert seen[0x2000:0x3000] == bytes(0x1000) and seen[0x4000:] == bytes(0xC000)
    assert base.read_bytes() == content  # the registered file is untouched

    huge = tmp_path / "huge.log"
    huge.write_text(
        f"START|REGISTER_FILE;{tmp_path / 'none'};0x10000;0x1000000000;0x0|"
        "STORE;0x10000;0x1;0x8|FLUSH;0x10000;0x40|FENCE|STOP\n"
    )
    (tmp_path / "ok.py").write_text("def check(image):\n    return True\n")
    out = tmp_path / "huge.bin"
    argv = [str(huge), "--replay", "1:", "--image-out", str(out)]
    done = _run(tmp_path, *argv, "--checker-py", f"{tmp_path / 'ok.py'}:check", limit=False)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size == 1 << 36
    assert out.stat().st_blocks * 512 <= 1 << 20  # a hole, not 64 GiB of zeros
    with out.open("rb") as f:
        assert f.read(8) == (1).to_bytes(8, "little")


def test_image_out_past_the_file_size_limit_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("def check(image):\n    return True\n")
    log = _log(tmp_path, 16 * LIMIT)
    done = _run(
        tmp_path,
        str(log),
        "--replay",
        "0:",
        "--image-out",
        str(tmp_path / "out.bin"),
        "--checker-py",
        "ok.py:check",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot write the image to {tmp_path / 'out.bin'}: File too large" in done.stderr


def _sparse_base(folder: Path) -> tuple[Path, dict[int, bytes]]:
    """A 64 MiB registered file holding three runs of data, the rest holes."""
    base = folder / "sparse-pool"
    data = {0x100000: b"\x5a" * 4096, 0x2800000: os.urandom(8192), 0x3FFF000: b"\xa5" * 4096}
    with base.open("wb") as f:
        f.truncate(64 << 20)
        for at, chunk in data.items():
            f.seek(at)
            f.write(chunk)
    return base, data


@pytest.mark.parametrize("checker", ["program", "library", "image-out"])
def test_a_sparse_base_image_costs_its_data_not_its_size(tmp_path: Path, checker: str) -> None:
    # The image files were filled with a plain copy of the base image: a 64 MiB sparse pool
    # cost 64 MiB of disk and ~20 ms per file (a terabyte pool, hours). Its holes now stay
    # holes, and its data is where it was.
    base, data = _sparse_base(tmp_path)
    log = tmp_path / "sparse.log"
    log.write_text(
        f"START|REGISTER_FILE;{base};0x10000000;0x4000000;0x0|STORE;0x10000000;0x1;0x8|"
        "FLUSH;0x10000000;0x40|FENCE|STOP\n"
    )
    expect = {hex(at): len(chunk) for at, chunk in data.items()}
    (tmp_path / "expect.json").write_text(json.dumps(expect))
    (tmp_path / "base.bin").write_bytes(b"".join(data.values()))
    judge = tmp_path / "judge.py"
    judge.write_text(
        "import json, os, sys\n"
        f"expect = json.load(open({str(tmp_path / 'expect.json')!r}))\n"
        f"want = open({str(tmp_path / 'base.bin')!r}, 'rb').read()\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    got = b''\n"
        "    for at, n in expect.items():\n"
        "        f.seek(int(at, 16))\n"
        "        got += f.read(n)\n"
        "    blocks = os.fstat(f.fileno()).st_blocks * 512\n"
        "sys.exit(0 if got == want and blocks <= 1 << 20 else 1)\n"
    )
    if checker == "program":
        args = ["--", sys.executable, str(judge)]
    elif checker == "library":
        if shutil.which("gcc") is None:
            pytest.skip("gcc is needed to build the library")
        (tmp_path / "sparse.c").write_text(
            "#include <stdlib.h>\n#include <stdio.h>\n"
            "int check(const char *path) {\n"
            f'  char cmd[4096]; snprintf(cmd, sizeof cmd, "{sys.executable} {judge} %s", path);\n'
            "  return system(cmd) == 0;\n}\n"
        )
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", "libsparse.so", "sparse.c"], cwd=tmp_path, check=True
        )
        args = ["--checker-lib", f"{tmp_path / 'libsparse.so'}:check"]
    else:
        (tmp_path / "ok.py").write_text("def check(image):\n    return True\n")
        out = tmp_path / "out.bin"
        args = ["--replay", "1:", "--image-out", str(out), "--checker-py", "ok.py:check"]
    done = _run(tmp_path, str(log), *args, limit=False)
    assert done.returncode == 0, done.stdout + done.stderr
    if checker == "image-out":
        done = subprocess.run(
            [sys.executable, str(judge), str(out)], capture_output=True, check=False
        )
        assert done.returncode == 0
    else:
        assert "CONSISTENT" in done.stdout


def test_an_image_written_over_its_own_base_file_is_that_image(tmp_path: Path) -> None:
    # The image file was truncated before the base content was read from it: an image
    # written over the registered pool (its base image) came out all zeros.
    from pmemsim.pmlog import FunctionChecker, Replay, parse_log, replay_crash

    pool = tmp_path / "pool"
    content = bytes(range(256)) * 16
    pool.write_bytes(content)
    log = (
        f"START|REGISTER_FILE;{pool};0x10000;0x1000;0x0|STORE;0x10008;0x1122334455667788;0x8|"
        "FLUSH;0x10000;0x40|FENCE|STOP"
    )
    replay = Replay.of(parse_log(log))
    ok = FunctionChecker(lambda image: True, "ok")
    failure, _ = replay_crash(replay, ok, "1:", image_out=str(pool))
    assert failure is None
    want = content[:8] + (0x1122334455667788).to_bytes(8, "little") + content[16:]
    assert pool.read_bytes() == want
    assert [p.name for p in tmp_path.iterdir()] == ["pool"]  # no temporary file left
