"""docs/persistency.md: every example runs and prints what the page shows under it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

DOC = (Path(__file__).resolve().parent.parent / "docs" / "persistency.md").read_text()


def test_every_example_prints_what_the_page_shows() -> None:
    # A python block, then (optionally) a plain block with what it prints.
    blocks = re.findall(r"```python\n(.*?)```(?:\n\n```\n(.*?)```)?", DOC, re.S)
    assert len(blocks) >= 10
    namespace: dict[str, Any] = {}
    for code, shown in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "persistency.md", "exec"), namespace)
        assert out.getvalue() == shown, code
