"""read_log keeps a short file's operations' texts, as parse_log keeps a short text's: the
replay (check-log's) then neither reads the file nor splits its text again. A long file, or
what is not a regular file, is read again whenever it is needed, as ever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pmemsim.pmlog import parse_log, read_log
from pmemsim.pmlog.grammar import _KEEP_TEXTS, Log, _file

BASE = 0x10000000


def _log(pool: str, pad: int = 0) -> str:
    """A one-epoch log, ``pad`` spaces before its START (blanks between records are
    allowed)."""
    return (
        " " * pad + f"START|REGISTER_FILE;{pool};0x{BASE:x};0x1000;0x0|"
        f"STORE;0x{BASE:x};0x1;0x8|\nFLUSH;0x{BASE:x};0x40|FENCE|STOP\n"
    )


def _flat(log: Log) -> list[str]:
    return [t for chunk in log.iter_texts() for t in chunk]


def test_a_short_files_texts_are_kept_as_read_and_the_file_is_not_read_again(
    tmp_path: Path,
) -> None:
    text = _log(str(tmp_path / "pool-é.bin"))
    path = tmp_path / "short.log"
    # The longest file kept: _KEEP_TEXTS bytes (its multi-byte character counts its bytes).
    padded = " " * (_KEEP_TEXTS - len(text.encode())) + text
    path.write_text(padded, encoding="utf-8")
    assert path.stat().st_size == _KEEP_TEXTS
    log = read_log(str(path))
    assert log._texts is not None
    expected = _flat(parse_log(padded))
    assert expected[-3:] == [f"STORE;0x{BASE:x};0x1;0x8", f"FLUSH;0x{BASE:x};0x40", "FENCE"]
    assert [op.index for op in log.iter_operations()] == [2, 3, 4]  # (these read the file)
    path.unlink()  # (read again, it would be an error)
    assert _flat(log) == expected


def test_a_long_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    text = _log(str(tmp_path / "pool.bin"))
    path.write_text(" " * (_KEEP_TEXTS + 1 - len(text)) + text)
    assert path.stat().st_size == _KEEP_TEXTS + 1
    log = read_log(str(path))
    assert log._texts is None
    assert _flat(log) == _flat(parse_log(text))
    path.unlink()
    with pytest.raises(Exception, match="cannot read the log"):
        _flat(log)


def test_a_pipes_size_says_nothing_of_its_length(tmp_path: Path) -> None:
    # A FIFO's size (0) says nothing of its text's length: a log read from one is read again.
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    assert _file(str(fifo))[1] is False  # (stat only: nothing opens the FIFO)
    path = tmp_path / "short.log"
    path.write_text(_log(str(tmp_path / "pool.bin")))
    assert _file(str(path))[1] is True
