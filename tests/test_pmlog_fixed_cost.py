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
