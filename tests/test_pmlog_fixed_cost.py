"""What a tiny log's check skips or does once, and that the result is the same for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pmemsim.pmlog import Replay, parse_log

BASE = 0x10000000


def _log(path: str) -> str:
    return (
        f"START|REGISTER_FILE;{path};0x{BASE:x};0x1000;0x0|STORE;0x{BASE:x};0x1;0x8|"
        f"FLUSH;0x{BASE:x};0x40|FENCE|STOP"
    )


def test_a_registered_file_is_resolved_unless_its_folder_has_no_entry_of_its_name(
    tmp_path: Path,
) -> None:
    # Replay.of leaves a missing file's path unresolved; wherever it cannot tell that the
    # real path names nothing either, it resolves it, and a file there is the base image.
    real = tmp_path / "real"
    real.mkdir()
    pool = real / "pool.bin"
    pool.write_bytes(b"\x07" * 4096)
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "dangling.bin").symlink_to(real / "gone.bin")
    cases = {
        str(tmp_path / "link" / "pool.bin"): str(pool),  # through a symlinked folder
        str(tmp_path / "missing" / ".." / "real" / "pool.bin"): str(pool),  # (os.path.realpath)
        str(tmp_path / "link" / ".." / "real" / "pool.bin"): str(pool),
        str(tmp_path / "link" / "none.bin"): None,
        str(tmp_path / "dangling.bin"): None,
        str(real / "."): None,  # a folder: refused, as ever
    }
    for registered, source in cases.items():
        if source is None and os.path.isdir(registered):
            with pytest.raises(Exception, match="not a regular file"):
                Replay.of(parse_log(_log(registered)))
            continue
        (p,) = Replay.of(parse_log(_log(registered))).pools
        assert (p.path, p.source) == (registered, source)
        assert p.source_size == (4096 if source else 0)
        assert p.resolved == os.path.abspath(registered)


def test_a_missing_file_registered_twice_with_another_or_a_base_image_reads_as_ever(
    tmp_path: Path,
) -> None:
    gone, other = str(tmp_path / "gone.bin"), str(tmp_path / "other.bin")
    twice = _log(gone).replace("|STORE", f"|REGISTER_FILE;{gone};0x20000000;0x1000;0x0|STORE")
    (p,) = Replay.of(parse_log(twice)).pools
    assert p.source is None and [m.base for m in p.mappings] == [BASE, 0x20000000]
    two = _log(gone).replace("|STORE", f"|REGISTER_FILE;{other};0x20000000;0x1000;0x0|STORE")
    assert [(p.path, p.source) for p in Replay.of(parse_log(two)).pools] == [
        (gone, None),
        (other, None),
    ]
    Path(gone).write_bytes(b"\x01" * 4096)
    (p,) = Replay.of(parse_log(twice)).pools
    assert p.source == gone and p.source_size == 4096
    base = tmp_path / "base.bin"
    base.write_bytes(b"\x02" * 4096)
    missing = str(tmp_path / "missing.bin")
    (p,) = Replay.of(parse_log(_log(missing)), base_images={missing: str(base)}).pools
    assert p.source == str(base) and p.source_size == 4096


def test_a_log_with_no_start_names_its_first_record_of_several_lines() -> None:
    from pmemsim.pmlog import LogFormatError

    with pytest.raises(LogFormatError, match="no START") as info:
        parse_log("  FLUSH;0x0;0x40\nFENCE|\nSTORE;0x8;0x1;0x8|STOP\n")
    err = info.value
    assert (err.record, err.offset, err.line, err.column) == (0, 2, 1, 3)
    assert err.text == "FLUSH;0x0;0x40"


@pytest.mark.parametrize(
    "registration",
    [
        f"REGISTER_FILE;/nonexistent-pmemsim-test/p.bin;0x{BASE:x};0x1000;0x0",  # as written
        f"REGISTER_FILE;/nonexistent-pmemsim-test/p.bin;0X{BASE:X};0x01000;0x0",
    ],
)
def test_registrations_and_markers_among_the_operations_replay_as_on_the_simulator(
    registration: str,
) -> None:
    # The lean replay passes over a registration the log was read with without reading it
    # again; a marker whose name starts like one is a marker.
    from pmemsim.pmlog import FunctionChecker, check_log

    text = "|".join(
        [
            "START",
            registration,
            f"STORE;0x{BASE:x};0x1;0x8",
            "REGISTER_FILE_X.BEGIN",
            registration,
            f"STORE;0x{BASE + 64:x};0x2;0x8",
            f"FLUSH;0x{BASE:x};0x80",
            "REGISTER_FILE_X.END",
            "FENCE",
            f"STORE;0x{BASE + 128:x};0x3;0x8",
            "STOP",
        ]
    )
    seen: list[tuple[bytes, str]] = []

    def note(image: memoryview) -> bool:
        seen.append((bytes(image[:192]), os.environ.get("PMREORDER_MARKERS", "")))
        return image[64] != 2 or image[0] == 1

    results = []
    for simulator in (False, True):
        seen.clear()
        r = check_log(
            Replay.of(parse_log(text)), FunctionChecker(note, "n"), simulator=simulator
        ).as_dict()
        r.pop("seconds")
        results.append((r, list(seen)))
    assert results[0] == results[1]
    r, images = results[0]
    assert r["operations"] == 5 and r["verdict"] == "inconsistent"
    assert {m for _, m in images} == {"REGISTER_FILE_X.BEGIN|REGISTER_FILE_X.END"}


def test_a_strategy_by_name_does_not_ask_the_strategy_abc() -> None:
    # (Asked about a str, the ABC walks every strategy class once per process: 81,000
    # instructions of a tiny log's check.) In a fresh process: the ABC's caches are its.
    import subprocess
    import sys

    code = (
        "import abc\n"
        "from pmemsim.explore.strategy import Strategy, strategy_named\n"
        "s = strategy_named('accumulative')\n"
        "assert strategy_named(s) is s\n"
        "print(any(r() is str for r in abc._get_dump(Strategy)[2]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-B", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False"]


def test_a_python_checkers_time_limit_gives_the_alarm_handler_back() -> None:
    import signal

    from pmemsim.pmlog import FunctionChecker, check_log

    text = _log("/nonexistent-pmemsim-test/p.bin")
    during: list[object] = []

    def note(image: memoryview) -> bool:
        during.append(signal.getsignal(signal.SIGALRM))
        return True

    def mine(signum: int, frame: object) -> None:
        """The caller's own."""

    before = signal.getsignal(signal.SIGALRM)
    try:
        for handler in (mine, signal.SIG_IGN, signal.SIG_DFL):
            signal.signal(signal.SIGALRM, handler)
            during.clear()
            check_log(Replay.of(parse_log(text)), FunctionChecker(note, "n"))
            assert during and all(callable(h) and h is not handler for h in during)
            assert signal.getsignal(signal.SIGALRM) == handler
    finally:
        signal.signal(signal.SIGALRM, before)


def test_a_short_texts_operations_are_kept_split_and_a_long_texts_are_not() -> None:
    from pmemsim.pmlog.grammar import _KEEP_TEXTS, _chunks, _texts

    text = _log("/nonexistent-pmemsim-test/p.bin").replace("|FENCE", "\n|FENCE")

    def split_again(log: object) -> list[list[str]]:
        lay = log.layout  # type: ignore[attr-defined]
        return list(_texts(_chunks(log.pieces), lay.start.n, lay.stop.n))  # type: ignore[attr-defined]

    short = parse_log(text)
    assert short._texts is not None and list(short.iter_texts()) == split_again(short)
    assert [t for c in short.iter_texts() for t in c][-2:] == [f"FLUSH;0x{BASE:x};0x40", "FENCE"]
    padded = text.replace("START", " " * _KEEP_TEXTS + "START")
    assert parse_log(padded)._texts is None
    # (A file's: tests/test_pmlog_read_kept.py.)
