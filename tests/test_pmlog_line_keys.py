"""A line's key contribution (pmemsim.pmlog.images._Buffer.line_key) is 0 exactly when the
line holds the pool's initial content, whether that content is zeros with no file (the
anonymous pool's way, compared without a call) or a file's bytes, whole lines or the short
line at a pool's end; any other content keys the same in both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pmemsim.pmlog.images import _Buffer

SIZE = 4096 + 100  # (a short last line: 36 bytes at 4160)


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[list[_Buffer]]:
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(SIZE))
    got = [_Buffer(0, SIZE, None, 0, None), _Buffer(0, SIZE, str(zeros), SIZE, None)]
    yield got
    for b in got:
        b.close()


@pytest.mark.parametrize(("offset", "size"), [(0, 64), (4032, 64), (4160, 36)])
def test_zeros_key_nothing_and_anything_else_keys_alike(
    pools: list[_Buffer], offset: int, size: int
) -> None:
    anonymous, filed = pools
    assert anonymous.initial_map is None and filed.initial_map is not None
    for b in pools:
        assert b.line_key(offset, bytes(size)) == 0
    for at in (0, size // 2, size - 1):
        content = bytearray(size)
        content[at] = 1
        key = anonymous.line_key(offset, bytes(content))
        assert key != 0
        assert key == filed.line_key(offset, bytes(content))
