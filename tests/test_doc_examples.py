"""Pages whose examples print what the page shows under them: every one runs here."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("page, blocks", [("persistency.md", 10), ("layout.md", 3)])
def test_every_example_prints_what_the_page_shows(page: str, blocks: int) -> None:
    doc = (DOCS / page).read_text()
    # A python block, then (optionally) a plain block with what it prints.
    examples = re.findall(r"```python\n(.*?)```(?:\n\n```\n(.*?)```)?", doc, re.S)
    assert len(examples) >= blocks
    namespace: dict[str, Any] = {}
    for code, shown in examples:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, page, "exec"), namespace)
        assert out.getvalue() == shown, code
